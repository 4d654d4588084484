"""Triplet loss over the real images with their labels; the triplets are mined in the batch.

Rows are every view of every real image (slot 0 of the projections; row = i * n_views + view), labelled with
the image's label, so the views of one image are positives of each other. objective.triplet.mining
picks the triplets:

  batch_hard  per anchor the farthest positive and the nearest negative in the global batch
              (Hermans et al. 2017; losses.batch_hard_triplet_loss). O(rows^2) memory.
  batch_all   every valid (a, p, n) (losses.batch_all_triplet_loss, averaged as
              objective.triplet.average says). O(rows^3) memory: for small batches only.
  plain       one fixed triplet per real image, no mining (losses.triplet_loss): anchor = its
              view 0, positive = view 1 of the next image in the batch with the same label (its
              own view 1 if it is alone in its class), negative = view 0 of the next image with
              another label; images without another label in the batch are no anchors. The
              batch order is the sampler's random order, so "next" is a random pick.

objective.triplet.margin and objective.triplet.metric ('euclidean', 'squared_euclidean',
'cosine' = 1 - cos) go to the loss. z is L2-normalised, so distances lie in [0, 2].
"""

import jax.numpy as jnp
import ml_collections

from syncon_jax import losses
from syncon_jax.errors import ConfigError
from syncon_jax.objectives import Loss, Objective


def _plain(z: jnp.ndarray, labels: jnp.ndarray, config) -> jnp.ndarray:
  """z: [b, n_views, dim], labels: [b] -> mean hinge over the images that have a negative."""
  b, v, _ = z.shape
  if b < 2:
    return jnp.zeros((), z.dtype)
  rows = jnp.arange(b)
  # Column o-1 of `later` is the image o places after each one, cyclically.
  later = (rows[:, None] + jnp.arange(1, b)[None, :]) % b
  same = labels[later] == labels[:, None]
  has_pos, has_neg = jnp.any(same, axis=1), jnp.any(~same, axis=1)
  pos = jnp.where(has_pos, later[rows, jnp.argmax(same, axis=1)], rows)
  neg = jnp.where(has_neg, later[rows, jnp.argmax(~same, axis=1)], rows)
  # Per-triplet hinges from the tested loss, then the mean over the images that have a negative.
  hinge = losses.triplet_loss(
    z[:, 0],
    z[pos, 1 % v],
    z[neg, 0],
    margin=config.margin,
    metric=config.metric,
    reduction="none",
  )
  return jnp.sum(jnp.where(has_neg, hinge, 0)) / jnp.maximum(jnp.sum(has_neg), 1)


def _batch_hard(z, labels, config):
  b, v, d = z.shape
  return losses.batch_hard_triplet_loss(
    z.reshape(b * v, d),
    jnp.repeat(labels, v),
    margin=config.margin,
    metric=config.metric,
  )


def _batch_all(z, labels, config):
  b, v, d = z.shape
  return losses.batch_all_triplet_loss(
    z.reshape(b * v, d),
    jnp.repeat(labels, v),
    margin=config.margin,
    metric=config.metric,
    average=config.average,
  )


MINING = {"batch_hard": _batch_hard, "batch_all": _batch_all, "plain": _plain}


def _mining(config):
  if config.mining not in MINING:
    raise ConfigError(
      f"Unknown objective.triplet.mining {config.mining!r}; valid: {sorted(MINING)}"
    )
  return MINING[config.mining]


def check_config(config) -> None:
  _mining(config)  # a bad name fails before any compilation
  if config.metric not in losses.TRIPLET_METRICS:
    raise ConfigError(
      f"Unknown objective.triplet.metric {config.metric!r}; valid: {sorted(losses.TRIPLET_METRICS)}"
    )
  if config.average not in losses.BATCH_ALL_AVERAGES:
    raise ConfigError(
      f"Unknown objective.triplet.average {config.average!r}; "
      f"valid: {list(losses.BATCH_ALL_AVERAGES)}"
    )
  if config.margin < 0:
    raise ConfigError(f"objective.triplet.margin must be >= 0, got {config.margin!r}")


def loss(outputs, batch, state, ctx):
  """outputs.projections: [batch, 1 + S, n_views, dim]; only slot 0 (the real image) is used."""
  del state
  mine = _mining(ctx.config)
  return Loss(mine(outputs.projections[:, 0], batch["real_labels"], ctx.config), {})


def defaults(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """config.objective.triplet."""
  del c
  o = ml_collections.ConfigDict()
  # Batch-hard: Hermans et al. 2017's mining, which needs O(rows^2) memory (batch_all's O(rows^3)
  # does not fit paper batches).
  o.mining = "batch_hard"  # batch_hard | batch_all | plain
  o.margin = 0.2  # FaceNet's margin for unit-norm embeddings (z is L2-normalised)
  o.metric = "euclidean"  # plain distance: Hermans et al. found squared less stable
  o.average = "positive"  # batch_all: mean over the triplets with a nonzero hinge
  return o


OBJECTIVE = Objective(loss=loss, defaults=defaults, check_config=check_config)
