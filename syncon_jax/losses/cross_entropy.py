"""The supervised baseline's loss: softmax cross-entropy of integer labels."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from syncon_jax.losses.numerics import compute_dtype, reduce_rows

Array = jax.Array


def softmax_cross_entropy(
  logits: Array, labels: Array, *, label_smoothing: float = 0.0, reduction: str = "mean"
) -> Array:
  """Cross-entropy of integer labels, as torch's CrossEntropyLoss(label_smoothing=eps):
  target = (1 - eps) * one_hot + eps / n_classes.

  Args:
    logits: [batch, n_classes]; labels: [batch] int.
    reduction: 'mean' or 'none'.
  Returns:
    'mean': scalar, the mean over the batch; 'none': [batch].
  """
  log_p = jax.nn.log_softmax(logits.astype(compute_dtype(logits)), axis=-1)
  nll = -jnp.take_along_axis(log_p, jnp.asarray(labels)[:, None], axis=-1)[:, 0]
  smooth = -jnp.mean(log_p, axis=-1)
  return reduce_rows((1 - label_smoothing) * nll + label_smoothing * smooth, reduction)
