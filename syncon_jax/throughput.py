"""How much of the machine a compiled step uses: its FLOPs (XLA's cost analysis) against a peak.

The trainer asks once, after the first step:

  flops = step_flops(step_fn, state, batch)          # FLOPs of one step, all devices
  peak, source = peak_flops(jax.devices())           # FLOP/s of all devices, or (None, why)

and logs achieved GFLOP/s = flops * steps/s and its share of the peak beside images/s.

The peak is the bf16 dense datasheet figure for GPUs and TPUs (what mixed-precision training
is held to, as in PaLM's MFU), and on CPU the best float32 matmul rate measured here
(`jnp.dot` of two 2048² matrices; a CPU has no datasheet figure jax can look up), the best
of every process's measurement (one per process) on this machine and jaxlib, kept in
~/.cache/syncon_jax/peak_flops.json.
"""

import functools
import json
import os
import time
from collections.abc import Sequence

import jax
import jax.numpy as jnp

from syncon_jax.platform import cpu_model

# Dense bf16 tensor throughput per jax device, TFLOP/s, from the vendors' datasheets; matched
# against `device.device_kind` by prefix, the longest first. TPU v2/v3 expose each core as a
# device, so their figures are per core (half the chip's).
DATASHEET_BF16_TFLOPS: dict[str, float] = {
  "NVIDIA H200": 989.0,
  "NVIDIA H100 80GB HBM3": 989.0,  # SXM
  "NVIDIA H100 PCIe": 756.0,
  "NVIDIA H100 NVL": 835.0,
  "NVIDIA A100": 312.0,
  "NVIDIA L4": 121.0,
  "NVIDIA L40S": 362.0,
  "NVIDIA B200": 2250.0,
  "TPU v2": 22.5,
  "TPU v3": 61.5,
  "TPU v4": 275.0,
  "TPU v5 lite": 197.0,
  "TPU v5p": 459.0,
  "TPU v5": 459.0,
  "TPU v6 lite": 918.0,
}

CPU_MATMUL_SIZE = 2048
CACHE_PATH = os.path.join("~", ".cache", "syncon_jax", "peak_flops.json")


def compiled_flops(compiled) -> float | None:
  """FLOPs of one call of a `jax.stages.Compiled`, from XLA's cost analysis; None if absent."""
  try:
    cost = compiled.cost_analysis()
  except Exception:  # some backends implement no cost analysis
    return None
  if isinstance(cost, list | tuple):  # older jax: one dict per computation
    cost = cost[0] if cost else None
  flops = (cost or {}).get("flops")
  return float(flops) if flops and flops > 0 else None


def step_flops(step_fn, *args) -> float | None:
  """FLOPs of one call of `step_fn(*args)`, a jitted function (lowered and compiled again: the
  compilation caches serve it) or a `Compiled`. XLA counts one device's program, so across a
  mesh the count is scaled by the number of devices the arguments live on."""
  compiled = step_fn if hasattr(step_fn, "cost_analysis") else step_fn.lower(*args).compile()
  flops = compiled_flops(compiled)
  return None if flops is None else flops * _spmd_devices(args)


def _spmd_devices(args) -> int:
  for leaf in jax.tree.leaves(args):
    sharding = getattr(leaf, "sharding", None)
    if sharding is not None:
      return len(sharding.device_set)
  return 1


def datasheet_flops(device_kind: str) -> float | None:
  """bf16 FLOP/s of one device of this kind, or None when the table does not know it."""
  for prefix in sorted(DATASHEET_BF16_TFLOPS, key=len, reverse=True):
    if device_kind.startswith(prefix):
      return DATASHEET_BF16_TFLOPS[prefix] * 1e12
  return None


def measure_matmul_flops(size: int = CPU_MATMUL_SIZE, repeats: int = 5) -> float:
  """The best float32 FLOP/s of `jnp.dot` on [size, size] matrices, on the default device."""
  a = jnp.ones((size, size), jnp.float32)
  dot = jax.jit(jnp.dot)
  dot(a, a).block_until_ready()
  best = float("inf")
  for _ in range(repeats):
    t0 = time.perf_counter()
    dot(a, a).block_until_ready()
    best = min(best, time.perf_counter() - t0)
  return 2.0 * size**3 / best


@functools.cache
def _measured_in_this_process(size: int) -> float:
  """measure_matmul_flops(size), once per process: a process that trains many runs
  (tools.experiment, the tests) measures once. The measurement took 1.5 s of a 7.2 s runlocal
  run trained in a warm process (2-core AMD EPYC, 2026-12-03): once per run, the few-shot
  experiment's 190 runs spent ~5 minutes measuring."""
  return measure_matmul_flops(size)


def cpu_peak_flops(cache_path: str = CACHE_PATH, *, size: int = CPU_MATMUL_SIZE) -> float:
  """Measured matmul FLOP/s of one CPU device: the best of this process's measurement and
  every earlier one on this (CPU, core count, jaxlib), kept in cache_path.

  Measured once per process and the maximum kept: one measurement on a busy machine reads low,
  and the cache converges to the machine's real rate instead of keeping a low figure forever.
  """
  path = os.path.expanduser(cache_path)
  key = f"{cpu_model()}|{os.cpu_count()}|jaxlib {jax.lib.__version__}"
  cache = {}
  try:
    with open(path) as f:
      cache = json.load(f)
  except (OSError, ValueError):
    pass
  best = max(float(cache.get(key, 0.0)), _measured_in_this_process(size))
  if best > float(cache.get(key, 0.0)):
    cache[key] = best
    try:
      os.makedirs(os.path.dirname(path), exist_ok=True)
      with open(path + ".tmp", "w") as f:
        json.dump(cache, f, indent=2)
      os.replace(path + ".tmp", path)
    except OSError:
      pass  # a read-only home: this run's figure is used
  return best


def peak_flops(
  devices: Sequence[jax.Device], override_tflops: float | None = None
) -> tuple[float | None, str]:
  """-> (peak FLOP/s of all these devices together, where the figure comes from) or (None, why).

  override_tflops (per device) wins; otherwise GPU/TPU take the datasheet table and a CPU its
  measured matmul rate (all CPU devices share one machine's cores, so it is not multiplied).
  """
  if override_tflops:
    return override_tflops * 1e12 * len(devices), "config"
  kind = devices[0].device_kind
  if devices[0].platform == "cpu":
    return cpu_peak_flops(), f"measured f32 matmul {CPU_MATMUL_SIZE}²"
  per_device = datasheet_flops(kind)
  if per_device is None:
    return None, f"no datasheet figure for {kind!r}"
  return per_device * len(devices), f"{kind} bf16 datasheet"


def utilisation(steps_per_sec: float, flops: float | None, peak: float | None) -> dict:
  """-> {'gflops_per_sec', 'peak_share'} for the log row (keys absent when unknown)."""
  row = {}
  if flops:
    row["gflops_per_sec"] = steps_per_sec * flops / 1e9
    if peak:
      row["peak_share"] = steps_per_sec * flops / peak
  return row


def describe(row: dict) -> str:
  """The log line's part for utilisation: ', 12.3 GFLOP/s, 4.5% of peak' or ''."""
  text = f", {row['gflops_per_sec']:.1f} GFLOP/s" if "gflops_per_sec" in row else ""
  if "peak_share" in row:
    text += f", {100 * row['peak_share']:.1f}% of peak"
  return text
