"""ResNet encoders (He et al. 2016) in Flax NNX, with CIFAR and ImageNet stems.

Layouts follow torchvision (v1.5: the stride of a bottleneck sits on its 3x3 conv, explicit
symmetric padding), so parameter counts match torchvision's minus the classifier. The encoder
ends in global average pooling and returns features [batch, feat_dim] in float32.

BatchNorm has no `axis_name`: under `jax.jit` with the batch sharded over a mesh, the batch
mean is already taken over the global batch, so the statistics are synced across devices.
"""

from collections.abc import Sequence
from typing import Literal

import jax
import jax.numpy as jnp
from flax import nnx

from syncon_jax.errors import ConfigError

STEMS = ("cifar", "imagenet")

# He-normal on fan_out, as torchvision initialises its convolutions.
_conv_init = nnx.initializers.variance_scaling(2.0, "fan_out", "normal")


def _conv(
  in_ch: int,
  out_ch: int,
  kernel: int,
  stride: int,
  *,
  dtype: jnp.dtype,
  rngs: nnx.Rngs,
) -> nnx.Conv:
  # Explicit symmetric padding: 'SAME' pads stride-2 convs asymmetrically, unlike torchvision.
  pad = (kernel - 1) // 2
  return nnx.Conv(
    in_ch,
    out_ch,
    (kernel, kernel),
    strides=(stride, stride),
    padding=((pad, pad), (pad, pad)),
    use_bias=False,  # a BatchNorm follows every conv
    kernel_init=_conv_init,
    dtype=dtype,
    param_dtype=jnp.float32,
    rngs=rngs,
  )


def _bn(ch: int, *, momentum: float, dtype: jnp.dtype, rngs: nnx.Rngs) -> nnx.BatchNorm:
  # Statistics are computed in float32 by nnx.BatchNorm even when `dtype` is bfloat16.
  return nnx.BatchNorm(ch, momentum=momentum, dtype=dtype, param_dtype=jnp.float32, rngs=rngs)


class BasicBlock(nnx.Module):
  """Two 3x3 convs plus an identity or 1x1-projection shortcut.

  [B, H, W, C] -> [B, H/s, W/s, planes].
  """

  expansion = 1

  def __init__(
    self,
    in_ch: int,
    planes: int,
    stride: int,
    *,
    bn_momentum: float,
    dtype: jnp.dtype,
    rngs: nnx.Rngs,
  ):
    out_ch = planes * self.expansion
    self.conv1 = _conv(in_ch, planes, 3, stride, dtype=dtype, rngs=rngs)
    self.bn1 = _bn(planes, momentum=bn_momentum, dtype=dtype, rngs=rngs)
    self.conv2 = _conv(planes, out_ch, 3, 1, dtype=dtype, rngs=rngs)
    self.bn2 = _bn(out_ch, momentum=bn_momentum, dtype=dtype, rngs=rngs)
    self.shortcut = _Shortcut(
      in_ch, out_ch, stride, bn_momentum=bn_momentum, dtype=dtype, rngs=rngs
    )

  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    ura = not train
    y = nnx.relu(self.bn1(self.conv1(x), use_running_average=ura))
    y = self.bn2(self.conv2(y), use_running_average=ura)
    return nnx.relu(y + self.shortcut(x, train=train))


class Bottleneck(nnx.Module):
  """1x1 reduce, 3x3 (strided), 1x1 expand by 4. [B, H, W, C] -> [B, H/s, W/s, 4 * planes]."""

  expansion = 4

  def __init__(
    self,
    in_ch: int,
    planes: int,
    stride: int,
    *,
    bn_momentum: float,
    dtype: jnp.dtype,
    rngs: nnx.Rngs,
  ):
    out_ch = planes * self.expansion
    self.conv1 = _conv(in_ch, planes, 1, 1, dtype=dtype, rngs=rngs)
    self.bn1 = _bn(planes, momentum=bn_momentum, dtype=dtype, rngs=rngs)
    self.conv2 = _conv(planes, planes, 3, stride, dtype=dtype, rngs=rngs)
    self.bn2 = _bn(planes, momentum=bn_momentum, dtype=dtype, rngs=rngs)
    self.conv3 = _conv(planes, out_ch, 1, 1, dtype=dtype, rngs=rngs)
    self.bn3 = _bn(out_ch, momentum=bn_momentum, dtype=dtype, rngs=rngs)
    self.shortcut = _Shortcut(
      in_ch, out_ch, stride, bn_momentum=bn_momentum, dtype=dtype, rngs=rngs
    )

  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    ura = not train
    y = nnx.relu(self.bn1(self.conv1(x), use_running_average=ura))
    y = nnx.relu(self.bn2(self.conv2(y), use_running_average=ura))
    y = self.bn3(self.conv3(y), use_running_average=ura)
    return nnx.relu(y + self.shortcut(x, train=train))


class _Shortcut(nnx.Module):
  """Identity, or 1x1 conv + BN when the shape changes (torchvision's `downsample`)."""

  def __init__(
    self,
    in_ch: int,
    out_ch: int,
    stride: int,
    *,
    bn_momentum: float,
    dtype: jnp.dtype,
    rngs: nnx.Rngs,
  ):
    # A bool rather than an Optional module: NNX refuses None later replaced by a module.
    self.project = stride != 1 or in_ch != out_ch
    if self.project:
      self.conv = _conv(in_ch, out_ch, 1, stride, dtype=dtype, rngs=rngs)
      self.bn = _bn(out_ch, momentum=bn_momentum, dtype=dtype, rngs=rngs)

  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    if not self.project:
      return x
    return self.bn(self.conv(x), use_running_average=not train)


class ResNet(nnx.Module):
  """ResNet trunk without classifier.

  __call__: images [batch, H, W, 3] (normalised floats) -> features [batch, feat_dim] float32,
  feat_dim = width * 2**(len(stage_sizes) - 1) * block.expansion.
  """

  def __init__(
    self,
    *,
    block: type[BasicBlock] | type[Bottleneck],
    stage_sizes: Sequence[int],
    stem: Literal["cifar", "imagenet"],
    width: int,
    bn_momentum: float,
    dtype: jnp.dtype = jnp.float32,
    in_channels: int = 3,
    rngs: nnx.Rngs,
  ):
    if stem not in STEMS:
      raise ConfigError(f"model.stem={stem!r} is not a known stem; valid: {list(STEMS)}")
    if width < 1:
      raise ConfigError(f"model.width must be a positive channel count, got {width!r}")
    self.stem_kind = stem
    if stem == "cifar":
      self.stem_conv = _conv(in_channels, width, 3, 1, dtype=dtype, rngs=rngs)
    else:
      self.stem_conv = _conv(in_channels, width, 7, 2, dtype=dtype, rngs=rngs)
    self.stem_bn = _bn(width, momentum=bn_momentum, dtype=dtype, rngs=rngs)

    blocks = []
    in_ch = width
    for i, n_blocks in enumerate(stage_sizes):
      planes = width * 2**i
      for j in range(n_blocks):
        stride = 2 if (i > 0 and j == 0) else 1
        blocks.append(block(in_ch, planes, stride, bn_momentum=bn_momentum, dtype=dtype, rngs=rngs))
        in_ch = planes * block.expansion
    self.blocks = nnx.List(blocks)
    self.feat_dim = in_ch

  def stem(self, x: jax.Array, *, train: bool) -> jax.Array:
    """[B, H, W, 3] -> [B, H, W, width] (cifar) or [B, ceil(H/4), ceil(W/4), width] (imagenet)."""
    x = nnx.relu(self.stem_bn(self.stem_conv(x), use_running_average=not train))
    if self.stem_kind == "imagenet":
      x = nnx.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    return x

  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    x = self.stem(x, train=train)
    for blk in self.blocks:
      x = blk(x, train=train)
    return jnp.mean(x, axis=(1, 2)).astype(jnp.float32)


def resnet18(**kwargs) -> ResNet:
  return ResNet(block=BasicBlock, stage_sizes=(2, 2, 2, 2), **kwargs)


def resnet50(**kwargs) -> ResNet:
  return ResNet(block=Bottleneck, stage_sizes=(3, 4, 6, 3), **kwargs)


def resnet_tiny(**kwargs) -> ResNet:
  """One basic block per stage: same stems and feat_dim as resnet18, for tests and CPU demos."""
  return ResNet(block=BasicBlock, stage_sizes=(1, 1, 1, 1), **kwargs)
