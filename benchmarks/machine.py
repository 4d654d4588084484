"""The machine a benchmark ran on, for its results file, and what the benchmarks share (no jax
import: usable before flags)."""

import json
import os
import platform
import sys

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def machine() -> dict:
  """-> {'cpu': model name, 'cores': logical CPUs, 'flags': AVX/AMX/FMA flags, 'loadavg'}."""
  info = {"cpu": platform.processor(), "cores": os.cpu_count(), "flags": []}
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          info["cpu"] = line.split(":", 1)[1].strip()
        elif line.startswith("flags"):
          flags = line.split(":", 1)[1].split()
          info["flags"] = sorted(f for f in flags if f.startswith(("avx", "amx", "fma")))
          break
  except OSError:
    pass
  info["loadavg"] = list(os.getloadavg())
  return info


def header() -> dict:
  """The first keys of every results file: the command as typed (from the repository root)
  and the machine."""
  return {
    "command": " ".join([os.path.relpath(sys.argv[0], REPO), *sys.argv[1:]]),
    "machine": machine(),
  }


def write_json(path: str, result: dict) -> None:
  """Writes `result` to `path` whole or not at all (a killed benchmark keeps the old file)."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path + ".tmp", "w") as f:
    json.dump(result, f, indent=2)
  os.replace(path + ".tmp", path)


def dtypes_arg(value: str, machine_info: dict) -> list[str]:
  """A benchmark's --dtypes: comma-separated, or 'auto': float32, and bfloat16 where the CPU
  computes in it (AVX512-BF16 or AMX). Without them PyTorch's autocast emulates bf16 (on a
  2-core AMD EPYC without AVX-512 its demo step ran at 131 views/s against 1,376 in float32,
  2026-12-03; a standard bf16 round would take ~12 min) and oneDNN 3.2 has no bf16 convolution."""
  if value != "auto":
    return value.split(",")
  if {"avx512_bf16", "amx_bf16"} & set(machine_info["flags"]):
    return ["float32", "bfloat16"]
  print("no bf16 instructions on this CPU (avx512_bf16, amx_bf16): float32 only", flush=True)
  return ["float32"]


def max_rel_diff(a, b) -> float:
  """max |a - b| over max |b|, in float64: how far a result is from its reference, relative to
  the reference's scale (arrays: numpy, jax or anything np.asarray takes)."""
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))
