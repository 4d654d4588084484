"""SynCon: SupCon over real anchors, with synthetic positives weighted per class.

The weights come from a scheme in syncon_jax/weighting.py (config.objective.weighting); its state
is this objective's state, so it is checkpointed and restored with the rest of the train state.
"""

import jax.numpy as jnp

from syncon_jax import losses, weighting


def init_state(num_classes: int, feat_dim: int, config) -> dict:
  scheme = weighting.get_scheme(config.weighting)
  return {"weighting": scheme.init(num_classes, feat_dim, config)}


def init_target(state: dict, params, config) -> dict:
  """Hands the initial model parameters to a scheme that keeps a copy (the meta schemes' EMA)."""
  scheme = weighting.get_scheme(config.weighting)
  if scheme.init_target is None:
    return state
  return {**state, "weighting": scheme.init_target(state["weighting"], params, config)}


def class_weights(state: dict, config) -> jnp.ndarray:
  """[num_classes] weights in [0, 1] that the current state assigns."""
  return weighting.get_scheme(config.weighting).class_weights(state["weighting"], config)


def loss(inputs, state, config):
  """inputs.z: [batch, 1 + S, n_views, dim] -> SynCon loss over every view of every sample.

  Plus the scheme's penalty: the learned schemes' -lambda sum log w (which only the weights'
  parameters see), or the auto scheme's self-supervised term on synthetic images on probation.
  """
  z = inputs.z
  b, k, v, d = z.shape
  scheme = weighting.get_scheme(config.weighting)
  w = scheme.class_weights(state["weighting"], config)
  is_synthetic = jnp.broadcast_to(jnp.arange(k)[None, :, None] > 0, (b, k, v))
  valid = jnp.concatenate([jnp.ones((b, 1), bool), inputs.synthetic_valid], axis=1)
  row_labels = jnp.broadcast_to(inputs.labels[:, None, None], (b, k, v))
  syncon = losses.syncon_loss(
    z.reshape(b * k * v, d),
    row_labels.reshape(-1),
    is_synthetic.reshape(-1),
    w[row_labels].reshape(-1),
    temperature=config.temperature,
    base_temperature=config.base_temperature,
    valid=jnp.broadcast_to(valid[:, :, None], (b, k, v)).reshape(-1),
    block_size=config.block_size,
    synthetic_denominator=config.synthetic_denominator,
  )
  penalty = scheme.penalty(state["weighting"], inputs, config)
  return syncon + penalty, {
    "syncon_loss": syncon,
    "synthetic_weight_mean": jnp.mean(w),
  }


def update(state, grads, inputs, config):
  """The scheme's own step (SGD on learned weights, running statistics) after the model's."""
  scheme = weighting.get_scheme(config.weighting)
  new, metrics = scheme.update(state["weighting"], grads["weighting"], inputs, config)
  return {**state, "weighting": new}, metrics
