"""Triplet losses: given triplets, batch-hard mining (Hermans et al. 2017) and batch-all mining,
under a metric of TRIPLET_METRICS.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp

from syncon_jax.losses.numerics import PRECISION, compute_dtype, l2_normalize, reduce_rows

Array = jax.Array


def _safe_sqrt(sq: Array) -> Array:
  """sqrt with gradient 0 (not inf/NaN) at 0."""
  positive = sq > 0
  return jnp.where(positive, jnp.sqrt(jnp.where(positive, sq, 1)), 0)


_unit = functools.partial(l2_normalize, rsqrt=True)


def _sq_dist(x: Array, y: Array) -> Array:
  sq = (
    jnp.sum(x * x, -1)[:, None]
    + jnp.sum(y * y, -1)[None, :]
    - 2 * jnp.matmul(x, y.T, precision=PRECISION)
  )
  return jnp.maximum(sq, 0)  # rounding can make |x - x|^2 slightly negative


TRIPLET_METRICS: dict[str, Callable[[Array, Array], Array]] = {
  # Pairwise [n, m] distances between rows of x and y.
  "euclidean": lambda x, y: _safe_sqrt(_sq_dist(x, y)),
  "squared_euclidean": _sq_dist,
  # 1 - cos: with it the triplet loss is max(0, sim(a, n) - sim(a, p) + margin).
  "cosine": lambda x, y: 1 - jnp.matmul(_unit(x), _unit(y).T, precision=PRECISION),
}

_PAIRED_METRICS: dict[str, Callable[[Array, Array], Array]] = {
  "euclidean": lambda x, y: _safe_sqrt(jnp.sum((x - y) ** 2, -1)),
  "squared_euclidean": lambda x, y: jnp.sum((x - y) ** 2, -1),
  "cosine": lambda x, y: 1 - jnp.sum(_unit(x) * _unit(y), -1),
}


def triplet_loss(
  anchor: Array,
  positive: Array,
  negative: Array,
  *,
  margin: float,
  metric: str = "euclidean",
  reduction: str = "mean",
) -> Array:
  """max(0, d(a_i, p_i) - d(a_i, n_i) + margin) over given triplets.

  Args:
    anchor, positive, negative: [batch, dim].
    metric: 'euclidean', 'squared_euclidean' or 'cosine' (d = 1 - cos).
    reduction: 'mean' or 'none'.
  Returns:
    'mean': scalar, the mean over the batch; 'none': [batch], triplet i's hinge.
  """
  dist = _PAIRED_METRICS[metric]
  dtype = compute_dtype(anchor, positive, negative)
  a, p, n = (x.astype(dtype) for x in (anchor, positive, negative))
  return reduce_rows(jax.nn.relu(dist(a, p) - dist(a, n) + margin), reduction)


def _pairs(embeddings: Array, labels: Array, metric: str) -> tuple[Array, Array, Array]:
  """-> distances [batch, batch] under metric, positive pairs (same label, not the anchor itself)
  and negative pairs (another label), both [batch, batch] bool."""
  x = embeddings.astype(compute_dtype(embeddings))
  dist = TRIPLET_METRICS[metric](x, x)
  labels = jnp.asarray(labels)
  same = labels[:, None] == labels[None, :]
  return dist, same & ~jnp.eye(labels.shape[0], dtype=bool), ~same


def batch_hard_triplet_loss(
  embeddings: Array,
  labels: Array,
  *,
  margin: float,
  metric: str = "euclidean",
  reduction: str = "mean",
) -> Array:
  """Batch-hard mining (Hermans et al. 2017): per anchor the farthest positive and the
  nearest negative in the batch.

  Args:
    embeddings: [batch, dim]; labels: [batch] int.
    reduction: 'mean' or 'none'.
  Returns:
    'mean': scalar, the mean of max(0, d(a, hardest p) - d(a, hardest n) + margin) over the
    anchors that have at least one positive and one negative (0 when none has). 'none':
    [batch], 0 for an anchor without a positive or a negative.
  """
  dist, pos_mask, neg_mask = _pairs(embeddings, labels, metric)
  has = jnp.any(pos_mask, 1) & jnp.any(neg_mask, 1)
  hardest_pos = jnp.max(jnp.where(pos_mask, dist, 0), axis=1)
  hardest_neg = jnp.min(jnp.where(neg_mask, dist, jnp.inf), axis=1)
  per_anchor = jnp.where(has, jax.nn.relu(hardest_pos - jnp.where(has, hardest_neg, 0) + margin), 0)
  mean = lambda rows: jnp.sum(rows) / jnp.maximum(jnp.sum(has), 1)
  return reduce_rows(per_anchor, reduction, mean)


BATCH_ALL_AVERAGES = ("positive", "all")


def batch_all_triplet_loss(
  embeddings: Array,
  labels: Array,
  *,
  margin: float,
  metric: str = "euclidean",
  average: str = "positive",
) -> Array:
  """Batch-all mining: every (a, p, n) in the batch with label[a] == label[p], a != p and
  label[n] != label[a]. Builds a [batch, batch, batch] tensor: for modest batches. No per-row
  form: its average is over triplets, not anchors.

  Args:
    embeddings: [batch, dim]; labels: [batch] int.
    average: 'positive' divides the summed hinge by the number of triplets with a positive
      loss (the usual "BA != 0" form), 'all' by the number of valid triplets.
  Returns:
    Scalar (0 when no triplet counts).
  """
  dist, pos_mask, neg_mask = _pairs(embeddings, labels, metric)
  valid = pos_mask[:, :, None] & neg_mask[:, None, :]
  hinge = jnp.where(valid, jax.nn.relu(dist[:, :, None] - dist[:, None, :] + margin), 0)
  # Counting "positive" with a tolerance keeps float round-off from adding empty triplets.
  counted = {"positive": hinge > 1e-16, "all": valid}[average]
  return jnp.sum(hinge) / jnp.maximum(jnp.sum(counted), 1)
