r"""Time to the first training step of the demo, first run and second run of the same config.

Runs `python -m syncon_jax.main --config=configs/digits.py` twice with one step, each in a fresh
process and workdir, sharing a fresh persistent compilation cache (syncon_jax/platform.py;
SYNCON_COMPILATION_CACHE_DIR points it at a temporary folder): the first run compiles, the
second reads the cache. For each run: the process's wall time from launch to exit (imports, data,
initialisation, the step, the checkpoint) and the trainer's own "First step (compilation
included)" figure. With --no_cache both runs compile (the cache turned off), for comparison.

  python benchmarks/startup.py
  python benchmarks/startup.py --no_cache --out=/tmp/startup_nocache.json

Writes benchmarks/results/startup.json (or --out).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_OUT = os.path.join(REPO, "benchmarks", "results", "startup.json")


def run_once(workdir: str, synthetic_dir: str, cache_dir: str) -> dict:
  env = dict(os.environ, JAX_PLATFORMS="cpu", SYNCON_COMPILATION_CACHE_DIR=cache_dir)
  env.pop("JAX_COMPILATION_CACHE_DIR", None)  # the project's own cache, as a user gets it
  cmd = [
    sys.executable,
    "-m",
    "syncon_jax.main",
    "--config=configs/digits.py",
    f"--workdir={workdir}",
    f"--config.data.synthetic_dir={synthetic_dir}",
    "--config.total_steps=1",
  ]
  load = os.getloadavg()[0]
  t0 = time.perf_counter()
  proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
  wall = time.perf_counter() - t0
  if proc.returncode:
    raise SystemExit(proc.stderr[-3000:])
  first = re.search(r"First step \(compilation included\) took ([0-9.]+)s", proc.stderr)
  return {
    "process_wall_s": wall,
    "first_step_s": float(first.group(1)) if first else None,
    "loadavg_1min": load,
  }


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--no_cache", action="store_true")
  p.add_argument("--out", default=DEFAULT_OUT)
  args = p.parse_args()
  sys.path.insert(0, REPO)
  from syncon_jax.tools import render_digits

  with tempfile.TemporaryDirectory() as tmp:
    synthetic = os.path.join(tmp, "synthetic")
    render_digits.render_dataset(
      synthetic, per_class=20, seed=0, image_size=32, prompts_per_class=2
    )
    cache = "" if args.no_cache else os.path.join(tmp, "cache")
    runs = [run_once(os.path.join(tmp, f"run{i}"), synthetic, cache) for i in range(2)]
  sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
  from machine import header, write_json

  out = {
    **header(),
    "cache": not args.no_cache,
    "runs": runs,
  }
  write_json(args.out, out)
  for i, r in enumerate(runs):
    print(
      f"run {i + 1}: process {r['process_wall_s']:.1f}s, first step {r['first_step_s']}s, "
      f"load {r['loadavg_1min']:.1f}"
    )


if __name__ == "__main__":
  main()
