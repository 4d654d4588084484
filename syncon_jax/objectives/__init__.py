"""Objectives: one module per method, looked up by `config.objective.name`.

Every objective turns the model outputs of one global batch into a scalar loss, and may keep
state of its own (synthetic weights, running prototypes, ...) in `TrainState.objective`, which is
checkpointed with the rest:

  uses_synthetic: bool                          whether the batch carries synthetic images
  init_state(num_classes, feat_dim, config) -> pytree   the objective's initial state
  loss(inputs, state, config) -> (loss, metrics dict)
  update(state, grads, inputs, config) -> (state, metrics dict)     or None: state never changes

`inputs` is a `StepInputs`; config = config.objective. The train step differentiates `loss` with
respect to the model parameters *and* the objective state (integer leaves get float0 zeros), then
calls `update` after the optimiser step with those state gradients and the same inputs under
stop-gradient. A scheme that learns (SynCon's learned weights) takes its own gradient step there;
one that measures (running prototypes) folds in the batch's statistics.
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
  """

  z: jax.Array
  features: jax.Array
  labels: jax.Array
  synthetic_valid: jax.Array
  synthetic_prompt: jax.Array
  step: jax.Array


class Objective(NamedTuple):
  uses_synthetic: bool
  init_state: Any
  loss: Any
  update: Any = None


def _registry() -> dict[str, Objective]:
  # Imported here so that the method modules can import StepInputs from this package.
  from syncon_jax.objectives import supcon, syncon

  return {
    "supcon": Objective(False, supcon.init_state, supcon.loss_real_only),
    "supcon_syn": Objective(True, supcon.init_state, supcon.loss_synthetic_as_real),
    "syncon": Objective(True, syncon.init_state, syncon.loss, syncon.update),
  }


OBJECTIVES: dict[str, Objective] = _registry()


def get_objective(name: str) -> Objective:
  if name not in OBJECTIVES:
    raise ConfigError(f"Unknown objective.name {name!r}; valid: {sorted(OBJECTIVES)}")
  return OBJECTIVES[name]
