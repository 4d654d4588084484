"""Objectives: one module per method, looked up by `config.objective.name`.

Every objective turns the model outputs of one global batch into a scalar loss, and may keep
state of its own (synthetic weights, running prototypes, ...) in `TrainState.objective`, which is
checkpointed with the rest:

  uses_synthetic: bool                          whether the batch carries synthetic images
  init_state(num_classes, feat_dim, config) -> pytree   the objective's initial state
  loss(inputs, state, config) -> (loss, metrics dict)    or (loss, metrics dict, carry)
  update(state, grads, inputs, config) -> (state, metrics dict)     or None: state never changes
  init_target(state, params, config) -> state    or None: called once by create_train_state with
                                                 the initial model parameters (an EMA target
                                                 copies them; see momentum.py)

`inputs` is a `StepInputs`; config = config.objective. The train step differentiates `loss` with
respect to the model parameters *and* the objective state (integer leaves get float0 zeros), then
calls `update` after the optimiser step with those state gradients and the same inputs under
stop-gradient. A scheme that learns (SynCon's learned weights) takes its own gradient step there;
one that measures (running prototypes) folds in the batch's statistics.

Target networks and queues (MoCo, BYOL): the loss runs a target network through `inputs.apply`
(the model function under any parameters, e.g. `state["target"]`) on `inputs.views`, the views
the online network saw; a loss may return a third value, `carry` (a pytree, e.g. the keys it
computed), which `update` receives as `inputs.carry` under stop-gradient so that nothing is
computed twice; `update` also gets `inputs.online_params`, the parameters after this step's
optimiser update, which an EMA target follows. The fields `update` alone gets are None in `loss`.

Meta-gradients (SynCon's `meta` weighting): `update` also gets `inputs.params`, the parameters
that produced this step's loss, and every step carries `inputs.images` (before augmentation)
and `inputs.augment` (the step's augmentation under another key); with `inputs.apply`, which is
differentiable in its params, an update can take a lookahead step of the model and
differentiate a loss on fresh views through it.
"""

from typing import Any, NamedTuple

import jax

from syncon_jax.errors import ConfigError


class StepInputs(NamedTuple):
  """What an objective sees of one global batch (b real images, S synthetic per real, V views).

  z: float32 [b, 1 + S, V, dim] L2-normalised projections; slot 0 is the real image, slots 1..S
    its synthetic images of the same class.
  labels: int32 [b] real labels (the synthetic slots share them).
  features: float32 [b, 1 + S, V, feat_dim] the encoder's features (what the probe reads).
  synthetic_valid: bool [b, S], False for a placeholder slot (a class without synthetic images).
  synthetic_prompt: int32 [b, S] prompt id from the synthetic folder's metadata.jsonl, -1 if none.
  step: int32 scalar, steps completed before this one.

  Set by the trainer for every objective (None where a test builds StepInputs by hand):
  predictions: float32 [b, 1 + S, V, dim] the model's predictor applied to the unnormalised
    projections (BYOL), or None when the model has none (model.predictor_hidden_dim = 0).
  views: float32 [b, 1 + S, V, H, W, C] the preprocessed augmented views the model saw.
  apply: jax.tree_util.Partial, apply(params, images [n, H, W, C]) -> (h [n, feat_dim],
    z [n, proj_dim]) float32, z unnormalised: the model under `params` (a Param state, or some
    of its top-level parts such as {"encoder", "head"}, the rest taken from the current model),
    BatchNorm in train mode (the batch's statistics; the running statistics are dropped).
  neighbor_views: float32 [b, V, H, W, C] preprocessed views of each real image's neighbour
    image, when the batch carries them (objective.neighbors_file set), else None.
  key: a PRNG key for the objective's own draws this step, a function of (seed, step).
  images: uint8 [b, 1 + S, H, W, C] the step's images before augmentation.
  augment: jax.tree_util.Partial, augment(key, images uint8 [b, m, H, W, C]) -> float32
    [b, m, V, h, w, C]: fresh preprocessed views under `key` (per-sample keys folded from each
    sample's global position, as the step's own views), e.g. a meta batch of the real images.
  params: the model's Param state before this step's optimiser update, set in both phases: in
    `loss` the state being differentiated, so that `apply(params, other_images)` trains the model
    (rotation prediction); in `update` the same values, the ones that made z (meta's lookahead).
  Set for `update` only (None in `loss`):
  online_params: the model's Param state after this step's optimiser update.
  carry: the third value `loss` returned, or None.
  """

  z: jax.Array
  features: jax.Array
  labels: jax.Array
  synthetic_valid: jax.Array
  synthetic_prompt: jax.Array
  step: jax.Array
  predictions: jax.Array | None = None
  views: jax.Array | None = None
  apply: Any = None
  neighbor_views: jax.Array | None = None
  key: jax.Array | None = None
  images: jax.Array | None = None
  augment: Any = None
  params: Any = None
  online_params: Any = None
  carry: Any = None


class Objective(NamedTuple):
  uses_synthetic: bool
  init_state: Any
  loss: Any
  update: Any = None
  init_target: Any = None


def _registry() -> dict[str, Objective]:
  # Imported here so that the method modules can import StepInputs from this package.
  from syncon_jax.objectives import (
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
    "supcon": Objective(False, supcon.init_state, supcon.loss_real_only),
    "supcon_syn": Objective(True, supcon.init_state, supcon.loss_synthetic_as_real),
    "syncon": Objective(True, syncon.init_state, syncon.loss, syncon.update, syncon.init_target),
    "simclr": Objective(False, simclr.init_state, simclr.loss),
    "stablerep": Objective(True, stablerep.init_state, stablerep.loss),
    "triplet": Objective(False, triplet.init_state, triplet.loss),
    "supervised": Objective(
      False, supervised.init_state, supervised.loss_real_only, supervised.update
    ),
    "supervised_syn": Objective(
      True, supervised.init_state, supervised.loss_with_synthetic, supervised.update
    ),
    "moco": Objective(False, moco.init_state, moco.loss, moco.update, moco.init_target),
    "byol": Objective(False, byol.init_state, byol.loss, byol.update, byol.init_target),
    "byol_nn": Objective(False, byol.init_state_nn, byol.loss_nn, byol.update, byol.init_target_nn),
    "rotation": Objective(False, rotation.init_state, rotation.loss, rotation.update),
  }


OBJECTIVES: dict[str, Objective] = _registry()


def get_objective(name: str) -> Objective:
  if name not in OBJECTIVES:
    raise ConfigError(f"Unknown objective.name {name!r}; valid: {sorted(OBJECTIVES)}")
  return OBJECTIVES[name]
