r"""Every objective's (and weighting scheme's) short `:runlocal` loss curve on the digits, recorded
or compared: the check that a refactor of the trainer or the objective contract changes no number.

  python benchmarks/loss_curves.py --out=benchmarks/results/loss_curves.json     # record
  python benchmarks/loss_curves.py --reference=benchmarks/results/loss_curves.json  # compare

Each case trains `--steps` steps (log every step, no checkpoint until the end) in a temporary
workdir, on rendered synthetic digits, in this process, one after another. A comparison prints
each case's largest relative difference of the loss over the steps and exits 1 when one is over
`--rtol` (or a case is missing). `--only=byol,syncon:learned` runs some cases.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from benchmarks.machine import machine  # noqa: E402

# objective or objective:weighting. byol_nn with its default (queue) neighbours.
CASES = (
  "supcon",
  "supcon_syn",
  "syncon:auto",
  "syncon:fixed",
  "syncon:learned",
  "syncon:hypernet",
  "syncon:proto_sim",
  "syncon:meta",
  "syncon:meta_hypernet",
  "simclr",
  "stablerep",
  "triplet",
  "supervised",
  "supervised_syn",
  "moco",
  "byol",
  "byol_nn",
  "rotation",
  "align_uniform",
)


def run_case(case: str, synthetic_dir: str, steps: int) -> dict:
  from configs import digits
  from syncon_jax import train

  objective, _, weighting = case.partition(":")
  arg = f"objective={objective},runlocal" + (f",weighting={weighting}" if weighting else "")
  config = digits.get_config(arg)
  config.data.synthetic_dir = synthetic_dir
  config.total_steps = steps
  config.log_every_steps = 1
  config.checkpoint_every_steps = steps
  with tempfile.TemporaryDirectory() as workdir:
    train.train_and_evaluate(config, workdir)
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
      rows = [json.loads(line) for line in f]
  return {"loss": [row["loss"] for row in rows], "steps": [row["step"] for row in rows]}


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--out", default=None)
  parser.add_argument("--reference", default=None)
  parser.add_argument("--steps", type=int, default=10)
  parser.add_argument("--rtol", type=float, default=1e-5)
  parser.add_argument("--only", default="", help="comma-separated cases (default: all)")
  args = parser.parse_args()
  os.environ.setdefault("JAX_PLATFORMS", "cpu")
  from absl import logging

  logging.set_verbosity(logging.WARNING)
  from syncon_jax import platform

  platform.configure()
  from syncon_jax.tools import render_digits

  cases = [c for c in args.only.split(",") if c] or list(CASES)
  curves = {}
  with tempfile.TemporaryDirectory() as synthetic_dir:
    render_digits.render_dataset(
      synthetic_dir, per_class=8, seed=0, image_size=16, prompts_per_class=2
    )
    for case in cases:
      t0 = time.perf_counter()
      curves[case] = run_case(case, synthetic_dir, args.steps)
      loss = curves[case]["loss"]
      print(f"{case:22s} {time.perf_counter() - t0:6.1f}s  loss {loss[0]:.6f} .. {loss[-1]:.6f}")

  failed = False
  if args.reference:
    with open(args.reference) as f:
      reference = json.load(f)["curves"]
    for case in cases:
      if case not in reference:
        print(f"{case}: not in the reference")
        failed = True
        continue
      ref, got = reference[case]["loss"], curves[case]["loss"]
      if len(ref) != len(got):
        print(f"{case}: {len(got)} steps, reference {len(ref)}")
        failed = True
        continue
      rel = max(abs(a - b) / max(abs(b), 1e-12) for a, b in zip(got, ref, strict=True))
      ok = rel <= args.rtol
      failed |= not ok
      print(f"{case:22s} max relative difference {rel:.2e}  {'ok' if ok else 'DIFFERS'}")
  if args.out:
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
      json.dump({"machine": machine(), "steps": args.steps, "curves": curves}, f, indent=1)
    print(f"wrote {args.out}")
  return 1 if failed else 0


if __name__ == "__main__":
  sys.exit(main())
