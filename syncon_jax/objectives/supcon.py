"""SupCon (Khosla et al. 2020) on real images only, or with synthetic images counted as real."""

import jax.numpy as jnp

from syncon_jax import losses
from syncon_jax.objectives import Loss, Objective


def loss_real_only(outputs, batch, state, ctx):
  """outputs.projections: [batch, 1 + S, n_views, dim]; only slot 0 (the real image) is used."""
  del state
  config = ctx.config
  value = losses.supcon_loss(
    outputs.projections[:, 0],
    batch["real_labels"],
    temperature=config.temperature,
    base_temperature=config.base_temperature,
    block_size=config.block_size,
  )
  return Loss(value, {})


def loss_synthetic_as_real(outputs, batch, state, ctx):
  """Every real and synthetic image is an anchor and a positive with the same standing.

  projections: [batch, 1 + S, n_views, dim] -> SupCon over batch * (1 + S) samples; placeholder
  synthetic slots (classes without synthetic images) are masked out as anchors, positives and
  negatives.
  """
  del state
  config = ctx.config
  z = outputs.projections
  b, k, v, d = z.shape
  valid = jnp.concatenate([jnp.ones((b, 1), bool), batch["synthetic_valid"]], axis=1)
  valid = valid.reshape(b * k)
  sample_labels = jnp.repeat(batch["real_labels"], k)
  value = losses.supcon_loss(
    z.reshape(b * k, v, d),
    sample_labels,
    temperature=config.temperature,
    base_temperature=config.base_temperature,
    valid=valid,
    block_size=config.block_size,
  )
  return Loss(value, {})


OBJECTIVE = Objective(loss=loss_real_only)
OBJECTIVE_SYN = Objective(loss=loss_synthetic_as_real, uses_synthetic=lambda config: True)
