"""The machine a benchmark ran on, for its results file (no jax import: usable before flags)."""

import json
import os
import platform
import sys

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
