"""Alignment and uniformity (Wang and Isola 2020, "Understanding Contrastive Representation
Learning through Alignment and Uniformity on the Hypersphere"): the two properties the
contrastive loss optimises in the limit of many negatives, as a loss of their own, on two views
of the real images; labels unused.

  align(x, y)  = mean_i ||x_i - y_i||^alpha                  x_i, y_i: the two views of image i
  uniform(x)   = log mean_{i < j} exp(-t ||x_i - x_j||^2)     over the global batch's images
  loss         = align(x, y) + uniform_weight * (uniform(x) + uniform(y)) / 2

x, y are the L2-normalised projections (slot 0) of view 0 and view 1, as in the authors' code
(`align_loss`, `uniform_loss` on normalised features, with `torch.pdist` for the pairs i < j).
Their defaults: alpha = 2, t = 2, weight 1. O(b^2) memory, as SimCLR's dense similarity matrix.
"""

import jax
import jax.numpy as jnp
import ml_collections

from syncon_jax.errors import ConfigError
from syncon_jax.objectives import Loss, Objective


def defaults(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """config.objective.align_uniform: the authors' defaults."""
  del c
  o = ml_collections.ConfigDict()
  o.alpha = 2.0  # the alignment's power of the distance
  o.t = 2.0  # the uniformity's Gaussian kernel scale
  o.uniform_weight = 1.0  # lambda of align + lambda * uniform
  return o


def check_config(config) -> None:
  if config.n_views != 2:
    raise ConfigError(f"objective align_uniform needs objective.n_views=2, got {config.n_views}")
  for key in ("alpha", "t"):
    if not config[key] > 0:
      raise ConfigError(f"objective.align_uniform.{key} must be > 0, got {config[key]!r}")
  if not config.uniform_weight >= 0:
    raise ConfigError(
      f"objective.align_uniform.uniform_weight must be >= 0, got {config.uniform_weight!r}"
    )


def align(x: jax.Array, y: jax.Array, alpha: float) -> jax.Array:
  """x, y: [n, dim] -> mean ||x_i - y_i||^alpha, a scalar."""
  squared = jnp.sum(jnp.square(x - y), axis=-1)
  return jnp.mean(squared ** (alpha / 2))


def uniform(x: jax.Array, t: float) -> jax.Array:
  """x: [n, dim], n >= 2 -> log mean over the pairs i < j of exp(-t ||x_i - x_j||^2), a scalar."""
  n = x.shape[0]
  norms = jnp.sum(jnp.square(x), axis=-1)
  # |a|^2 + |b|^2 - 2 a.b, clipped: rounding can make a distance of 0 slightly negative.
  squared = jnp.maximum(norms[:, None] + norms[None, :] - 2.0 * x @ x.T, 0.0)
  upper = jnp.triu(jnp.ones((n, n), bool), k=1)
  pairs = n * (n - 1) / 2
  return jax.nn.logsumexp(jnp.where(upper, -t * squared, -jnp.inf)) - jnp.log(pairs)


def loss(outputs, batch, state, ctx):
  """outputs.projections: [batch, 1 + S, 2, dim]; only slot 0 (the real image)."""
  del batch, state
  z = outputs.projections[:, 0]
  x, y = z[:, 0], z[:, 1]
  c = ctx.config
  a = align(x, y, c.alpha)
  u = (uniform(x, c.t) + uniform(y, c.t)) / 2
  return Loss(a + c.uniform_weight * u, {"align": a, "uniform": u})


OBJECTIVE = Objective(loss=loss, defaults=defaults, check_config=check_config)
