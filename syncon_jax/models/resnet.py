"""ResNet encoders (He et al. 2016) in Flax NNX, with CIFAR and ImageNet stems.

Layouts follow torchvision (v1.5: the stride of a bottleneck sits on its 3x3 conv, explicit
symmetric padding), so parameter counts match torchvision's minus the classifier. The encoder
ends in global average pooling and returns features [batch, feat_dim] in float32.

BatchNorm has no `axis_name`: under `jax.jit` with the batch sharded over a mesh, the batch
mean is already taken over the global batch, so the statistics are synced across devices.
"""

import functools
from collections.abc import Sequence
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from syncon_jax import platform
from syncon_jax.errors import ConfigError

STEMS = ("cifar", "imagenet")

# He-normal on fan_out, as torchvision initialises its convolutions.
_conv_init = nnx.initializers.variance_scaling(2.0, "fan_out", "normal")

# A convolution onto at most this many output pixels runs as one matmul (small_map_conv).
DENSE_MAX_OUT_PIXELS = 4
_NHWC = ("NHWC", "HWIO", "NHWC")


@functools.lru_cache(maxsize=64)
def _taps(h: int, w: int, kh: int, kw: int, strides: tuple, padding: tuple) -> np.ndarray:
  """float32 [h, w, ho, wo, kh, kw]: 1 where input pixel (p, q) reaches output (i, j) through
  kernel tap (a, b) (p = i * stride + a - pad_lo), 0 elsewhere and over the zero padding."""
  (sh, sw), ((pt, pb), (pl, pr)) = strides, padding
  ho, wo = (h + pt + pb - kh) // sh + 1, (w + pl + pr - kw) // sw + 1
  t = np.zeros((h, w, ho, wo, kh, kw), np.float32)
  for i, j, a, b in np.ndindex(ho, wo, kh, kw):
    p, q = i * sh + a - pt, j * sw + b - pl
    if 0 <= p < h and 0 <= q < w:
      t[p, q, i, j, a, b] = 1.0
  return t


def small_map_conv(
  inputs,
  kernel,
  window_strides,
  padding,
  lhs_dilation=None,
  rhs_dilation=None,
  dimension_numbers=None,
  feature_group_count=1,
  precision=None,
  **kwargs,
):
  """`lax.conv_general_dilated` (nnx.Conv's hook), except that a convolution onto at most
  DENSE_MAX_OUT_PIXELS output pixels is one matmul: inputs [n, h, w, c] flattened, times the
  kernel unfolded to [h * w * c, ho * wo * c_out] (`_taps`). Equal up to summation order.

  Why: XLA:CPU's convolution on tiny maps is far below its matmul. ResNet-18's last stage on
  16 px images (2x2 maps, 64 channels, 512 views) took 17.7 ms for value and gradient as a
  convolution and 1.14 ms as a matmul (2026-12-03, 2-core Intel Xeon, idle); the stride-2 entry
  (4x4 -> 2x2) 9.3 ms against 3.2. On a 4x4 output the two tied and larger maps favour the
  convolution, whose unfolded kernel grows as the square of the map.
  """
  n, h, w, c = inputs.shape
  kh, kw, _, c_out = kernel.shape
  strides, pads = tuple(window_strides), tuple(tuple(p) for p in padding)
  ho = (h + pads[0][0] + pads[0][1] - kh) // strides[0] + 1
  wo = (w + pads[1][0] + pads[1][1] - kw) // strides[1] + 1
  plain = (
    dimension_numbers != jax.lax.conv_dimension_numbers(inputs.shape, kernel.shape, _NHWC)
    or any(d != 1 for d in (*(lhs_dilation or ()), *(rhs_dilation or ())))
    or feature_group_count != 1
    or any(v is not None for v in kwargs.values())
    or kh * kw == 1
    or ho * wo > DENSE_MAX_OUT_PIXELS
  )
  if plain:
    return jax.lax.conv_general_dilated(
      inputs,
      kernel,
      window_strides,
      padding,
      lhs_dilation=lhs_dilation,
      rhs_dilation=rhs_dilation,
      dimension_numbers=dimension_numbers,
      feature_group_count=feature_group_count,
      precision=precision,
      **kwargs,
    )
  taps = jnp.asarray(_taps(h, w, kh, kw, strides, pads), kernel.dtype)
  dense = jnp.einsum("pqijab,abcd->pqcijd", taps, kernel).reshape(h * w * c, ho * wo * c_out)
  out = jnp.dot(inputs.reshape(n, h * w * c), dense, precision=precision)
  return out.reshape(n, ho, wo, c_out)


def fusion_fence(x: jax.Array, like: jax.Array) -> jax.Array:
  """x, bitwise in value and gradient, as a value XLA:CPU computes once before it transposes it.

  Why: for each convolution's weight gradient XLA:CPU copies the convolution's input into
  [c, h, w, n] order, and its instruction fusion duplicates the cheap elementwise ops that
  produced that input (BatchNorm, ReLU, the residual adds of the blocks before) into the
  transposing copy, recomputing them in transposed order. One such copy of the standard step
  (ResNet-18 width 64, 256 views of 32 px; [64, 32, 32, 256]) took 1.07 s, a plain transpose of
  the same array 0.085 s; all of them 7.8 of the step's ~20 s (2026-12-03, 2-core AMD EPYC,
  jax.profiler). XLA never duplicates an expensive producer, and a division is expensive to it:
  x / one, with `one` a runtime 1 that XLA cannot fold (1 + 0 * an entry of `like`), keeps the
  chain in one loop whose result the copy reads. Dividing by 1 is exact. Only on CPU, and only
  with the project's CPU defaults (platform.cpu_defaults_on); a non-finite `like` entry makes
  x NaN, as the convolution with that kernel would.
  """
  if jax.default_backend() != "cpu" or not platform.cpu_defaults_on():
    return x
  one = 1 + 0 * jax.lax.stop_gradient(like.reshape(-1)[0]).astype(x.dtype)
  return x / one


def fenced_conv(inputs, kernel, *args, **kwargs):
  """nnx.Conv's convolution hook: small_map_conv of fusion_fence(inputs)."""
  return small_map_conv(fusion_fence(inputs, kernel), kernel, *args, **kwargs)


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
    conv_general_dilated=fenced_conv,
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
