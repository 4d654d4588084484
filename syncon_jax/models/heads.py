"""Heads on top of the encoder: the contrastive projection MLP and a linear classifier."""

import jax
import jax.numpy as jnp
from flax import nnx


class ProjectionHead(nnx.Module):
  """SimCLR/SupCon projection MLP: Linear -> BatchNorm -> ReLU -> Linear.

  __call__: h [batch, in_dim] -> z [batch, out_dim] float32, not normalised (losses normalise).
  """

  def __init__(
    self,
    in_dim: int,
    hidden_dim: int,
    out_dim: int,
    *,
    bn_momentum: float,
    dtype: jnp.dtype = jnp.float32,
    rngs: nnx.Rngs,
  ):
    # No bias before BatchNorm: in train mode BN subtracts it again, so it would never learn.
    self.fc1 = nnx.Linear(
      in_dim, hidden_dim, use_bias=False, dtype=dtype, param_dtype=jnp.float32, rngs=rngs
    )
    self.bn = nnx.BatchNorm(
      hidden_dim, momentum=bn_momentum, dtype=dtype, param_dtype=jnp.float32, rngs=rngs
    )
    self.fc2 = nnx.Linear(hidden_dim, out_dim, dtype=dtype, param_dtype=jnp.float32, rngs=rngs)

  def __call__(self, h: jax.Array, *, train: bool) -> jax.Array:
    y = nnx.relu(self.bn(self.fc1(h), use_running_average=not train))
    return self.fc2(y).astype(jnp.float32)


class LinearClassifier(nnx.Module):
  """Linear layer for the supervised cross-entropy baseline.

  __call__: h [batch, in_dim] -> logits [batch, num_classes] float32.
  """

  def __init__(
    self, in_dim: int, num_classes: int, *, dtype: jnp.dtype = jnp.float32, rngs: nnx.Rngs
  ):
    self.fc = nnx.Linear(in_dim, num_classes, dtype=dtype, param_dtype=jnp.float32, rngs=rngs)

  def __call__(self, h: jax.Array) -> jax.Array:
    return self.fc(h).astype(jnp.float32)
