"""SynCon: SupCon over real anchors, with synthetic positives weighted per class.

The weights come from a scheme in syncon_jax/weighting.py (config.objective.weighting); its state
is this objective's state, so it is checkpointed and restored with the rest of the train state.
"""

import jax.numpy as jnp

from syncon_jax import losses, weighting


def init_state(num_classes: int, config) -> dict:
  return {"weighting": weighting.get_scheme(config.weighting).init(num_classes, config)}


def class_weights(state: dict, config) -> jnp.ndarray:
  """[num_classes] weights in [0, 1] that the current state assigns."""
  return weighting.get_scheme(config.weighting).class_weights(state["weighting"], config)


def loss(z, labels, synthetic_valid, state, config):
  """z: [batch, 1 + S, n_views, dim] -> scalar SynCon loss over every view of every sample."""
  b, k, v, d = z.shape
  w = class_weights(state, config)
  is_synthetic = jnp.broadcast_to(jnp.arange(k)[None, :, None] > 0, (b, k, v))
  valid = jnp.concatenate([jnp.ones((b, 1), bool), synthetic_valid], axis=1)
  row_labels = jnp.broadcast_to(labels[:, None, None], (b, k, v))
  loss_value = losses.syncon_loss(
    z.reshape(b * k * v, d),
    row_labels.reshape(-1),
    is_synthetic.reshape(-1),
    w[row_labels].reshape(-1),
    temperature=config.temperature,
    base_temperature=config.base_temperature,
    valid=jnp.broadcast_to(valid[:, :, None], (b, k, v)).reshape(-1),
    block_size=config.block_size,
  )
  return loss_value, {"synthetic_weight_mean": jnp.mean(w)}
