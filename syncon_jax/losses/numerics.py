"""What every loss computes in, how it reduces its rows, and the one L2 normalisation.

Similarities, softmax and reductions run in float32 for bf16/f16/f32 inputs and in float64 when
an input is float64 (`compute_dtype`); matmuls that feed a softmax run at full precision.
`l2_normalize` is the L2 normalisation every module uses (the losses, the train step's
projections, the objectives' targets, the weighting schemes, the evaluators and tools).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array

# Similarities are what the softmax sees: on TPU/GPU the default float32 matmul may drop to
# bf16/TF32 passes, which would make losses disagree with their references.
PRECISION = jax.lax.Precision.HIGHEST


def compute_dtype(*xs) -> jnp.dtype:
  """float32 for bf16/f16/f32 inputs, float64 when any input is float64."""
  dtype = jnp.float32
  for x in xs:
    dtype = jnp.promote_types(dtype, jnp.asarray(x).dtype)
  return jnp.dtype(dtype)


def l2_normalize(x: Array, axis: int = -1, eps: float = 1e-12, *, rsqrt: bool = False) -> Array:
  """`x / max(||x||, eps)` along `axis`, as torch's F.normalize: shape and dtype of x, a zero
  row stays zero, and its gradient is finite there (1 / eps).

  rsqrt: compute it as x / sqrt(max(sum x^2, eps^2)), the same value, which XLA turns into
  x * rsqrt(...): that rounds differently, forward and backward. The losses that normalise inside
  use it (ntxent, multipos, moco, byol, the cosine triplet metric); everything else (the train
  step, objectives, weighting schemes, evaluators, tools) uses the norm-then-divide default. One
  form for both would move SimCLR's recorded 10-step loss curve by 3e-5 and BYOL's by 1e-4.
  """
  if rsqrt:
    sq = jnp.sum(x * x, axis=axis, keepdims=True)
    return x / jnp.sqrt(jnp.maximum(sq, eps * eps))
  # The norm's own gradient is NaN at a zero row: give it a nonzero row there instead.
  nonzero = jnp.any(x != 0, axis=axis, keepdims=True)
  norm = jnp.linalg.norm(jnp.where(nonzero, x, 1), axis=axis, keepdims=True)
  return x / jnp.maximum(jnp.where(nonzero, norm, 0), eps)


# How a loss reduces its rows (a public loss's `reduction` argument).
REDUCTIONS = ("mean", "none")


def reduce_rows(per_row: Array, reduction: str, mean=jnp.mean) -> Array:
  """per_row [n] -> 'mean': mean(per_row), a scalar; 'none': per_row [n] as it is."""
  return {"mean": mean, "none": lambda rows: rows}[reduction](per_row)
