r"""Peak memory and time of the dense and blockwise SynCon loss, forward plus backward.

For each N (rows = views of real and synthetic images) at dim 128, both paths of
`syncon_loss` are jitted as value_and_grad with respect to the features and the synthetic
weights. Memory is the compiled executable's own account (`memory_analysis()`: temporaries +
arguments + outputs - aliased), and, per run, the peak RSS of a fresh child process (CPU) or
the device's peak bytes in use (GPU). Time is the median of a few runs after a warm-up, each
ended by block_until_ready. A dense run whose compiled footprint exceeds --max_dense_gb is not
executed and is recorded as skipped with the footprint it would need.

  python benchmarks/loss_memory.py                       # CPU: N = 1k ... 32k, ~10-20 minutes
  python benchmarks/loss_memory.py --sizes=1024,2048 --repeats=2 --out=/tmp/x.json

Writes benchmarks/results/loss_memory.json (or --out) and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

DEFAULT_SIZES = "1024,2048,4096,8192,16384,32768"
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from syncon_jax.platform import cpu_model  # noqa: E402

DEFAULT_OUT = os.path.join(os.path.dirname(__file__), "results", "loss_memory.json")


def _measure_one(args) -> dict:
  """Runs in a child process: one (N, path) measurement, returned as a dict."""
  import jax
  import jax.numpy as jnp
  import numpy as np

  from syncon_jax import losses

  n, block_size = args.n, (None if args.path == "dense" else args.block_size)
  rng = np.random.default_rng(0)
  features = losses.l2_normalize(jnp.asarray(rng.normal(size=(n, args.dim)), jnp.float32))
  # Half the rows synthetic, n_classes classes, as the SynCon sampler would emit them.
  labels = jnp.asarray(rng.integers(0, args.n_classes, n))
  if args.layout == "interleaved":
    is_synthetic = jnp.asarray(np.arange(n) % 2 == 1)
  else:  # real rows first: the blockwise path skips row blocks without anchors
    is_synthetic = jnp.asarray(np.arange(n) >= n // 2)
  weights = jnp.asarray(rng.uniform(0, 1, n).astype(np.float32))

  def loss(f, w):
    return losses.syncon_loss(f, labels, is_synthetic, w, temperature=0.1, block_size=block_size)

  step = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))
  compiled = step.lower(features, weights).compile()
  mem = compiled.memory_analysis()
  footprint = (
    mem.temp_size_in_bytes
    + mem.argument_size_in_bytes
    + mem.output_size_in_bytes
    - mem.alias_size_in_bytes
  )
  out = {
    "n": n,
    "path": args.path,
    "block_size": block_size,
    "temp_bytes": int(mem.temp_size_in_bytes),
    "argument_bytes": int(mem.argument_size_in_bytes),
    "output_bytes": int(mem.output_size_in_bytes),
    "compiled_footprint_bytes": int(footprint),
  }
  if args.path == "dense" and footprint > args.max_dense_gb * 2**30:
    out["skipped"] = f"needs {footprint / 2**30:.1f} GiB > --max_dense_gb={args.max_dense_gb}"
    return out
  rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
  jax.block_until_ready(compiled(features, weights))  # warm-up
  times = []
  for _ in range(args.repeats):
    start = time.perf_counter()
    jax.block_until_ready(compiled(features, weights))
    times.append(time.perf_counter() - start)
    if sum(times) > args.max_seconds_per_point:
      break
  out["times_s"] = times
  out["median_s"] = statistics.median(times)
  out["peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
  out["rss_before_run_bytes"] = rss_before
  # The machine may be shared: the load says how far to trust the times.
  out["load_average_1min"] = os.getloadavg()[0]
  device = jax.devices()[0]
  stats = device.memory_stats() if hasattr(device, "memory_stats") else None
  if stats and "peak_bytes_in_use" in stats:
    out["device_peak_bytes"] = int(stats["peak_bytes_in_use"])
  return out


def _environment() -> dict:
  import jax

  return {
    "jax_version": jax.__version__,
    "devices": [str(d) for d in jax.devices()],
    "platform": jax.devices()[0].platform,
    "device_kind": jax.devices()[0].device_kind,
    "cpu_model": cpu_model(),
    "cpu_count": os.cpu_count(),
    "python": platform.python_version(),
    "machine": platform.platform(),
    "load_average_at_start": os.getloadavg(),
  }


def _mib(x) -> str:
  return "" if x is None else f"{x / 2**20:.0f}"


def markdown_table(rows: list[dict], environment: dict) -> str:
  by = {(r["n"], r["path"]): r for r in rows}
  lines = [
    f"Device: {environment['platform']} ({environment['device_kind']}; "
    f"{environment['cpu_model']}, {environment['cpu_count']} cores), jax {environment['jax_version']}",
    "",
    "| N | dense MiB (compiled) | blockwise MiB (compiled) | dense peak RSS MiB "
    "| blockwise peak RSS MiB | dense s | blockwise s | blockwise / dense time |",
    "|---|---|---|---|---|---|---|---|",
  ]
  for n in sorted({r["n"] for r in rows}):
    d, b = by.get((n, "dense"), {}), by.get((n, "blockwise"), {})
    peak = lambda r: r.get("device_peak_bytes", r.get("peak_rss_bytes"))
    ratio = ""
    if d.get("median_s") and b.get("median_s"):
      ratio = f"{b['median_s'] / d['median_s']:.2f}"
    dense_time = "skipped" if "skipped" in d else f"{d.get('median_s', float('nan')):.3f}"
    lines.append(
      f"| {n} | {_mib(d.get('compiled_footprint_bytes'))} | "
      f"{_mib(b.get('compiled_footprint_bytes'))} | {_mib(peak(d))} | {_mib(peak(b))} | "
      f"{dense_time} | {b.get('median_s', float('nan')):.3f} | {ratio} |"
    )
  return "\n".join(lines)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--sizes", default=DEFAULT_SIZES, help="comma-separated N")
  parser.add_argument("--dim", type=int, default=128)
  parser.add_argument("--n_classes", type=int, default=100)
  parser.add_argument("--block_size", type=int, default=1024)
  parser.add_argument("--layout", choices=["interleaved", "grouped"], default="interleaved",
                      help="real/synthetic rows alternating, or real rows first")  # fmt: skip
  parser.add_argument("--repeats", type=int, default=3, help="timed runs after the warm-up")
  parser.add_argument("--max_seconds_per_point", type=float, default=90.0,
                      help="stop timing a point once its runs add up to this")  # fmt: skip
  parser.add_argument("--max_dense_gb", type=float, default=8.0)
  parser.add_argument("--out", default=DEFAULT_OUT)
  # Internal: measure one point in this (child) process and print it as JSON.
  parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
  parser.add_argument("--path", choices=["dense", "blockwise"], help=argparse.SUPPRESS)
  args = parser.parse_args()

  if args.path is not None:
    print(json.dumps(_measure_one(args)))
    return

  environment = _environment()
  rows = []
  for n in [int(s) for s in args.sizes.split(",")]:
    for path in ("dense", "blockwise"):
      # A fresh process per point: its peak RSS belongs to that point alone.
      cmd = [sys.executable, __file__, f"--n={n}", f"--path={path}"]
      cmd += [f"--{k}={getattr(args, k)}" for k in
              ("dim", "n_classes", "block_size", "layout", "repeats", "max_seconds_per_point",
               "max_dense_gb")]  # fmt: skip
      done = subprocess.run(cmd, capture_output=True, text=True, check=False)
      if done.returncode != 0:
        row = {"n": n, "path": path, "error": done.stderr[-2000:]}
      else:
        row = json.loads(done.stdout.strip().splitlines()[-1])
      rows.append(row)
      print(json.dumps(row), flush=True)
  result = {
    "what": "syncon_loss value_and_grad wrt features and synthetic weights, float32",
    "settings": {
      k: getattr(args, k)
      for k in ("sizes", "dim", "n_classes", "block_size", "layout", "repeats", "max_dense_gb")
    },  # fmt: skip
    "environment": environment,
    "rows": rows,
  }
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  with open(args.out, "w") as f:
    json.dump(result, f, indent=1)
  print(markdown_table(rows, environment))


if __name__ == "__main__":
  main()
