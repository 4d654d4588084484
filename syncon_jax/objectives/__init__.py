"""Objectives: one module per method, looked up by `config.objective.name`.

The contract between the one trainer and the methods (DESIGN.md "Objective contract"):

  loss(outputs, batch, state, ctx) -> Loss(value, metrics, carry)
  update(state, outputs, batch, ctx) -> (buffers, metrics)          optional

`outputs` are the model's outputs on the step's views (`Outputs`), `batch` the global batch dict
exactly as the sampler (and the objective's own `host_inputs`) made it, `state` the objective's
`ObjectiveState(params, buffers)` and `ctx` a `LossContext` (step, key, the model function, ...).
The trainer differentiates `loss` with respect to the model parameters and `state.params` (the
objective's trainable parameters: a classifier, learned weights, a hypernetwork), which the one
optimiser steps, each objective's at its own rate (`optimizer`, under optax.multi_transform).
`state.buffers` (EMA targets, queues, running statistics) are never differentiated; `update`
moves them after the optimiser step, with an `UpdateContext` (the parameters before and after the
step, and the `carry` the loss returned, so nothing is computed twice).

An `Objective`'s other hooks, all optional:

  defaults(c) -> ConfigDict                                            its config block, the keys
                                                                       only it reads (`configure`)
  init(num_classes, feat_dim, model_params, config) -> ObjectiveState   (default: empty)
  optimizer(config) -> optax.GradientTransformation for state.params   (default: none)
  check_config(config) -> None, raising ConfigError                    its own keys' checks
  uses_synthetic(config) -> bool                                       whether to load synthetic
                                                                       images (default: False)
  host_inputs(config, train) -> fn(step, host_batch) -> dict           host data only this method
                                                                       needs, added to the batch
  summarize(state, class_names, config) -> (metrics, files)            at log steps: metrics for
                                                                       metrics.jsonl, {file name:
                                                                       JSON value} for the workdir

`config` is always the objective's settings (`settings`): the keys every objective shares
(config.objective.name, n_views, temperature, base_temperature, block_size) and the keys of its
own block, config.objective.<name>, as one dict (host_inputs: the whole config). A config holds
the block of its objective only, so SimCLR's config lists SimCLR's keys and SynCon's lists
SynCon's.
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import ml_collections

from syncon_jax.errors import ConfigError


class Outputs(NamedTuple):
  """The model's outputs on one global batch (b real images, S synthetic per real, V views).

  projections: float32 [b, 1 + S, V, dim] L2-normalised; slot 0 is the real image, slots 1..S its
    synthetic images of the same class.
  features: float32 [b, 1 + S, V, feat_dim] the encoder's features (what the probes read).
  predictions: float32 [b, 1 + S, V, dim] the model's predictor applied to the unnormalised
    projections (BYOL), or None when the model has none (model.predictor_hidden_dim = 0).
  """

  projections: jax.Array
  features: jax.Array
  predictions: jax.Array | None = None


class ObjectiveState(NamedTuple):
  """params: trainable (differentiated, stepped by the optimiser); buffers: everything else."""

  params: Any
  buffers: Any


class Loss(NamedTuple):
  """What `loss` returns: the scalar, metrics (scalars or [num_classes] vectors, logged as
  `name/<class>`) and a carry for `update` (a pytree, e.g. the keys to enqueue; {} for none)."""

  value: jax.Array
  metrics: dict
  carry: Any = None


class LossContext(NamedTuple):
  """What `loss` gets besides outputs, batch and state.

  config: config.objective.
  step: int32 scalar, steps completed before this one.
  key: a PRNG key for the objective's own draws this step, a function of (seed, step).
  views: float32 [b, 1 + S, V, H, W, C] the preprocessed augmented views the model saw.
  apply: jax.tree_util.Partial, apply(params, images [n, H, W, C]) -> (h [n, feat_dim],
    z [n, proj_dim]) float32, z unnormalised: the model under `params` (a Param state, or some of
    its top-level parts such as {"encoder", "head"}, the rest taken from the current model),
    BatchNorm in train mode (the batch's statistics; the running statistics are dropped).
    Differentiable in `params`.
  params: the model's Param state being differentiated: `apply(ctx.params, other_images)` trains
    the model (rotation prediction).
  augment: jax.tree_util.Partial, augment(key, images uint8 [b, m, H, W, C]) -> float32
    [b, m, V, h, w, C]: the step's augmentation and preprocessing under another key, per-sample
    keys folded from each sample's global position (as the step's own views).
  """

  config: ml_collections.ConfigDict
  step: jax.Array
  key: jax.Array
  views: jax.Array
  apply: Any
  params: Any
  augment: Any


# What `update` gets: LossContext's fields (params: the model's Param state before this step's
# optimiser update, the one that made the outputs), and
#   new_params: the model's Param state after this step's optimiser update (what an EMA follows);
#   carry: the carry `loss` returned.
UpdateContext = NamedTuple(
  "UpdateContext", [*LossContext.__annotations__.items(), ("new_params", Any), ("carry", Any)]
)


def no_state(num_classes: int, feat_dim: int, model_params, config) -> ObjectiveState:
  del num_classes, feat_dim, model_params, config
  return ObjectiveState(params={}, buffers={})


class Objective(NamedTuple):
  loss: Callable
  defaults: Callable | None = None
  init: Callable = no_state
  update: Callable | None = None
  optimizer: Callable | None = None
  check_config: Callable | None = None
  uses_synthetic: Callable = lambda config: False
  host_inputs: Callable | None = None
  summarize: Callable | None = None


def _registry() -> dict[str, Objective]:
  # Imported here so that the method modules can import this package's types and functions.
  from syncon_jax.objectives import (
    align_uniform,
    byol,
    moco,
    rotation,
    simclr,
    stablerep,
    supcon,
    supervised,
    syncon,
    triplet,
  )

  return {
    "supcon": supcon.OBJECTIVE,
    "supcon_syn": supcon.OBJECTIVE_SYN,
    "syncon": syncon.OBJECTIVE,
    "simclr": simclr.OBJECTIVE,
    "stablerep": stablerep.OBJECTIVE,
    "triplet": triplet.OBJECTIVE,
    "supervised": supervised.OBJECTIVE,
    "supervised_syn": supervised.OBJECTIVE_SYN,
    "moco": moco.OBJECTIVE,
    "byol": byol.OBJECTIVE,
    "byol_nn": byol.OBJECTIVE_NN,
    "rotation": rotation.OBJECTIVE,
    "align_uniform": align_uniform.OBJECTIVE,
  }


def get_objective(name: str) -> Objective:
  if name not in OBJECTIVES:
    raise ConfigError(f"Unknown objective.name {name!r}; valid: {sorted(OBJECTIVES)}")
  return OBJECTIVES[name]


def configure(c: ml_collections.ConfigDict, name: str) -> None:
  """Makes `name` the objective of the config c: sets c.objective.name and c.objective.<name>, the
  objective's block from its `defaults(c)` hook (which may also set the keys of c's other sections
  that the method needs: BYOL's predictor and augmentations, MoCo's temperature). A block of
  another objective is removed; the objective's own block, if c has it, is kept as it is. Keys
  that another objective's hook set elsewhere (MoCo's temperature, BYOL's views) stay: a config
  file builds a fresh config for each objective, as the experiment's config_builder does."""
  objective = get_objective(name)
  with c.unlocked():  # a parsed config is locked: no key may come or go by accident
    for other in OBJECTIVES:
      if other != name and other in c.objective:
        del c.objective[other]
    c.objective.name = name
    if objective.defaults is not None and name not in c.objective:
      c.objective[name] = objective.defaults(c)


def settings(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """config.objective -> the objective's settings: the shared keys and its own block's, as one
  dict (what every hook gets as `config`). A block of another objective, or a missing block, is
  a ConfigError: they mean --config.objective.name was overridden on the command line, which
  would leave the block of the config file's objective in place."""
  name = config.name
  objective = get_objective(name)
  others = sorted(k for k in config if k in OBJECTIVES and k != name)
  missing = objective.defaults is not None and name not in config
  if others or missing:
    found = f"the block objective.{others[0]}" if others else f"no block objective.{name}"
    raise ConfigError(
      f"objective.name={name!r} but the config holds {found}: choose the objective with the "
      f"config's variant, --config=<file>:objective={name}"
    )
  out = {k: v for k, v in config.items() if k not in OBJECTIVES}
  for key, value in config.get(name, {}).items():
    if key in out:
      raise ConfigError(f"objective.{name}.{key} shadows the shared key objective.{key}")
    out[key] = value
  return ml_collections.ConfigDict(out)


def init(objective: Objective, num_classes: int, feat_dim: int, model_params, config):
  """Checks the objective's config, then -> its initial ObjectiveState."""
  if objective.check_config is not None:
    objective.check_config(config)
  return objective.init(num_classes, feat_dim, model_params, config)


# Last: the method modules import this package's types and `settings`.
OBJECTIVES: dict[str, Objective] = _registry()
