"""SimCLR (Chen et al. 2020): NT-Xent between the two views of each real image; labels unused.

The loss is `losses.ntxent_loss` (lightly's `NTXentLoss` numbers) on slot 0 of z: for each of
the 2b rows the positive is the other view of the same image and every other row of the global
batch is a negative. `supcon_loss` without labels and with base_temperature = temperature gives
the same numbers for two views (tests/test_objectives_baselines.py checks both), but it would
scale by temperature / base_temperature and accept any n_views; SimCLR is defined for exactly
two views without that scale, so this objective uses ntxent_loss and refuses n_views != 2.
objective.base_temperature is not read. objective.temperature is shared with the other methods
(0.1, SimCLR's ImageNet value); SupContrast's CIFAR SimCLR recipe uses 0.5
(--config.objective.temperature=0.5).
"""

from syncon_jax import losses
from syncon_jax.errors import ConfigError
from syncon_jax.objectives import Loss, Objective


def check_config(config) -> None:
  if config.n_views != 2:
    raise ConfigError(f"objective simclr needs objective.n_views=2, got {config.n_views}")


def loss(outputs, batch, state, ctx):
  """outputs.projections: [batch, 1 + S, 2, dim]; only slot 0 (the real image), labels never."""
  del batch, state
  z = outputs.projections[:, 0]
  value = losses.ntxent_loss(
    z[:, 0], z[:, 1], temperature=ctx.config.temperature, block_size=ctx.config.block_size
  )
  return Loss(value, {})


OBJECTIVE = Objective(loss=loss, check_config=check_config)
