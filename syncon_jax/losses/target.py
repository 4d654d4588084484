"""The losses of the momentum-encoder methods, an online output against a target's with no
gradient to the target: MoCo's InfoNCE against a queue, and BYOL's regression. Both normalise
inside, as their references do.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from syncon_jax.losses.numerics import PRECISION, compute_dtype, l2_normalize, reduce_rows

Array = jax.Array


def moco_loss(
  q: Array, k: Array, queue: Array, *, temperature: float = 0.07, reduction: str = "mean"
) -> Array:
  """MoCo (v1/v2) InfoNCE: logits [q.k, q.queue] / T, cross-entropy with the positive first.

  Args:
    q: [n, c] queries, normalised inside.
    k: [n, c] keys, normalised inside; no gradient flows to them.
    queue: [K, c] negatives with unit-norm rows, used as is; no gradient flows to it.
    reduction: 'mean' or 'none'.
  Returns:
    'mean': scalar, the mean over the n queries; 'none': [n].
  """
  dtype = compute_dtype(q, k, queue)
  q = l2_normalize(q.astype(dtype), rsqrt=True)
  k = jax.lax.stop_gradient(l2_normalize(k.astype(dtype), rsqrt=True))
  queue = jax.lax.stop_gradient(queue.astype(dtype))
  l_pos = jnp.sum(q * k, axis=1, keepdims=True)
  l_neg = jnp.matmul(q, queue.T, precision=PRECISION)
  logits = jnp.concatenate([l_pos, l_neg], axis=1) / temperature
  return reduce_rows(jax.nn.logsumexp(logits, axis=1) - logits[:, 0], reduction)


def byol_loss(online_pred: Array, target_proj: Array) -> Array:
  """byol-pytorch's `loss_fn`: per-sample 2 - 2 cos(pred, target), no gradient to the target.

  Args:
    online_pred, target_proj: [batch, dim], normalised inside.
  Returns:
    [batch] (always per row); callers sum the two symmetric terms and average over the batch.
  """
  dtype = compute_dtype(online_pred, target_proj)
  x = l2_normalize(online_pred.astype(dtype), rsqrt=True)
  y = jax.lax.stop_gradient(l2_normalize(target_proj.astype(dtype), rsqrt=True))
  return 2 - 2 * jnp.sum(x * y, axis=-1)
