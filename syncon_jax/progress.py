"""Elapsed times and ETAs in log lines, one format for the trainers, the experiment and the
generation tool. No jax import: the generation tool runs without it."""


def duration(seconds: float) -> str:
  """'42s' below 100 s, '14.0 min' below 100 min, '2.5 h' above."""
  if seconds < 100:
    return f"{seconds:.0f}s"
  if seconds < 6000:
    return f"{seconds / 60:.1f} min"
  return f"{seconds / 3600:.1f} h"


def eta(remaining: float, rate: float) -> str:
  """The time `remaining` units take at `rate` units/s; '?' with no rate yet (a log line never
  claims an ETA it has not measured)."""
  return duration(remaining / rate) if rate > 0 else "?"
