"""Synthetic-weight schemes: how much each synthetic positive counts, per class.

A scheme is a pair of pure functions over its own state (a pytree that lives in the objective
state, so it is checkpointed with everything else):

  init(num_classes, config) -> state
  class_weights(state, config) -> [num_classes] float32 in [0, 1]

`config` is `config.objective`. More schemes (learned, hypernet, proto_sim, auto) come with the
weighting issue; they add an update rule on the same state.
"""

from typing import Any, NamedTuple

import jax.numpy as jnp

from syncon_jax.errors import ConfigError


class Scheme(NamedTuple):
  init: Any
  class_weights: Any


def _fixed_init(num_classes: int, config) -> dict:
  w = float(config.synthetic_weight)
  if not 0.0 <= w <= 1.0:
    raise ConfigError(f"objective.synthetic_weight must lie in [0, 1], got {w}")
  return {"w": jnp.full((num_classes,), w, jnp.float32)}


def _fixed_class_weights(state: dict, config) -> jnp.ndarray:
  del config
  return state["w"]


SCHEMES: dict[str, Scheme] = {
  "fixed": Scheme(_fixed_init, _fixed_class_weights),
}


def get_scheme(name: str) -> Scheme:
  if name not in SCHEMES:
    raise ConfigError(f"Unknown objective.weighting {name!r}; valid: {sorted(SCHEMES)}")
  return SCHEMES[name]
