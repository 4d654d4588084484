"""Objectives: one module per method, looked up by `config.objective.name`.

Every objective turns the projections of one global batch into a scalar loss:

  uses_synthetic: bool                   whether the batch carries synthetic images
  init_state(num_classes, config) -> pytree   extra state (synthetic weights, ...), checkpointed
  loss(z, labels, synthetic_valid, state, config) -> (loss, metrics dict)

with z [batch, 1 + synthetic_per_real, n_views, dim] L2-normalised float32 projections (slot 0 is
the real image, slots 1.. its synthetic images of the same class), labels [batch] int,
synthetic_valid [batch, synthetic_per_real] bool (False where the class has no synthetic image),
and config = config.objective.
"""

from typing import Any, NamedTuple

from syncon_jax.errors import ConfigError
from syncon_jax.objectives import supcon, syncon


class Objective(NamedTuple):
  uses_synthetic: bool
  init_state: Any
  loss: Any


OBJECTIVES: dict[str, Objective] = {
  "supcon": Objective(False, supcon.init_state, supcon.loss_real_only),
  "supcon_syn": Objective(True, supcon.init_state, supcon.loss_synthetic_as_real),
  "syncon": Objective(True, syncon.init_state, syncon.loss),
}


def get_objective(name: str) -> Objective:
  if name not in OBJECTIVES:
    raise ConfigError(f"Unknown objective.name {name!r}; valid: {sorted(OBJECTIVES)}")
  return OBJECTIVES[name]
