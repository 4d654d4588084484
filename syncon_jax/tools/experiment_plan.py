"""The experiment's plan (tools/experiment.py): method names, their run configs and seeds, and
whether a finished run's workdir was written for the same settings.

A method is objective[-weighting][+denominator][@set]: "syncon-meta+weighted@clean".
"""

import copy
import importlib.util
import json
import os
from collections.abc import Callable

from syncon_jax import losses, objectives
from syncon_jax.errors import ConfigError


def split_method(method: str) -> tuple[str, str]:
  """'supcon_syn@clean' -> ('supcon_syn', 'clean'); no '@' -> (method, 'corrupted'). A
  '+<form>' suffix on the base ('syncon-fixed+weighted') sets objective.syncon.synthetic_denominator.

  The synthetic sets: 'corrupted' (the experiment's renders), 'clean' (rendered without
  corruption), 'oracle' (the corrupted classes' folders removed), 'without-<class>' (that class's
  folder removed).
  """
  base, at, synthetic_set = method.partition("@")
  if not at:
    return method, "corrupted"
  if synthetic_set not in ("clean", "oracle", "corrupted") and not (
    synthetic_set.startswith("without-") and len(synthetic_set) > len("without-")
  ):
    raise ConfigError(
      f"experiment method {method!r}: the synthetic set after '@' must be clean, oracle, "
      "corrupted or without-<class>"
    )
  return base, synthetic_set


def method_denominator(method: str) -> str | None:
  """'syncon-fixed+weighted' -> 'weighted'; None without a '+' (the config's form)."""
  base, plus, form = split_method(method)[0].partition("+")
  if not plus:
    return None
  if parse_method(method)[0] != "syncon" or form not in losses.SYNTHETIC_DENOMINATORS:
    raise ConfigError(
      f"experiment method {method!r}: '+' takes a denominator form of syncon, one of "
      f"{list(losses.SYNTHETIC_DENOMINATORS)}"
    )
  return form


def parse_method(method: str) -> tuple[str, str | None]:
  """'supcon' -> ('supcon', None); 'syncon-auto' -> ('syncon', 'auto'); '@<set>' and
  '+<denominator>' are ignored."""
  objective, _, weighting = split_method(method)[0].partition("+")[0].partition("-")
  if objective == "syncon" and not weighting:
    raise ConfigError(f"experiment method {method!r}: name the weighting, e.g. 'syncon-auto'")
  if weighting and objective != "syncon":
    raise ConfigError(f"experiment method {method!r}: only syncon takes a weighting")
  return objective, weighting or None


def config_builder(config_file: str, overrides: dict) -> Callable:
  """-> make(objective, weighting): the config file's get_config with those variants, then the
  command line's --config.* overrides. An override of another objective's block
  (--config.objective.syncon.meta_every=1 for the baselines' runs) is left out: the flag parser
  already checked every override against the base config, so a missing section is not a typo.

  Built from the file rather than by editing one ConfigDict, because a config file states its
  facts for the objective it is built for (common.set_block_keys: the data set's queue size, the
  few-shot variant's meta-gradient settings), which an edited copy would miss.
  """
  path, _, arg = config_file.partition(":")
  spec = importlib.util.spec_from_file_location("experiment_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)

  def make(objective: str, weighting: str | None):
    variant = ",".join(filter(None, [arg, f"objective={objective}"]))
    if weighting is not None:
      variant += f",weighting={weighting}"
    c = module.get_config(variant)
    for key, value in overrides.items():
      *sections, name = key.split(".")
      node = c
      for section in sections:
        node = node.get(section) if node is not None else None
      if node is not None:
        node[name] = value
    return c

  return make


def _edit_config(config) -> Callable:
  """make(objective, weighting) that edits a copy of `config` (for configs built in code)."""

  def make(objective: str, weighting: str | None):
    c = copy.deepcopy(config)
    objectives.configure(c, objective)
    if weighting is not None:
      c.objective.syncon.weighting = weighting
    return c

  return make


def method_config(make, config, method: str, seed: int, synthetic_dir: str):
  """The run config of one (method, seed), with the experiment's synthetic set and seed.

  synthetic_dir: the corrupted renders' folder; a method's '@<set>' picks a sibling set
  (synthetic_set_dir). The config records the set (data.corrupt_classes, data.removed_classes),
  so a finished run is reused only for the data it was trained on (run_one).
  """
  c = make(*parse_method(method))
  c.seed = int(seed)
  if method_denominator(method) is not None:
    c.objective.syncon.synthetic_denominator = method_denominator(method)
  synthetic_set = split_method(method)[1]
  c.data.synthetic_dir = synthetic_set_dir(synthetic_dir, synthetic_set)
  clean = synthetic_set == "clean"
  c.data.corrupt_classes = () if clean else tuple(config.experiment.corrupt_classes)
  c.data.corruption = config.experiment.corruption
  c.data.removed_classes = tuple(removed_classes(config, synthetic_set))
  return c


def removed_classes(config, synthetic_set: str) -> list[str]:
  """The class folders a synthetic set leaves out."""
  if synthetic_set == "oracle":
    return [str(c) for c in config.experiment.corrupt_classes]
  if synthetic_set.startswith("without-"):
    return [synthetic_set[len("without-") :]]
  return []


def synthetic_set_dir(synthetic_dir: str, synthetic_set: str) -> str:
  """Where a synthetic set lives: the corrupted renders at synthetic_dir, the others beside it."""
  if synthetic_set == "corrupted":
    return synthetic_dir
  return f"{synthetic_dir}@{synthetic_set}"


def schedule(config) -> list[tuple[str, tuple[int, ...]]]:
  """[(method, seeds)]: the weighting study's methods over experiment.seeds, the utility runs
  (utility_method@without-<class> for every class) over experiment.utility_seeds (empty: the
  same seeds), then the other baselines over experiment.baseline_seeds."""
  ec = config.experiment
  plan = [(m, tuple(ec.seeds)) for m in ec.methods]
  utility_seeds = ec.get("utility_seeds") or ec.seeds
  plan += [(m, tuple(utility_seeds)) for m in utility_methods(config)]
  return plan + [(m, tuple(ec.baseline_seeds)) for m in ec.baselines]


def utility_methods(config) -> list[str]:
  """The runs that measure utility: utility_method without each class's synthetic folder."""
  ec = config.experiment
  if not ec.get("utility"):
    return []
  if ec.utility_method not in ec.methods:
    raise ConfigError(
      f"experiment.utility_method {ec.utility_method!r} must be one of experiment.methods"
    )
  return [f"{ec.utility_method}@without-{name}" for name in ec.class_names]


def _run_settings(config_dict: dict) -> dict:
  """The settings that make a run what it is: the whole config but the experiment section
  (which lists the other runs) and the intervals of logs and checkpoints. (A config holds only
  its objective's own keys, so SynCon's settings never make a baseline's run another one.)"""
  out = {k: v for k, v in config_dict.items() if k != "experiment"}
  for key in ("log_every_steps", "checkpoint_every_steps", "keep_checkpoints"):
    out.pop(key, None)
  return out


def _same_settings(old, new) -> bool:
  """old == new, but a key only one side has is skipped: a config written by an older version of
  the code lacks the keys added since (which that code could not read)."""
  if isinstance(old, dict) and isinstance(new, dict):
    return all(_same_settings(old[k], new[k]) for k in set(old) & set(new))
  return old == new


def _blocks(config_dict: dict) -> list[str]:
  """The objective blocks a config holds (none in a config written before the blocks)."""
  return sorted(k for k in config_dict.get("objective", {}) if k in objectives.OBJECTIVES)


def is_same_run(config, workdir: str) -> bool:
  """Whether <workdir>/config.json was written for this config (settings that matter). A config
  written before the objective blocks kept the objective's keys flat, where _same_settings would
  skip them: a run whose blocks differ is another run."""
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    return False
  with open(path) as f:
    old = json.load(f)
  new = json.loads(config.to_json())
  return _blocks(old) == _blocks(new) and _same_settings(_run_settings(old), _run_settings(new))
