"""Model registry: encoder + projection head built from `config.model`.

model = create_model(config.model, rngs=nnx.Rngs(config.seed))
h, z = model(images, train=True)   # h [B, feat_dim], z [B, proj_dim], both float32
p = model.predict(z, train=True)  # BYOL's predictor [B, proj_dim], if model.predictor_hidden_dim > 0
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from syncon_jax.errors import ConfigError
from syncon_jax.models.heads import LinearClassifier, ProjectionHead
from syncon_jax.models.resnet import ResNet, resnet18, resnet50, resnet_tiny
from syncon_jax.models.vit import ViT, vit_from_config


def _resnet(ctor: Callable[..., ResNet]) -> Callable[..., ResNet]:
  def build(model_config, *, dtype, rngs) -> ResNet:
    return ctor(
      stem=model_config.stem,
      width=model_config.width,
      bn_momentum=model_config.bn_momentum,
      dtype=dtype,
      rngs=rngs,
    )

  return build


# name -> constructor(model_config, *, dtype, rngs) -> encoder with .feat_dim, called
# encoder(images, train=...) -> [batch, feat_dim] float32. Each reads its own model.* keys.
MODELS: dict[str, Callable[..., ResNet | ViT]] = {
  "resnet18": _resnet(resnet18),
  "resnet50": _resnet(resnet50),
  "resnet_tiny": _resnet(resnet_tiny),
  "vit": vit_from_config,  # model.variant ('Ti/16', 'S/16', 'B/16', 'tiny/4'), pool, posemb, image_size
}

DTYPES: dict[str, jnp.dtype] = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}

_REQUIRED_KEYS = ("name", "stem", "width", "proj_hidden_dim", "proj_dim", "dtype", "bn_momentum")


class ContrastiveModel(nnx.Module):
  """Encoder followed by a projection head, and optionally BYOL's predictor.

  __call__: images [batch, H, W, 3] -> (h [batch, feat_dim], z [batch, proj_dim]), float32;
  z is not normalised.
  predict: z [batch, proj_dim] -> [batch, proj_dim] float32, the online predictor (BYOL).

  The predictor lives in the model rather than in the objective's state so that the same
  optimiser (LARS, weight decay, schedule), BatchNorm statistics and checkpoint item
  (`predictor`) serve it as the rest of the online network, as in BYOL.
  """

  def __init__(
    self, encoder: ResNet | ViT, head: ProjectionHead, predictor: ProjectionHead | None = None
  ):
    self.encoder = encoder
    self.head = head
    self.feat_dim = encoder.feat_dim
    # A bool, not `self.predictor = None`: NNX refuses an attribute that changes from None to a
    # module, and models without a predictor keep exactly their old state tree.
    self.has_predictor = predictor is not None
    if predictor is not None:
      self.predictor = predictor

  def __call__(self, x: jax.Array, *, train: bool) -> tuple[jax.Array, jax.Array]:
    h = self.encoder(x, train=train)
    return h, self.head(h, train=train)

  def predict(self, z: jax.Array, *, train: bool) -> jax.Array:
    if not self.has_predictor:
      raise ConfigError("This model has no predictor: set model.predictor_hidden_dim > 0")
    return self.predictor(z, train=train)

  def encode(self, x: jax.Array, *, train: bool = False) -> jax.Array:
    """images [batch, H, W, 3] -> h [batch, feat_dim] float32 (the representation we evaluate)."""
    return self.encoder(x, train=train)


def create_model(model_config: ml_collections.ConfigDict, *, rngs: nnx.Rngs) -> ContrastiveModel:
  """Builds the encoder named by `model_config.name` and its projection head."""
  missing = [k for k in _REQUIRED_KEYS if k not in model_config]
  if missing:
    raise ConfigError(f"config.model is missing keys {missing}; required: {list(_REQUIRED_KEYS)}")
  name = model_config.name
  if name not in MODELS:
    raise ConfigError(f"model.name={name!r} is not a known model; valid: {sorted(MODELS)}")
  if model_config.dtype not in DTYPES:
    raise ConfigError(
      f"model.dtype={model_config.dtype!r} is not supported; valid: {sorted(DTYPES)}"
    )
  dtype = DTYPES[model_config.dtype]
  encoder = MODELS[name](model_config, dtype=dtype, rngs=rngs)
  head = ProjectionHead(
    encoder.feat_dim,
    model_config.proj_hidden_dim,
    model_config.proj_dim,
    bn_momentum=model_config.bn_momentum,
    dtype=dtype,
    rngs=rngs,
  )
  predictor = None
  if model_config.get("predictor_hidden_dim", 0) > 0:
    # BYOL's predictor: the projection MLP's shape, proj_dim -> hidden -> proj_dim.
    predictor = ProjectionHead(
      model_config.proj_dim,
      model_config.predictor_hidden_dim,
      model_config.proj_dim,
      bn_momentum=model_config.bn_momentum,
      dtype=dtype,
      rngs=rngs,
    )
  return ContrastiveModel(encoder, head, predictor)


__all__ = [
  "DTYPES",
  "MODELS",
  "ContrastiveModel",
  "LinearClassifier",
  "ProjectionHead",
  "ResNet",
  "ViT",
  "create_model",
]
