"""What every training loop shares (train.py and latent/train.py): the workdir's config.json,
parameters initialised inside one jit, the step compiled once, and the throughput part of the log
lines."""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import jax
import orbax.checkpoint as ocp
from absl import logging

from syncon_jax import throughput
from syncon_jax.progress import duration, eta


def write_config(workdir: str, config) -> None:
  """<workdir>/config.json, written by process 0 and replaced whole, never truncated: the other
  processes may be reading the previous one at this moment."""
  if jax.process_index() != 0:
    return
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, "config.json")
  with open(path + ".tmp", "w") as f:
    f.write(config.to_json(indent=2))
  os.replace(path + ".tmp", path)


def init_in_jit(init: Callable, out_shardings=None, *args):
  """init(*args) run inside one jit, so state is created directly with its sharding on every host.
  Called again with the same `init`, jax reuses its trace and compiled program.

  Partitionable threefry is off here only: with it, XLA:CPU took ~25 s to compile the
  initialisers of even the tiny test ResNet, against ~4 s without (the values differ, and stay a
  pure function of the seed).
  """
  with jax.threefry_partitionable(False):
    return jax.jit(init, out_shardings=out_shardings)(*args)


# How long a host that compiled the step waits for the slowest one (a large model on a busy
# host compiles for minutes).
COMPILE_BARRIER_TIMEOUT_S = 3600


def compile_step(step_fn, *args):
  """step_fn (jitted) compiled once for these arguments, ahead of its first call: the `Compiled`
  is what the loop then calls, and it also gives the cost analysis (compiling again for it, after
  a first call, compiled the whole step a second time). In a multi-process run, then waits until
  every process has compiled.

  Hosts finish compiling at different times (only process 0's key matches the persistent
  compilation cache, for one), and CPU collectives (gloo) give the processes of a collective
  30 s to meet; this barrier uses the distributed runtime's key-value store instead, which waits
  as long as COMPILE_BARRIER_TIMEOUT_S.
  """
  compiled = step_fn.lower(*args).compile()
  if jax.process_count() > 1:
    ocp.multihost.sync_global_processes(
      "train_step_compiled",
      timeout=COMPILE_BARRIER_TIMEOUT_S,
      processes=set(range(jax.process_count())),
    )
  return compiled


class Throughput:
  """The throughput half of every log line, the same for train.py and latent/train.py: images/s
  (and views/s), achieved GFLOP/s and share of the peak (syncon_jax/throughput.py), elapsed and
  ETA. Rates count from the end of the first step, which includes compilation.

    tp = Throughput(start, total, images_per_step=b)
    ... first step: tp.first_step_done(metrics, compiled_step, *args)
    ... log step:   row.update(tp.row(done)); logging.info("... %s", tp.describe(row))
  """

  def __init__(
    self,
    start_step: int,
    total_steps: int,
    *,
    images_per_step: int,
    views_per_step: int | None = None,
    peak_tflops_per_device: float | None = None,
  ):
    self.t_start = self.t_last = time.time()
    self.step_last = start_step
    self.total_steps = total_steps
    self.images_per_step = images_per_step
    self.views_per_step = views_per_step
    self.peak_override = peak_tflops_per_device
    self.flops = self.peak = None

  def first_step_done(self, step_metrics, step_fn, *args) -> None:
    """Waits for the first step's results, logs how long it took, then the step's FLOPs (XLA's
    cost analysis of step_fn, best a `Compiled`: a jitted function compiles again) and the peak.
    """
    jax.block_until_ready(step_metrics)
    logging.info("First step (compilation included) took %.1fs.", time.time() - self.t_start)
    self.flops = throughput.step_flops(step_fn, *args)
    self.peak, source = throughput.peak_flops(jax.devices(), self.peak_override)
    logging.info(
      "Step: %s GFLOP (XLA cost analysis); peak %s (%s).",
      "?" if self.flops is None else f"{self.flops / 1e9:.1f}",
      "unknown" if self.peak is None else f"{self.peak / 1e9:.0f} GFLOP/s",
      source,
    )
    self.t_last, self.step_last = time.time(), self.step_last + 1

  def row(self, done: int) -> dict[str, float]:
    """The metrics row's throughput keys since the last call, `done` steps completed; call after
    fetching the step's metrics (dispatch is asynchronous: timing it overstates the rate), and
    before `describe`."""
    now = time.time()
    rate = (done - self.step_last) / max(now - self.t_last, 1e-9) if done > self.step_last else 0.0
    self.t_last, self.step_last = now, done
    row = {"images_per_sec": rate * self.images_per_step}
    if self.views_per_step is not None:
      row["views_per_sec"] = rate * self.views_per_step
    row.update(throughput.utilisation(rate, self.flops, self.peak))
    return row

  def describe(self, row: dict) -> str:
    """'284.3 img/s (1137.2 views/s, 1.9 GFLOP/s, 0.6% of peak)  elapsed 9s  ETA 0s'."""
    inner = throughput.describe(row)
    if "views_per_sec" in row:
      inner = f"{row['views_per_sec']:.1f} views/s{inner}"
    else:
      inner = inner.removeprefix(", ")
    rates = f"{row['images_per_sec']:.1f} img/s" + (f" ({inner})" if inner else "")
    # ETA from the rate of this row, for the steps after the last one it counted; none yet when
    # the row counted no step (a log right after the first step).
    rate = row["images_per_sec"] / self.images_per_step
    left = eta(self.total_steps - self.step_last, rate)
    return f"{rates}  elapsed {duration(time.time() - self.t_start)}  ETA {left}"
