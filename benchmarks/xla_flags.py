r"""Which XLA CPU flags make this project's step fastest: one process per flag set, interleaved.

Each candidate runs `step_vs_torch.py --only=jax` in a fresh process (XLA reads its flags once,
when the backend starts) with exactly the candidate's XLA_FLAGS (the project's defaults off),
for --rounds rounds in turn (A, B, C, A, B, C, ...), so load on a shared machine spreads over
all candidates alike. A shared persistent compilation cache makes every round after the first
skip compilation. The winner goes into syncon_jax/platform.py's CPU_XLA_FLAGS by hand.

  python benchmarks/xla_flags.py --shapes=standard --rounds=2
  python benchmarks/xla_flags.py --candidates=none,ynn_no_conv --shapes=demo

Writes benchmarks/results/xla_flags.json (or --out).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_OUT = os.path.join(REPO, "benchmarks", "results", "xla_flags.json")

CANDIDATES = {
  "none": "",
  "ynn_no_conv": "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution",
  "ynn_no_conv_no_dot": (
    "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution,-individual_dot"
  ),
  "ynn_no_conv_onednn_dot": (
    "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution,-individual_dot "
    "--xla_cpu_experimental_onednn_fusion_type=dot"
  ),
  "ynn_no_conv_use_onednn": (
    "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution --xla_cpu_use_onednn=true"
  ),
  "ynn_no_conv_vec256": (
    "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution "
    "--xla_cpu_prefer_vector_width=256"
  ),
  # Independent thunks run concurrently: many small ops (the demo's 8-channel convolutions).
  "ynn_no_conv_concurrent": (
    "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution "
    "--xla_cpu_enable_concurrency_optimized_scheduler=true"
  ),
  # Eigen's convolutions on one thread: splitting a tiny convolution may cost more than it saves.
  "ynn_no_conv_eigen_1thread": (
    "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution "
    "--xla_cpu_multi_thread_eigen=false"
  ),
  # Other emitters for the loop fusions, where the weight-gradient transposes are.
  "ynn_no_conv_no_fusion_emitters": (
    "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution "
    "--xla_cpu_use_fusion_emitters=false"
  ),
  "ynn_no_conv_tiling_propagation": (
    "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution "
    "--xla_cpu_experimental_enable_tiling_propagation=true"
  ),
}


def run_one(flags: str, shape: str, dtype: str, steps: int, cache: str) -> dict:
  env = dict(os.environ, XLA_FLAGS=flags, SYNCON_XLA_CPU_DEFAULTS="0", JAX_PLATFORMS="cpu")
  env["JAX_COMPILATION_CACHE_DIR"] = cache
  with tempfile.NamedTemporaryFile(suffix=".json") as out:
    cmd = [
      sys.executable,
      os.path.join(REPO, "benchmarks", "step_vs_torch.py"),
      "--only=jax",
      f"--shapes={shape}",
      f"--dtypes={dtype}",
      "--rounds=1",
      f"--steps={steps}",
      f"--out={out.name}",
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode:
      return {"error": proc.stderr.strip().splitlines()[-1:]}
    with open(out.name) as f:
      r = json.load(f)["results"][0]
  return {
    "step_s": r["jax_step_s"][0],
    "step_cpu_s": r["jax_step_cpu_s"][0],
    "views": r["views"],
    "load": r["loadavg_1min"][0],
  }


def summarise(runs: dict) -> list[dict]:
  table = []
  for (shape, name), rs in runs.items():
    ok = [r for r in rs if "step_s" in r]
    row = {"shape": shape, "candidate": name, "flags": CANDIDATES[name], "runs": rs}
    if ok:
      ts = [r["step_s"] for r in ok]
      row["views_per_s_median"] = ok[0]["views"] / statistics.median(ts)
      row["views_per_s_best"] = ok[0]["views"] / min(ts)
      row["cpu_s_per_step_median"] = statistics.median(r["step_cpu_s"] for r in ok)
    table.append(row)
  return table


def write(args, table: list[dict], total_s: float) -> None:
  sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
  from machine import header, write_json

  result = {
    **header(),
    "dtype": args.dtype,
    "total_s": total_s,
    "results": table,
  }
  write_json(args.out, result)


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--candidates", default=",".join(CANDIDATES))
  p.add_argument("--shapes", default="demo,standard")
  p.add_argument("--dtype", default="float32")
  p.add_argument("--rounds", type=int, default=2)
  p.add_argument("--steps", type=int, default=2)
  p.add_argument("--cache", default=os.path.join(tempfile.gettempdir(), "syncon_xla_flags_cache"))
  p.add_argument("--out", default=DEFAULT_OUT)
  args = p.parse_args()
  names = args.candidates.split(",")
  runs = {(s, n): [] for s in args.shapes.split(",") for n in names}
  t0 = time.perf_counter()
  for _ in range(args.rounds):
    for shape in args.shapes.split(","):
      for name in names:
        r = run_one(CANDIDATES[name], shape, args.dtype, args.steps, args.cache)
        runs[(shape, name)].append(r)
        print(shape, name, r, flush=True)
        table = summarise(runs)
        # After every run: a sweep stopped early keeps what it measured.
        write(args, table, time.perf_counter() - t0)
  print("| shape | candidate | views/s median | best | CPU s/step | flags |")
  print("|---|---|---|---|---|---|")
  for row in table:
    med = row.get("views_per_s_median", float("nan"))
    best = row.get("views_per_s_best", float("nan"))
    cpu = row.get("cpu_s_per_step_median", float("nan"))
    print(
      f"| {row['shape']} | {row['candidate']} | {med:.1f} | {best:.1f} | {cpu:.2f} "
      f"| `{row['flags']}` |"
    )


if __name__ == "__main__":
  main()
