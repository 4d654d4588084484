"""SupCon (Khosla et al. 2020) on real images only, or with synthetic images counted as real."""

import jax.numpy as jnp

from syncon_jax import losses


def init_state(num_classes: int, feat_dim: int, config) -> dict:
  del num_classes, feat_dim, config
  return {}


def loss_real_only(inputs, state, config):
  """inputs.z: [batch, 1 + S, n_views, dim]; only slot 0 (the real image) is used."""
  del state
  loss = losses.supcon_loss(
    inputs.z[:, 0],
    inputs.labels,
    temperature=config.temperature,
    base_temperature=config.base_temperature,
    block_size=config.block_size,
  )
  return loss, {}


def loss_synthetic_as_real(inputs, state, config):
  """Every real and synthetic image is an anchor and a positive with the same standing.

  z: [batch, 1 + S, n_views, dim] -> SupCon over batch * (1 + S) samples; placeholder synthetic
  slots (classes without synthetic images) are masked out as anchors, positives and negatives.
  """
  del state
  z = inputs.z
  b, k, v, d = z.shape
  valid = jnp.concatenate([jnp.ones((b, 1), bool), inputs.synthetic_valid], axis=1)
  valid = valid.reshape(b * k)
  sample_labels = jnp.repeat(inputs.labels, k)
  loss = losses.supcon_loss(
    z.reshape(b * k, v, d),
    sample_labels,
    temperature=config.temperature,
    base_temperature=config.base_temperature,
    valid=valid,
    block_size=config.block_size,
  )
  return loss, {}
