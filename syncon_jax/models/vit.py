"""Vision Transformer encoders (Dosovitskiy et al. 2021) in Flax NNX, after big_vision's vit.py.

The layout follows google-research/big_vision (models/vit.py): a patch-embedding convolution,
positional embeddings added to the patch tokens *before* a class token is prepended, pre-LN
blocks (LayerNorm -> multi-head self-attention -> residual, LayerNorm -> GELU MLP -> residual),
a final LayerNorm, then pooling: 'gap' (mean over the tokens, big_vision's default) or 'cls'
(the class token, big_vision's 'tok'). No classifier: the pooled vector is the representation.

Sizes come from a big_vision-style variant string, "<size>/<patch>": Ti, S, B as in Table 2 of
Steiner et al. 2021 ("How to train your ViT", arXiv 2106.04560), e.g. "S/16"; "tiny" is ours,
for tests and CPU demos. At 224 px with 'cls' pooling and learned positional embeddings,
Ti/16, S/16 and B/16 hold 5,524,224 / 21,665,280 / 85,797,888 parameters: timm's published
vit_{tiny,small,base}_patch16_224 counts (5,717,416 / 22,050,664 / 86,567,656, the "5.7M, 22M,
86M" of DeiT's Table 1) less the 1000-class head and the one positional-embedding row that timm
gives the class token (tests/test_vit.py checks this).

Computation runs in `dtype` (bfloat16 under model.dtype='bfloat16'); parameters are float32
and the output is float32, as for the ResNets.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from syncon_jax.errors import ConfigError

POOLS = ("gap", "cls")
POSEMBS = ("learn", "sincos2d")


class Size(NamedTuple):
  width: int
  depth: int
  mlp_dim: int
  num_heads: int


# Steiner et al. 2021, Table 2 (big_vision's decode_variant); "tiny" runs a test in seconds.
SIZES: dict[str, Size] = {
  "tiny": Size(width=32, depth=2, mlp_dim=64, num_heads=2),
  "Ti": Size(width=192, depth=12, mlp_dim=768, num_heads=3),
  "S": Size(width=384, depth=12, mlp_dim=1536, num_heads=6),
  "B": Size(width=768, depth=12, mlp_dim=3072, num_heads=12),
}


def decode_variant(variant: str) -> tuple[Size, int]:
  """ "S/16" -> (SIZES["S"], 16). ConfigError naming model.variant for anything else."""
  size, sep, patch = str(variant).partition("/")
  if size not in SIZES or not sep or not patch.isdigit() or int(patch) < 1:
    raise ConfigError(
      f"model.variant={variant!r} is not '<size>/<patch size>' with size in {list(SIZES)} "
      "(e.g. 'S/16')"
    )
  return SIZES[size], int(patch)


def posemb_sincos_2d(h: int, w: int, width: int, temperature: float = 10_000.0) -> np.ndarray:
  """Fixed 2-D sine-cosine embeddings (MoCo v3, big_vision): float32 [1, h * w, width].

  A quarter of the channels each: sin(x), cos(x), sin(y), cos(y) at geometric frequencies.
  """
  if width % 4:
    raise ConfigError(f"model.posemb='sincos2d' needs a width divisible by 4, got {width}")
  y, x = np.mgrid[:h, :w]
  omega = 1.0 / temperature ** (np.arange(width // 4) / max(width // 4 - 1, 1))
  x = np.outer(x.ravel(), omega)
  y = np.outer(y.ravel(), omega)
  return np.concatenate([np.sin(x), np.cos(x), np.sin(y), np.cos(y)], axis=1)[None].astype(
    np.float32
  )


class MlpBlock(nnx.Module):
  """Dense -> GELU -> Dense. [B, L, width] -> [B, L, width]."""

  def __init__(self, width: int, mlp_dim: int, *, dtype: jnp.dtype, rngs: nnx.Rngs):
    # big_vision's initialisers: Xavier-uniform kernels, near-zero biases.
    kw = dict(
      kernel_init=nnx.initializers.xavier_uniform(),
      bias_init=nnx.initializers.normal(stddev=1e-6),
      dtype=dtype,
      param_dtype=jnp.float32,
      rngs=rngs,
    )
    self.fc1 = nnx.Linear(width, mlp_dim, **kw)
    self.fc2 = nnx.Linear(mlp_dim, width, **kw)

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.fc2(nnx.gelu(self.fc1(x)))


class EncoderBlock(nnx.Module):
  """Pre-LN transformer block: x + MHSA(LN(x)), then x + MLP(LN(x)). [B, L, D] -> [B, L, D]."""

  def __init__(self, size: Size, *, dtype: jnp.dtype, rngs: nnx.Rngs):
    ln = dict(dtype=dtype, param_dtype=jnp.float32, rngs=rngs)
    self.norm1 = nnx.LayerNorm(size.width, **ln)
    self.attn = nnx.MultiHeadAttention(
      num_heads=size.num_heads,
      in_features=size.width,
      kernel_init=nnx.initializers.xavier_uniform(),
      dtype=dtype,
      param_dtype=jnp.float32,
      decode=False,
      deterministic=True,  # no attention dropout (big_vision's default rate is 0)
      rngs=rngs,
    )
    self.norm2 = nnx.LayerNorm(size.width, **ln)
    self.mlp = MlpBlock(size.width, size.mlp_dim, dtype=dtype, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    y = self.norm1(x)
    x = x + self.attn(y, y, y)
    return x + self.mlp(self.norm2(x))


class ViT(nnx.Module):
  """ViT trunk without classifier.

  __call__: images [batch, image_size, image_size, C] (normalised floats) -> features
  [batch, width] float32. `train` is accepted for the encoder interface and changes nothing
  (no dropout, no BatchNorm).
  """

  def __init__(
    self,
    *,
    variant: str,
    image_size: int,
    pool: str = "gap",
    posemb: str = "learn",
    dtype: jnp.dtype = jnp.float32,
    in_channels: int = 3,
    rngs: nnx.Rngs,
  ):
    size, patch = decode_variant(variant)
    if pool not in POOLS:
      raise ConfigError(f"model.pool={pool!r} is not a ViT pooling; valid: {list(POOLS)}")
    if posemb not in POSEMBS:
      raise ConfigError(f"model.posemb={posemb!r} is not known; valid: {list(POSEMBS)}")
    if not isinstance(image_size, int | np.integer) or image_size < 1 or image_size % patch:
      raise ConfigError(
        f"model.image_size={image_size!r} must be a positive multiple of the patch size "
        f"{patch} (model.variant={variant!r})"
      )
    self.pool = pool
    self.posemb_kind = posemb
    self.grid = image_size // patch
    self.feat_dim = size.width
    self.dtype = dtype
    self.embedding = nnx.Conv(
      in_channels,
      size.width,
      (patch, patch),
      strides=(patch, patch),
      padding="VALID",
      dtype=dtype,
      param_dtype=jnp.float32,
      rngs=rngs,
    )
    tokens = self.grid * self.grid
    if posemb == "learn":
      init = nnx.initializers.normal(stddev=1 / np.sqrt(size.width))
      self.pos_embedding = nnx.Param(init(rngs.params(), (1, tokens, size.width), jnp.float32))
    if pool == "cls":
      self.cls = nnx.Param(jnp.zeros((1, 1, size.width), jnp.float32))
    self.blocks = nnx.List([EncoderBlock(size, dtype=dtype, rngs=rngs) for _ in range(size.depth)])
    self.encoder_norm = nnx.LayerNorm(size.width, dtype=dtype, param_dtype=jnp.float32, rngs=rngs)

  def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
    del train
    x = self.embedding(x)  # [B, grid, grid, width]
    b, h, w, c = x.shape
    if (h, w) != (self.grid, self.grid):
      raise ValueError(
        f"ViT built for {self.grid}x{self.grid} patches (model.image_size) got {h}x{w}"
      )
    if self.posemb_kind == "learn":
      posemb = self.pos_embedding[...]
    else:
      # A constant of the shapes (folded by XLA): neither trained nor checkpointed.
      posemb = posemb_sincos_2d(h, w, c)
    x = x.reshape(b, h * w, c) + jnp.asarray(posemb).astype(x.dtype)
    if self.pool == "cls":
      x = jnp.concatenate([jnp.broadcast_to(self.cls[...].astype(x.dtype), (b, 1, c)), x], axis=1)
    for block in self.blocks:
      x = block(x)
    x = self.encoder_norm(x)
    x = x[:, 0] if self.pool == "cls" else jnp.mean(x, axis=1)
    return x.astype(jnp.float32)


def vit_from_config(model_config, *, dtype: jnp.dtype, rngs: nnx.Rngs) -> ViT:
  """The registry's constructor: reads model.variant, image_size, pool, posemb."""
  missing = [k for k in ("variant", "image_size", "pool", "posemb") if k not in model_config]
  if missing:
    raise ConfigError(
      f"model.name='vit' needs config.model keys {missing} (configs/common.py:vit_config)"
    )
  return ViT(
    variant=model_config.variant,
    image_size=model_config.image_size,
    pool=model_config.pool,
    posemb=model_config.posemb,
    dtype=dtype,
    rngs=rngs,
  )
