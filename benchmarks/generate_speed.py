r"""Seconds per image of the synthetic-set generator on the tiny random pipeline (CPU).

What it measures is the tool's own cost around a model (prompting, the diffusers call, PNG
encoding, atomic writes, metadata lines) plus the tiny UNet, so the figures bound the overhead;
a real Stable Diffusion costs seconds per image on a GPU (README "Making the synthetic set").
For each setting, a fresh folder gets --classes x --per_class images through
tools.generate.run.generate; the time excludes loading the pipeline and the first call.

  python benchmarks/generate_speed.py                   # ~1-2 minutes on 2 CPU cores
  python benchmarks/generate_speed.py --per_class=4 --out=/tmp/generate_speed.json

Writes benchmarks/results/generate_speed.json (or --out) and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from syncon_jax.platform import cpu_model  # noqa: E402

DEFAULT_OUT = os.path.join(os.path.dirname(__file__), "results", "generate_speed.json")


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--classes", type=int, default=3)
  parser.add_argument("--per_class", type=int, default=8)
  parser.add_argument(
    "--settings",
    default="16:2:1,16:2:4,64:25:1,64:25:4",
    help="image_size:steps:batch_size, comma separated",
  )
  parser.add_argument("--torch_threads", type=int, default=1)
  parser.add_argument("--out", default=DEFAULT_OUT)
  args = parser.parse_args()

  import torch

  from configs import digits
  from syncon_jax.tools.generate import backends, run, tiny

  rows = []
  with tempfile.TemporaryDirectory() as tmp:
    pipe = tiny.save_pipeline(os.path.join(tmp, "pipe"))
    names = tuple(str(d) for d in range(args.classes))
    for setting in args.settings.split(","):
      size, steps, batch = (int(x) for x in setting.split(":"))
      backend = backends.DiffusersBackend(
        pipe,
        guidance_scale=2.0,
        num_inference_steps=steps,
        image_size=size,
        batch_size=batch,
        torch_threads=args.torch_threads,
      )
      backend.generate("warm-up", [0] * batch, ["warm-up"] * batch)
      options = run.Options(
        out=os.path.join(tmp, f"out_{setting.replace(':', '_')}"),
        model=pipe,
        classes=names,
        images_per_class=args.per_class,
        batch_size=batch,
        log_every_s=1e9,
      )
      load = os.getloadavg()[0]
      start = time.perf_counter()
      run.generate(digits.get_config().data, options, backend=backend)
      seconds = time.perf_counter() - start
      n = args.classes * args.per_class
      rows.append(
        {
          "image_size": size,
          "steps": steps,
          "batch_size": batch,
          "images": n,
          "seconds": seconds,
          "seconds_per_image": seconds / n,
          "load_average_1min": load,
        }
      )
      print(f"{setting}: {seconds / n:.3f} s/image", flush=True)

  result = {
    "machine": {
      "cpu": cpu_model(),
      "cores": os.cpu_count(),
      "torch": torch.__version__,
      "torch_threads": args.torch_threads,
    },
    "pipeline": "tools/generate/tiny.py (random weights, UNet 8-16 channels, DDIM)",
    "rows": rows,
  }
  os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
  with open(args.out, "w") as f:
    json.dump(result, f, indent=1)
  print("\n| image px | steps | batch | s / image | load avg |")
  print("|---|---|---|---|---|")
  for r in rows:
    print(
      f"| {r['image_size']} | {r['steps']} | {r['batch_size']} | "
      f"{r['seconds_per_image']:.3f} | {r['load_average_1min']:.1f} |"
    )


if __name__ == "__main__":
  main()
