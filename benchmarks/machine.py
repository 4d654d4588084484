"""The machine a benchmark ran on, for its results file (no jax import: usable before flags)."""

import os
import platform


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
