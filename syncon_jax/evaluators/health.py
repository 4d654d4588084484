"""Representation health: signals of collapse and of how the embedding spreads.

- RankMe (Garrido et al. 2023): the effective rank exp(H(p)) of the feature matrix, p the
  singular values normalised to sum 1 (plus eps). Near 1: collapse; up to min(N, D).
- The mean per-dimension std of L2-normalised embeddings (lightly's `std_of_l2_normalized`):
  about 1/sqrt(D) when the embeddings spread over the sphere, 0 when they collapse.
- Alignment and uniformity (Wang & Isola 2020): E ||f(x) - f(x+)||^alpha over positive pairs
  (lower is better) and log E exp(-t ||f(x) - f(y)||^2) over distinct pairs (lower is better),
  on L2-normalised embeddings, alpha = 2, t = 2 as in the paper.
- Real versus synthetic similarity: how close synthetic images sit to their class's real images.

jax.numpy throughout, so the train step logs them inside its jit and linear_eval calls the same
functions on host arrays.
"""

import jax
import jax.numpy as jnp

from syncon_jax.losses import l2_normalize


def _unit(x: jax.Array) -> jax.Array:
  """Rows of x (host or device, any float dtype) as float32 unit rows."""
  return l2_normalize(jnp.asarray(x, jnp.float32))


def rankme(x: jax.Array, eps: float = 1e-7) -> jax.Array:
  """x: [N, D] -> scalar, exp(-sum_k p_k log p_k), p_k = sigma_k / sum(sigma) + eps."""
  s = jnp.linalg.svd(jnp.asarray(x, jnp.float32), compute_uv=False)
  p = s / jnp.maximum(jnp.sum(s), 1e-12) + eps
  return jnp.exp(-jnp.sum(p * jnp.log(p)))


def normalized_std(x: jax.Array) -> jax.Array:
  """x: [N, D] -> scalar, mean over dims of the (unbiased) std over rows of L2-normalised x."""
  return jnp.mean(jnp.std(_unit(x), axis=0, ddof=1))


def alignment(a: jax.Array, b: jax.Array, alpha: float = 2.0) -> jax.Array:
  """a, b: [N, D] positive pairs (row i of a with row i of b), normalised here -> scalar."""
  return jnp.mean(jnp.linalg.norm(_unit(a) - _unit(b), axis=-1) ** alpha)


def uniformity(x: jax.Array, t: float = 2.0) -> jax.Array:
  """x: [N, D], normalised here -> scalar, log mean over pairs i < j of exp(-t ||x_i - x_j||^2)."""
  u = _unit(x)
  n = u.shape[0]
  sq = jnp.maximum(2.0 - 2.0 * (u @ u.T), 0.0)
  pairs = jnp.triu(jnp.ones((n, n), bool), k=1)
  logits = jnp.where(pairs, -t * sq, -jnp.inf)
  return jax.nn.logsumexp(logits) - jnp.log(n * (n - 1) / 2)


def real_synthetic_similarity(
  real: jax.Array,
  real_labels: jax.Array,
  synthetic: jax.Array,
  synthetic_labels: jax.Array,
  num_classes: int,
) -> dict:
  """How synthetic features sit against the real class prototypes (host-side, not jitted).

  real: [N, D], real_labels: [N], synthetic: [M, D], synthetic_labels: [M]. A prototype is the
  normalised mean of a class's normalised real features.
  -> {"real_to_own_prototype": mean cos of real rows to their class prototype,
      "synthetic_to_own_prototype": the same for synthetic rows (real prototypes),
      "synthetic_nearest_prototype_top1": share of synthetic rows whose nearest real prototype is
        their own class, "domain_mean_cos": cos of the real mean and the synthetic mean,
      "per_class_synthetic_to_own_prototype": [num_classes] (None: no synthetic row)}.
  """
  r, s = _unit(real), _unit(synthetic)
  onehot = jax.nn.one_hot(real_labels, num_classes)
  protos = _unit(onehot.T @ r)  # [C, D]
  real_cos = jnp.sum(r * protos[real_labels], axis=-1)
  syn_all = s @ protos.T  # [M, C]
  syn_cos = syn_all[jnp.arange(len(s)), synthetic_labels]
  count = jnp.bincount(synthetic_labels, length=num_classes)
  per_class = jnp.bincount(synthetic_labels, weights=syn_cos, length=num_classes) / jnp.maximum(
    count, 1
  )
  return {
    "real_to_own_prototype": float(jnp.mean(real_cos)),
    "synthetic_to_own_prototype": float(jnp.mean(syn_cos)),
    "synthetic_nearest_prototype_top1": float(
      jnp.mean(jnp.argmax(syn_all, axis=1) == synthetic_labels)
    ),
    "domain_mean_cos": float(jnp.sum(_unit(jnp.mean(r, 0)) * _unit(jnp.mean(s, 0)))),
    "per_class_synthetic_to_own_prototype": [
      float(v) if n else None for v, n in zip(per_class, count, strict=True)
    ],
  }


def step_health(features: jax.Array, z: jax.Array, synthetic_valid: jax.Array) -> dict:
  """The health metrics the train step logs (inside jit), from one global batch.

  features: [b, 1 + S, V, feat_dim] encoder features; z: [b, 1 + S, V, dim] L2-normalised
  projections; synthetic_valid: [b, S] bool. RankMe and the normalised std read the real
  images' first-view encoder features (what linear_eval probes); alignment pairs the real
  images' first two views in z (the loss's space), uniformity their first view;
  `real_synthetic_cos` is the mean cos of a real image's features to its valid synthetic
  images' (same class; NaN-free 0 when there are none), `real_real_cos` the mean over distinct
  real pairs for reference.
  """
  h = features[:, 0, 0]
  out = {
    "health/rankme": rankme(h),
    "health/feature_std": normalized_std(h),
    "health/uniformity": uniformity(z[:, 0, 0]),
  }
  if z.shape[2] >= 2:
    out["health/alignment"] = alignment(z[:, 0, 0], z[:, 0, 1])
  u = _unit(h)
  b = u.shape[0]
  out["health/real_real_cos"] = (jnp.sum(u @ u.T) - jnp.sum(u * u)) / max(b * (b - 1), 1)
  if features.shape[1] > 1:
    syn = _unit(features[:, 1:, 0])  # [b, S, F]
    cos = jnp.einsum("bf,bsf->bs", u, syn)
    n = jnp.sum(synthetic_valid)
    out["health/real_synthetic_cos"] = jnp.sum(jnp.where(synthetic_valid, cos, 0.0)) / jnp.maximum(
      n, 1
    )
  return out
