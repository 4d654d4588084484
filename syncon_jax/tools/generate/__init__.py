r"""Generates the synthetic support set: `python -m syncon_jax.tools.generate`.

  python -m syncon_jax.tools.generate --config=configs/flowers102.py --out=/data/flowers_sd \
    --images_per_class=100 --backend=diffusers --model=stabilityai/sd-turbo

writes <out>/<class>/<prompt id>_<index>.png, one metadata.jsonl line per image (file, class,
prompt, prompt_id, index, seed, backend, model, guidance_scale, steps, image_size, and with
--filter_model: filter_prob, kept) and summary.json, for `data.synthetic_dir`. Install with
`pip install -e '.[generate]'`.

  classes.py   the class names the trainer matches folders against (config or --classes_file)
  prompts.py   templates per data set, descriptions, seeds, the plan
  backends.py  diffusers (local pipelines) and openai (images API over HTTPS)
  filter.py    the CLIP zero-shot filter
  writer.py    atomic image writes, metadata.jsonl
  run.py       the loop: Options, generate()
  tiny.py      tiny random pipeline and CLIP for tests and benchmarks
"""
