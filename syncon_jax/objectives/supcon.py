"""SupCon (Khosla et al. 2020) on real images only, or with synthetic images counted as real."""

import jax.numpy as jnp

from syncon_jax import losses


def init_state(num_classes: int, config) -> dict:
  del num_classes, config
  return {}


def loss_real_only(z, labels, synthetic_valid, state, config):
  """z: [batch, 1 + S, n_views, dim]; only slot 0 (the real image) is used."""
  del synthetic_valid, state
  loss = losses.supcon_loss(
    z[:, 0],
    labels,
    temperature=config.temperature,
    base_temperature=config.base_temperature,
    block_size=config.block_size,
  )
  return loss, {}


def loss_synthetic_as_real(z, labels, synthetic_valid, state, config):
  """Every real and synthetic image is an anchor and a positive with the same standing.

  z: [batch, 1 + S, n_views, dim] -> SupCon over batch * (1 + S) samples; placeholder synthetic
  slots (classes without synthetic images) are masked out as anchors, positives and negatives.
  """
  del state
  b, k, v, d = z.shape
  valid = jnp.concatenate([jnp.ones((b, 1), bool), synthetic_valid], axis=1).reshape(b * k)
  sample_labels = jnp.repeat(labels, k)
  loss = losses.supcon_loss(
    z.reshape(b * k, v, d),
    sample_labels,
    temperature=config.temperature,
    base_temperature=config.base_temperature,
    valid=valid,
    block_size=config.block_size,
  )
  return loss, {}
