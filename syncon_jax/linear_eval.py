r"""The evaluation of a pretrained encoder, read from the run's orbax checkpoints.

  python -m syncon_jax.linear_eval --config=configs/digits.py --workdir=runs/demo [--step=N]

Restores only the encoder, extracts frozen features of the real train and test splits without
augmentation, and runs every protocol of eval.protocols (PROTOCOLS below) on three
representations: the encoder, raw pixels, and a randomly initialised encoder of the same
architecture, which shows what pretraining bought. Writes

  <workdir>/eval.json         {protocol: {"encoder": top1, "raw_pixels": top1,
                                "random_encoder": top1, ...details}, "health": ..., "meta": ...}
  <workdir>/eval_report.md    one page gathering them, with the plots:
  <workdir>/eval_map.png      a 2-D map (t-SNE) of the encoder's test features, synthetic marked
  <workdir>/eval_training.png the online probe and health metrics logged during pretraining
  <workdir>/linear_eval.json  the few-label probe's numbers, as before (compatibility)

`evaluate` alone (what tools/experiment calls per run) runs only the few-label probe and writes
linear_eval.json.
In the few-shot regime (data.real_per_class) the few-label probe is fitted on the run's k
labelled images per class and also scored on the validation pool (`pool_top1`).
"""

import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags, logging
from flax import nnx
from ml_collections import config_flags

from syncon_jax import augment, checkpoint, cli, data, platform, validate
from syncon_jax.data import folders
from syncon_jax.errors import ConfigError, exit_on_user_error
from syncon_jax.evaluators import embedding_map, finetune, health, linear_probe, protocols, report
from syncon_jax.train import check_workdir_compatible, init_model, preprocess


def _define_flags() -> None:
  # Defined only when run as a program, so that other entry points (tools/experiment.py) can
  # import evaluate() beside their own --config and --workdir.
  config_flags.DEFINE_config_file(
    "config", "configs/digits.py", f"The training run's config. {cli.CONFIG_HELP}"
  )
  flags.DEFINE_string("workdir", "runs/demo", "The training run's workdir.")
  flags.DEFINE_integer("step", None, "Checkpoint step to evaluate (default: the latest).")
  flags.DEFINE_bool(
    "dry_run",
    False,
    "Resolve and check the config and the workdir's checkpoints, print the resolved config and "
    "exit 0 without loading data; exit 2 on a mistake.",
  )


@nnx.jit
def _encode(model, x):
  return model.encode(x, train=False)


def extract_features(model, images, config, n: int | None = None) -> np.ndarray:
  """Frozen encoder features, no augmentation. images: [N, H, W, 3] uint8 (or anything indexable
  by an int array, such as lazily decoded images, with n = N) -> [N, feat] float32."""
  bs = config.eval.batch_size
  n = len(images) if n is None else n
  out = []
  for i in range(0, n, bs):
    rows = np.asarray(images[np.arange(i, min(i + bs, n))])
    chunk = augment.ops.center_crop(rows, config.data.image_size)
    # Pad the last chunk to the full batch so the encoder compiles once.
    padded = np.concatenate([chunk, np.zeros((bs - len(chunk), *chunk.shape[1:]), chunk.dtype)])
    x = preprocess(jnp.asarray(padded, jnp.float32) / 255.0, config)
    out.append(np.asarray(_encode(model, x))[: len(chunk)])
  return np.concatenate(out).astype(np.float32)


def raw_pixels(images: np.ndarray, size: int = 0) -> np.ndarray:
  """The pixel baseline's features. images: [N, H, W, C] uint8 -> [N, H*W*C] float32 in [0, 1];
  size > 0 first resizes to [size, size] (antialiased), so that all-label probes on large photos
  stay within memory."""
  x = np.asarray(images, np.float32) / 255.0
  if size and x.shape[1:3] != (size, size):
    x = np.asarray(jax.image.resize(x, (len(x), size, size, x.shape[-1]), "linear"))
  return x.reshape(len(x), -1)


def restore_encoder(model, workdir: str, step: int | None, config) -> int:
  """Loads the checkpointed encoder into model.encoder in place; returns the step restored."""
  # Another model's shapes would fail deep inside orbax's async reads; name the key instead.
  check_workdir_compatible(workdir, config, encoder_only=True)
  ckpt = checkpoint.Checkpointer(workdir, keep=config.keep_checkpoints, every_steps=1)
  step = ckpt.latest_step() if step is None else step
  if step is None:
    raise ConfigError(f"No checkpoint in {ckpt.directory}: train first with syncon_jax.main.")
  params, state = nnx.state(model.encoder, nnx.Param), nnx.state(model.encoder, nnx.Not(nnx.Param))
  try:
    params, state = ckpt.restore_encoder(step, params, state)
  except FileNotFoundError as e:
    raise ConfigError(f"No checkpoint at step {step} in {ckpt.directory}: {e}") from e
  nnx.update(model.encoder, params, state)
  ckpt.close()
  return step


def evaluate(config, workdir: str, step: int | None = None) -> dict:
  """Runs the three probes and writes <workdir>/linear_eval.json; returns its contents."""
  # Before the data loads (seconds to minutes): a workdir without a checkpoint is a mistake.
  validate.check_workdir(workdir, must_hold_checkpoints=True)
  train, pool, test, class_names = data.load_splits(config)
  ec = config.eval
  # In the few-shot regime `train` holds only the k images per class that pretraining saw, so the
  # probe is fitted on those same labelled images (eval.labels_per_class 0 or >= k: all of them).
  labelled = linear_probe.few_label_indices(train.labels, ec.labels_per_class, ec.probe_seed)
  # Only the labelled train images are ever read: cheap for lazily decoded data sets too.
  train_images, test_images = train.images[labelled], test.images[np.arange(len(test.labels))]
  pool_images = pool.images[np.arange(len(pool.labels))] if len(pool.labels) else None

  def probe(features) -> dict:
    """features: images [N, H, W, 3] uint8 -> [N, F]; fits on labelled train, scores test (and
    the validation pool, in the few-shot regime)."""
    extra = None
    if pool_images is not None:
      extra = {"pool": (features(pool_images), pool.labels)}
    return linear_probe.linear_probe(
      features(train_images),
      train.labels[labelled],
      features(test_images),
      test.labels,
      l2_grid=tuple(ec.l2_grid),
      heldout_fraction=ec.heldout_fraction,
      seed=ec.probe_seed,
      num_classes=len(class_names),
      extra_sets=extra,
    )

  random_model = nnx.merge(*init_model(config))
  random_result = probe(lambda images: extract_features(random_model, images, config))
  model = nnx.merge(*init_model(config))
  restored = restore_encoder(model, workdir, step, config)
  result = probe(lambda images: extract_features(model, images, config))
  raw_result = probe(raw_pixels)

  out = legacy_json(
    result, raw_result, random_result, class_names, ec, restored, len(labelled), len(test.labels)
  )
  out["real_per_class"] = int(config.data.get("real_per_class") or 0)
  if pool_images is not None:
    # The validation pool: the few-shot regime's measure of utility and hyperparameter choice.
    out["pool_top1"] = result["pool"]["top1"]
    out["pool_per_class_top1"] = dict(
      zip(class_names, result["pool"]["per_class_top1"], strict=True)
    )
    out["raw_pixels_pool_top1"] = raw_result["pool"]["top1"]
    out["random_encoder_pool_top1"] = random_result["pool"]["top1"]
    out["num_pool"] = int(len(pool.labels))
  if jax.process_index() == 0:
    with open(os.path.join(workdir, "linear_eval.json"), "w") as f:
      json.dump(out, f, indent=2)
  return out


def legacy_json(
  result, raw_result, random_result, class_names, ec, step, num_labelled, num_test
) -> dict:
  """The linear_eval.json contract (DESIGN.md) from the three few-label probe results."""
  return {
    "top1": result["top1"],
    # Recall on each real test class: where a synthetic class helps or hurts shows up here.
    "per_class_top1": dict(zip(class_names, result["per_class_top1"], strict=True)),
    "raw_pixels_top1": raw_result["top1"],
    "random_encoder_top1": random_result["top1"],
    "labels_per_class": int(ec.labels_per_class),
    "step": int(step),
    "num_labelled": int(num_labelled),
    "num_test": int(num_test),
    "num_classes": len(class_names),
    "l2": {"encoder": result["l2"], "raw_pixels": raw_result["l2"], "random": random_result["l2"]},
  }


def _subsample(n: int, most: int, seed: int) -> np.ndarray:
  """Sorted indices of at most `most` of n rows (all of them when n <= most)."""
  if n <= most:
    return np.arange(n)
  return np.sort(np.random.default_rng(seed).choice(n, size=most, replace=False))


def _augmented_pair(images: np.ndarray, config) -> tuple[np.ndarray, np.ndarray]:
  """Two augmented views (config.augment) of each image, as uint8 [N, S, S, 3] (S =
  data.image_size), for the alignment metric's positive pairs."""
  keys = jax.random.split(jax.random.key(config.eval.health_seed), (2, len(images)))
  # One jitted program for both views: op by op, the augmentation compiles each of its dozens of
  # ops on its own (6 s of a runlocal evaluation).
  to_uint8 = jax.jit(
    lambda k, x: jnp.round(
      255.0 * augment.augment_batch(k, x, config.augment, out_size=config.data.image_size)
    ).astype(jnp.uint8)
  )
  views = [np.asarray(to_uint8(k, jnp.asarray(images))) for k in keys]
  return views[0], views[1]


def _health(
  featurise, feats, test_images, test_labels, train_labels, synthetic, config, num_classes
) -> dict:
  """Representation health of each representation on (a subsample of) the test features."""
  ec = config.eval
  idx = _subsample(len(test_labels), ec.health_max_samples, ec.health_seed)
  view_a, view_b = _augmented_pair(np.asarray(test_images[idx]), config)
  out = {}
  for rep, f in feats.items():
    x = f.test[idx]
    row = {
      "rankme": float(health.rankme(x)),
      "rankme_max": int(min(x.shape)),
      "feature_std": float(health.normalized_std(x)),
      "feature_std_healthy": float(1 / np.sqrt(x.shape[1])),
      "alignment": float(health.alignment(featurise[rep](view_a), featurise[rep](view_b))),
      "uniformity": float(health.uniformity(x)),
    }
    if synthetic is not None:
      syn = featurise[rep](synthetic.images)
      row.update(
        health.real_synthetic_similarity(f.train, train_labels, syn, synthetic.labels, num_classes)
      )
    out[rep] = row
  return out


def _load_synthetic(config, class_names):
  """A subsample of the synthetic support set (images, labels) for the health statistics and the
  map, or None without one."""
  path = config.data.get("synthetic_dir")
  if not path or not os.path.isdir(path):
    return None
  syn = folders.load_synthetic(path, class_names, **folders.decode_options(config.data))
  idx = _subsample(len(syn.labels), config.eval.health_max_samples, config.eval.health_seed)
  return folders.SyntheticSet(
    images=np.asarray(syn.images[idx]),
    labels=np.asarray(syn.labels[idx]),
    files=[syn.files[i] for i in idx],
    prompt_ids=np.asarray(syn.prompt_ids[idx]),
    missing_classes=syn.missing_classes,
  )


def evaluate_all(config, workdir: str, step: int | None = None) -> dict:
  """Every protocol of eval.protocols, the health metrics, the map and the report; writes
  eval.json, eval_report.md, eval_map.png, eval_training.png and linear_eval.json into workdir;
  returns eval.json's contents."""
  ec = config.eval
  unknown = [p for p in ec.protocols if p not in protocols.PROTOCOLS]
  if unknown:
    raise ConfigError(f"Unknown eval.protocols {unknown}; valid: {sorted(protocols.PROTOCOLS)}")
  # Before the data loads (seconds to minutes): a workdir without a checkpoint is a mistake.
  validate.check_workdir(workdir, must_hold_checkpoints=True)
  train, test, class_names = data.load_real(config.data)
  n_train, n_test = len(train.labels), len(test.labels)
  model = nnx.merge(*init_model(config))
  restored = restore_encoder(model, workdir, step, config)
  random_model = nnx.merge(*init_model(config))
  pixel_size = int(ec.raw_pixels_size)
  featurise = {
    "encoder": lambda im: extract_features(model, im, config, len(im)),
    "raw_pixels": lambda im: raw_pixels(np.asarray(im), pixel_size),
    "random_encoder": lambda im: extract_features(random_model, im, config, len(im)),
  }

  def all_rows(images, n, f):
    # In chunks, so lazily decoded data sets are never held whole.
    bs = int(ec.batch_size)
    return np.concatenate([f(images[np.arange(i, min(i + bs, n))]) for i in range(0, n, bs)])

  t0 = time.time()
  feats = {
    rep: protocols.Features(all_rows(train.images, n_train, f), all_rows(test.images, n_test, f))
    for rep, f in featurise.items()
  }
  logging.info("Features of %d + %d images took %.1fs.", n_train, n_test, time.time() - t0)

  def run_finetune(rep: str) -> dict:
    if rep == "raw_pixels":
      size = config.data.image_size
      shape = (size, size) if ec.finetune_augment else train.images[np.arange(1)].shape[1:3]
      encoder, feat_dim = finetune.PixelEncoder(int(np.prod(shape)) * 3), int(np.prod(shape)) * 3
    else:
      source = model if rep == "encoder" else random_model
      encoder, feat_dim = nnx.clone(source.encoder), source.feat_dim
    net = finetune.Classifier(encoder, feat_dim, len(class_names), rngs=nnx.Rngs(ec.finetune_seed))
    return finetune.finetune(
      net, steps, train.images, train.labels, test.images, test.labels, config, len(class_names)
    )

  steps = finetune.make_steps(config, preprocess)
  ctx = protocols.Context(config, feats, train.labels, test.labels, list(class_names), run_finetune)
  results = {}
  for name in ec.protocols:
    t0 = time.time()
    results.update(protocols.PROTOCOLS[name](ctx))
    logging.info("Protocol %s took %.1fs.", name, time.time() - t0)
  few = results.get("linear_few_label") or protocols.linear_few_label(ctx)["linear_few_label"]
  few_results = few.pop("_results")
  synthetic = _load_synthetic(config, class_names)
  results["health"] = _health(
    featurise, feats, test.images, test.labels, train.labels, synthetic, config, len(class_names)
  )
  results["meta"] = {
    "step": int(restored),
    "data": config.data.name,
    "model": config.model.name,
    "objective": config.objective.name,
    "num_train": n_train,
    "num_test": n_test,
    "num_classes": len(class_names),
    "num_synthetic_in_health": 0 if synthetic is None else len(synthetic.labels),
  }
  if jax.process_index() == 0:
    legacy = legacy_json(
      few_results["encoder"],
      few_results["raw_pixels"],
      few_results["random_encoder"],
      class_names,
      ec,
      restored,
      few["num_labelled"],
      n_test,
    )
    with open(os.path.join(workdir, "linear_eval.json"), "w") as f:
      json.dump(legacy, f, indent=2)
    images = {}
    idx = _subsample(n_test, ec.map_max_points, ec.health_seed)
    embedding_map.save_map(
      os.path.join(workdir, "eval_map.png"),
      feats["encoder"].test[idx],
      test.labels[idx],
      class_names,
      synthetic=None if synthetic is None else featurise["encoder"](synthetic.images),
      synthetic_labels=None if synthetic is None else synthetic.labels,
      method=ec.map_method,
      seed=ec.health_seed,
      title=f"{ec.map_method} of the encoder's features, step {restored}",
    )
    images["2-D map of the test features (dots real, crosses synthetic)"] = "eval_map.png"
    training_png = os.path.join(workdir, "eval_training.png")
    if report.save_training_plot(os.path.join(workdir, "metrics.jsonl"), training_png):
      images["Logged during pretraining (online probe, health)"] = "eval_training.png"
    with open(os.path.join(workdir, "eval.json"), "w") as f:
      json.dump(results, f, indent=2)
    with open(os.path.join(workdir, "eval_report.md"), "w") as f:
      f.write(report.markdown(results, workdir=workdir, images=images))
  return results


def main(argv) -> None:
  if len(argv) > 1:
    cli.fail(f"unexpected arguments {argv[1:]}: flags take the form --name=value (see --helpshort)")
  platform.start_jax_program()
  if flags.FLAGS.dry_run:
    with exit_on_user_error():
      validate.check_config(flags.FLAGS.config, workdir=flags.FLAGS.workdir, for_eval=True)
    cli.print_config(flags.FLAGS.config)
    return
  with exit_on_user_error():
    out = evaluate_all(flags.FLAGS.config, flags.FLAGS.workdir, flags.FLAGS.step)
  print(f"Evaluation at step {out['meta']['step']}: top-1 encoder | raw pixels | random encoder")
  for name, entry in out.items():
    if name not in ("health", "meta"):
      print(
        f"  {name:18s} {entry['encoder']:.4f} | {entry['raw_pixels']:.4f} | "
        f"{entry['random_encoder']:.4f}"
      )
  print(f"-> {flags.FLAGS.workdir}/eval.json, eval_report.md, linear_eval.json")


if __name__ == "__main__":
  cli.run(main, _define_flags)
