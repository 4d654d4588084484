"""What every training loop shares (train.py and latent/train.py): the workdir's config.json,
parameters initialised inside one jit, and the step timer behind the throughput log."""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import jax
from absl import logging


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


def init_in_jit(init: Callable, out_shardings=None):
  """init() run inside one jit, so state is created directly with its sharding on every host.

  Partitionable threefry is off here only: with it, XLA:CPU took ~25 s to compile the
  initialisers of even the tiny test ResNet, against ~4 s without (the values differ, and stay a
  pure function of the seed).
  """
  with jax.threefry_partitionable(False):
    return jax.jit(init, out_shardings=out_shardings)()


class StepTimer:
  """Steps per second between log steps, counted from the end of the first step (which includes
  compilation)."""

  def __init__(self, start_step: int):
    self.t_start = self.t_last = time.time()
    self.step_last = start_step

  def first_step_done(self, step_metrics) -> None:
    """Waits for the first step's results and logs how long it took."""
    jax.block_until_ready(step_metrics)
    logging.info("First step (compilation included) took %.1fs.", time.time() - self.t_start)

  def reset(self, done: int) -> None:
    """The throughput counts from now, `done` steps completed."""
    self.t_last, self.step_last = time.time(), done

  def rate(self, done: int) -> float:
    """Steps per second since the last call (0 before any step); call after fetching the step's
    metrics, since dispatch is asynchronous and timing it would overstate the throughput."""
    now = time.time()
    rate = (done - self.step_last) / max(now - self.t_last, 1e-9) if done > self.step_last else 0.0
    self.t_last, self.step_last = now, done
    return rate

  @property
  def elapsed(self) -> float:
    return time.time() - self.t_start
