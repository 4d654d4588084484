r"""Cost of a train step with the meta weighting against a plain SynCon step.

Builds the real jitted train step (syncon_jax/train.py) of configs/digits.py (ResNet-18 CIFAR stem
at width 8, 16 px, batch 128 real + 128 synthetic, 2 views: the demo) for each variant, on a
random uint8 batch of the right shapes, and times it: compile time once, then the median of
--repeats timed calls (each ended by block_until_ready), the variants interleaved round by round
so that a load change on a shared machine hits them alike. `meta_every=n` variants time n
consecutive steps per call (one meta step, n - 1 plain ones) and report the mean per step.

  python benchmarks/meta_step_cost.py                       # the demo's step; ~10 min on 2 cores
  python benchmarks/meta_step_cost.py --batch_size=32 --repeats=3 --out=/tmp/meta_cost.json

Writes benchmarks/results/meta_step_cost.json (or --out) and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)  # configs/ is imported from the repository root
from syncon_jax.platform import cpu_model  # noqa: E402

DEFAULT_OUT = os.path.join(os.path.dirname(__file__), "results", "meta_step_cost.json")

# name -> (weighting, objective overrides, steps per timed call)
VARIANTS = {
  "fixed": ("fixed", {}, 1),
  "meta": ("meta", {}, 1),
  "meta_unroll2": ("meta", {"meta_unroll": 2}, 1),
  "meta_ema": ("meta", {"meta_params": "ema"}, 1),
  "meta_hypernet": ("meta_hypernet", {}, 1),
  "meta_every4": ("meta", {"meta_every": 4}, 4),
}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--batch_size", type=int, default=None, help="default: the config's")
  parser.add_argument("--synthetic_per_real", type=int, default=None)
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--variants", default=",".join(VARIANTS))
  parser.add_argument("--out", default=DEFAULT_OUT)
  args = parser.parse_args()

  import jax
  from train_step import compiled_step, random_batch

  from configs import digits

  names = args.variants.split(",")
  unknown = sorted(set(names) - set(VARIANTS))
  if unknown:
    parser.error(f"unknown variants {unknown}; valid: {sorted(VARIANTS)}")

  def config_for(name):
    weighting, overrides, _ = VARIANTS[name]
    c = digits.get_config(f"weighting={weighting}")
    if args.batch_size:
      c.batch_size = args.batch_size
    if args.synthetic_per_real:
      c.data.synthetic_per_real = args.synthetic_per_real
    for k, v in overrides.items():
      c.objective.syncon[k] = v
    return c

  base = config_for(names[0])
  b, s, size = base.batch_size, base.data.synthetic_per_real, base.data.image_size
  batch = random_batch(base, 10)

  runs = {}
  for name in names:
    compiled, state, compile_s = compiled_step(config_for(name), 10, batch)
    runs[name] = {"compiled": compiled, "state": state, "compile_s": compile_s, "times": []}
    print(f"{name}: compiled in {compile_s:.1f}s", flush=True)

  for _ in range(args.repeats):
    for name in names:
      r = runs[name]
      per_call = VARIANTS[name][2]
      t0 = time.perf_counter()
      for _ in range(per_call):
        r["state"], m = r["compiled"](r["state"], batch)
      jax.block_until_ready(m)
      r["times"].append((time.perf_counter() - t0) / per_call)
      r.setdefault("load", []).append(os.getloadavg()[0])

  plain = statistics.median(runs[names[0]]["times"])
  results = []
  for name in names:
    r = runs[name]
    med = statistics.median(r["times"])
    results.append(
      {
        "variant": name,
        "weighting": VARIANTS[name][0],
        "overrides": VARIANTS[name][1],
        "compile_s": r["compile_s"],
        "step_s_median": med,
        "step_s_all": r["times"],
        "ratio_to_first": med / plain,
        "load_1min": r["load"],
      }
    )
  out = {
    "machine": {
      "platform": jax.default_backend(),
      "devices": [str(d) for d in jax.devices()],
      "cpu": cpu_model(),
      "cpu_count": os.cpu_count(),
      "jax": jax.__version__,
    },
    "config": {
      "model": base.model.name,
      "width": base.model.width,
      "batch_size": b,
      "synthetic_per_real": s,
      "n_views": base.objective.n_views,
      "image_size": size,
      "repeats": args.repeats,
    },
    "results": results,
  }
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  with open(args.out, "w") as f:
    json.dump(out, f, indent=2)
  print(f"\n{base.model.name} width {base.model.width}, batch {b} + {b * s} synthetic, {size} px")
  print("| variant | compile s | step s (median) | x first |")
  print("|---|---|---|---|")
  for r in results:
    print(
      f"| {r['variant']} | {r['compile_s']:.1f} | {r['step_s_median']:.3f} | "
      f"{r['ratio_to_first']:.2f} |"
    )
  print(f"wrote {args.out}")


if __name__ == "__main__":
  main()
