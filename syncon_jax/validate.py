"""Checks a resolved config before anything is loaded or compiled.

`check_config` is what `--dry_run` runs, and the first thing `train_and_evaluate` and
`linear_eval` do: every name looked up in its registry (objective, weighting, data set, model,
optimiser), every count positive, every path that must exist there. A mistake is a ConfigError
or DataError that names the key and, where it can, says what to pass. `phase_warnings` says
when the settings make a phase of training empty or total (a shortened run whose warmup or
probation did not follow it).
"""

from __future__ import annotations

import os

import jax
from absl import logging

from syncon_jax import augment, checkpoint, data, losses, models, objectives, weighting
from syncon_jax.data import aircraft, birdsnap, cifake, folders
from syncon_jax.errors import ConfigError, DataError

# Data sets read from data.manual_dir -> a check of the folder that raises with how to get it.
_MANUAL = {
  "birdsnap": lambda d: _require_dir(d, "data.manual_dir", birdsnap.HOW_TO_GET),
  "aircraft": aircraft.find_root,
  "cifake": cifake.find_root,
  "image_folder": lambda d: _require_dir(d, "data.manual_dir", "It must hold train/ and test/."),
}

# How to make a synthetic folder that does not exist yet, per data set.
_MAKE_SYNTHETIC = {
  "digits": "make it with `python -m syncon_jax.tools.render_digits --out={path}`",
}


def _require_dir(path: str | None, key: str, hint: str = "") -> str:
  if not path:
    raise ConfigError(f"{key} must be set. {hint}".strip())
  if not os.path.isdir(os.path.expanduser(path)):
    raise DataError(f"{key}={path!r} does not exist or is not a folder. {hint}".strip())
  return path


def _positive(config, *keys: str) -> None:
  for key in keys:
    node = config
    *sections, name = key.split(".")
    for section in sections:
      node = node[section]
    value = node.get(name)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
      raise ConfigError(f"{key} must be a positive integer, got {value!r}")


def _check_loss_settings(o) -> None:
  """The loss settings several objectives share (config.objective), checked here once: the losses
  are traced inside the train step and check only shapes. One objective's own keys are checked by
  its `check_config` hook."""
  for key in ("temperature", "base_temperature"):
    if o.get(key) is not None and not o[key] > 0:
      raise ConfigError(f"objective.{key} must be > 0, got {o[key]!r}")
  block_size = o.get("block_size")
  if block_size is not None and (
    not isinstance(block_size, int) or isinstance(block_size, bool) or block_size < 1
  ):
    raise ConfigError(
      f"objective.block_size must be a positive integer or None, got {block_size!r}"
    )
  if "synthetic_denominator" in o and o.synthetic_denominator not in losses.SYNTHETIC_DENOMINATORS:
    raise ConfigError(
      f"Unknown objective.syncon.synthetic_denominator {o.synthetic_denominator!r}; "
      f"valid: {list(losses.SYNTHETIC_DENOMINATORS)}"
    )


def check_workdir(workdir: str, *, must_hold_checkpoints: bool = False) -> None:
  """The workdir is a local folder (or does not exist yet); creates nothing."""
  if "://" in workdir:
    raise ConfigError(
      f"--workdir={workdir}: only POSIX paths are supported (mount a bucket with gcsfuse and "
      "pass the mount point)"
    )
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise ConfigError(f"--workdir={workdir} is a file, not a folder")
  if must_hold_checkpoints and not checkpoint.has_checkpoint(workdir):
    raise ConfigError(
      f"--workdir={workdir} holds no checkpoint (nothing in {os.path.join(workdir, 'checkpoints')}"
      "): train there first with python -m syncon_jax.main"
    )


def check_config(config, *, workdir: str | None = None, for_eval: bool = False) -> None:
  """Raises ConfigError/DataError for the first mistake in config; loads and compiles nothing.

  for_eval: the checks of linear_eval (the workdir must hold a checkpoint; no synthetic images
  are read).
  """
  if workdir is not None:
    check_workdir(workdir, must_hold_checkpoints=for_eval)
  objective = objectives.get_objective(config.objective.name)
  settings = objectives.settings(config.objective)
  weighting.get_scheme(settings.get("weighting", "fixed"))
  _check_loss_settings(settings)
  if objective.check_config is not None:
    objective.check_config(settings)
  if config.data.name not in data.DATASETS:
    raise ConfigError(f"Unknown data.name {config.data.name!r}; valid: {sorted(data.DATASETS)}")
  if config.model.name not in models.MODELS:
    raise ConfigError(f"Unknown model.name {config.model.name!r}; valid: {sorted(models.MODELS)}")
  from syncon_jax import train  # train imports this module

  if config.optimizer.name not in train.OPTIMIZERS:
    raise ConfigError(
      f"Unknown optimizer.name {config.optimizer.name!r}; valid: {sorted(train.OPTIMIZERS)}"
    )
  _positive(config, "total_steps", "batch_size", "log_every_steps", "checkpoint_every_steps")
  if config.optimizer.schedule != "cosine":
    raise ConfigError(
      f"Unknown optimizer.schedule {config.optimizer.schedule!r}; valid: ['cosine']"
    )
  _positive(config, "objective.n_views", "data.image_size")
  folders.decode_options(config.data)  # decode_size and resize, before any image is read
  augment.read_config(config.augment, n_views=config.objective.n_views)
  if config.optimizer.warmup_steps < 0:
    raise ConfigError(f"optimizer.warmup_steps must be >= 0, got {config.optimizer.warmup_steps}")
  train.check_batch_size(config)

  d = config.data
  if d.name in _MANUAL:
    _MANUAL[d.name](d.get("manual_dir"))
  data_dir = d.get("data_dir")
  if data_dir and "://" not in data_dir and not os.path.isdir(os.path.expanduser(data_dir)):
    raise DataError(f"data.data_dir={data_dir!r} does not exist or is not a folder")
  if objective.uses_synthetic(settings) and not for_eval:
    path = d.get("synthetic_dir")
    how = _MAKE_SYNTHETIC.get(d.name, "see README 'Running your own' for the folder layout")
    if not path:
      raise ConfigError(
        f"objective {config.objective.name!r} trains on synthetic images: set "
        f"--config.data.synthetic_dir ({how.format(path='<dir>')})"
      )
    if not os.path.isdir(os.path.expanduser(path)):
      raise DataError(f"data.synthetic_dir={path!r} does not exist: {how.format(path=path)}")
  neighbors = settings.get("neighbors_file")
  if neighbors and not for_eval and not os.path.isfile(os.path.expanduser(neighbors)):
    raise DataError(
      f"objective.{config.objective.name}.neighbors_file={neighbors!r} does not exist: make it with "
      "python -m syncon_jax.tools.nearest_neighbors (README 'Running your own')"
    )


def phase_warnings(config) -> list[str]:
  """Sentences for each phase of training that these settings make empty or total."""
  out = []
  total, warmup = config.total_steps, config.optimizer.warmup_steps
  if warmup >= total:
    out.append(
      f"optimizer.warmup_steps={warmup} >= total_steps={total}: the learning rate only warms up "
      "and never decays; lower --config.optimizer.warmup_steps"
    )
  o = config.objective.get("syncon", {})
  if o.get("weighting") == "auto":
    probation = o.probation_steps
    if probation >= total:
      out.append(
        f"objective.syncon.probation_steps={probation} >= total_steps={total}: the auto weighting never "
        "leaves probation, so every synthetic weight stays 0; lower "
        "--config.objective.syncon.probation_steps"
      )
    elif probation < 1:
      out.append(
        f"objective.syncon.probation_steps={probation}: the auto weighting has no probation, so its "
        "weights are measured on the untrained encoder at step 0"
      )
  return out


def warn_phases(config) -> None:
  if jax.process_index() == 0:
    for sentence in phase_warnings(config):
      logging.warning("%s", sentence)
