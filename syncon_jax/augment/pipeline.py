"""The augmentation pipeline: `config.augment` read into per-view settings, the op registry, and
the batch entry points the trainer calls inside its jitted step.

`config.augment` holds
  ops    the pipeline: names from OPS, in the order they run, e.g.
         ("crop", "flip", "color_jitter", "grayscale", "blur", "solarize"). "crop" must be one
         (it makes the out_size x out_size view).
  KEY    each listed op's settings (OPS[name].settings), shared by every view. Settings of a
         registered op that `ops` leaves out are checked and ignored, so that an op can be
         switched off from the command line (--config.augment.ops='("crop", "flip")').
  views  optional per-view overrides: () (every view alike) or one mapping per view
         (objective.n_views of them) of {KEY: value} over the shared settings, e.g. BYOL's
         ({"blur_prob": 1.0, "solarize_prob": 0.0}, {"blur_prob": 0.1, "solarize_prob": 0.2}).
         From the command line: --config.augment.views[1].blur_prob=0.5 changes one value,
         --config.augment.views='({"blur_prob": 1.0}, {})' sets them all.

Adding an op is one function `(key, image [h, w, 3], settings) -> image` and one entry in OPS
(its function, its key stream, its settings' checks); its keys then go in the configs.

Randomness: a sample's views depend only on its key (the trainer derives it from the global sample
index), never on how the batch is sharded or on which other samples share the batch. The key
is split into one subkey per registered op whatever the pipeline, and each op takes the subkey
of its fixed `stream`, so switching an op on or off, or reordering ops, leaves the randomness of
the others unchanged. jax's default (partitionable) threefry makes split(key, n)[i] independent
of n, so registering an op changes no other op's key either.
"""

import math
import numbers
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections

from syncon_jax.augment import ops
from syncon_jax.errors import ConfigError, DataError

Array = jax.Array
Settings = Mapping[str, Any]

# RandomHorizontalFlip's probability when the config says `flip = True`.
DEFAULT_FLIP_PROB = 0.5


# ----------------------------------------------------------------------------------------------
# Checks of one setting.


class Check(NamedTuple):
  """A setting's rule: `convert(value)` returns the value to use, or raises ValueError."""

  rule: str  # what the value must be, for the error message
  convert: Callable[[Any], Any]
  optional: bool = False  # may be absent from the config (then None)


def _is_number(value: Any) -> bool:
  return isinstance(value, int | float) and not isinstance(value, bool)


def number(lo: float, hi: float) -> Check:
  """A number in [lo, hi], as a float."""

  def convert(value: Any) -> float:
    if not _is_number(value) or not lo <= value <= hi:
      raise ValueError
    return float(value)

  return Check(f"a number in [{lo}, {hi}]", convert)


def pair(lo: float, hi: float) -> Check:
  """(a, b) with lo < a <= b <= hi, as floats."""

  def convert(value: Any) -> tuple[float, float]:
    if not (isinstance(value, Sequence) and len(value) == 2 and all(map(_is_number, value))):
      raise ValueError
    a, b = float(value[0]), float(value[1])
    if not lo < a <= b <= hi:
      raise ValueError
    return a, b

  return Check(f"a pair (lo, hi) with {lo} < lo <= hi <= {hi}", convert)


def _flip_probability(value: Any) -> float:
  if isinstance(value, bool):
    return DEFAULT_FLIP_PROB if value else 0.0
  return PROBABILITY.convert(value)


def _odd_size(value: Any) -> int | None:
  if value is not None and (
    isinstance(value, bool) or not isinstance(value, int) or value < 1 or value % 2 == 0
  ):
    raise ValueError
  return value


PROBABILITY = number(0.0, 1.0)
STRENGTH = number(0.0, math.inf)
FLIP = Check(f"True ({DEFAULT_FLIP_PROB}), False or a number in [0, 1]", _flip_probability)
ODD_SIZE = Check("None or a positive odd int", _odd_size, optional=True)


# ----------------------------------------------------------------------------------------------
# The ops: (key, image [h, w, 3] float in [0, 1], settings) -> image. `settings` holds the view's
# checked values by key and `out_size`. An op whose settings make it the identity is skipped at
# trace time.


def crop_op(key: Array, image: Array, settings: Settings) -> Array:
  scale, ratio, size = settings["crop_scale"], settings["crop_ratio"], settings["out_size"]
  return ops.random_resized_crop(key, image, scale=scale, ratio=ratio, out_size=size)


def flip_op(key: Array, image: Array, settings: Settings) -> Array:
  prob = settings["flip"]
  return image if prob == 0 else ops.random_flip(key, image, prob=prob)


JITTER_STRENGTHS = ("brightness", "contrast", "saturation", "hue")


def color_jitter_op(key: Array, image: Array, settings: Settings) -> Array:
  prob, strengths = settings["jitter_prob"], {k: settings[k] for k in JITTER_STRENGTHS}
  if prob == 0 or not any(strengths.values()):
    return image
  return ops.color_jitter(key, image, prob=prob, **strengths)


def grayscale_op(key: Array, image: Array, settings: Settings) -> Array:
  prob = settings["grayscale_prob"]
  return image if prob == 0 else ops.random_grayscale(key, image, prob=prob)


def blur_op(key: Array, image: Array, settings: Settings) -> Array:
  prob, sigma, size = settings["blur_prob"], settings["blur_sigma"], settings["blur_kernel_size"]
  if prob == 0:
    return image
  return ops.gaussian_blur(key, image, sigma_range=sigma, prob=prob, kernel_size=size)


def solarize_op(key: Array, image: Array, settings: Settings) -> Array:
  prob, threshold = settings["solarize_prob"], settings["solarize_threshold"]
  return image if prob == 0 else ops.random_solarize(key, image, threshold=threshold, prob=prob)


class Op(NamedTuple):
  """One registered op."""

  apply: Callable[[Array, Array, Settings], Array]
  # Which subkey of the sample's key the op draws from: fixed for good (a new op takes a new
  # number), so that a run's randomness never depends on which ops are registered or listed.
  stream: int
  settings: Mapping[str, Check]  # config.augment key -> its check


# name -> op. Streams 0-4 are the five ops of the original SimCLR pipeline, in its order.
OPS: dict[str, Op] = {
  "crop": Op(crop_op, 0, {"crop_scale": pair(0.0, 1.0), "crop_ratio": pair(0.0, math.inf)}),
  "flip": Op(flip_op, 1, {"flip": FLIP}),
  "color_jitter": Op(
    color_jitter_op,
    2,
    {
      "jitter_prob": PROBABILITY,
      "brightness": STRENGTH,
      "contrast": STRENGTH,
      "saturation": STRENGTH,
      "hue": number(0.0, 0.5),
    },
  ),
  "grayscale": Op(grayscale_op, 3, {"grayscale_prob": PROBABILITY}),
  "blur": Op(
    blur_op,
    4,
    {"blur_prob": PROBABILITY, "blur_sigma": pair(0.0, math.inf), "blur_kernel_size": ODD_SIZE},
  ),
  "solarize": Op(
    solarize_op, 5, {"solarize_prob": PROBABILITY, "solarize_threshold": number(0.0, 1.0)}
  ),
}


def get_op(name: str) -> Op:
  """OPS[name]; ConfigError listing the valid names for an unknown one."""
  if name not in OPS:
    raise ConfigError(f"Unknown augmentation op {name!r} in config.augment.ops; valid: {list(OPS)}")
  return OPS[name]


# ----------------------------------------------------------------------------------------------
# config.augment -> Pipeline.


class Pipeline(NamedTuple):
  """`config.augment` read and checked; every value a static Python value."""

  ops: tuple[str, ...]  # names in OPS, in the order they run
  shared: Settings  # every setting of the listed ops (and any other op's that the config sets)
  views: tuple[Settings, ...]  # per view, `shared` under its overrides; () when none

  def settings(self, view: int | None = None) -> Settings:
    """The settings of view `view` (None: the shared ones)."""
    if view is None or not self.views:
      return self.shared
    if not 0 <= view < len(self.views):
      raise ConfigError(
        f"View {view} has no entry in config.augment.views ({len(self.views)} entries)"
      )
    return self.views[view]


def _checked(name: str, value: Any, check: Check) -> Any:
  try:
    return check.convert(value)
  except ValueError:
    raise ConfigError(f"config.{name} must be {check.rule}, got {value!r}") from None


def read_config(config: Mapping[str, Any] | Pipeline, *, n_views: int | None = None) -> Pipeline:
  """Checks `config.augment` (a ConfigDict or dict) and returns it as a `Pipeline`.

  n_views: when given, `views` must be empty or hold exactly this many entries.

  Raises:
    ConfigError: naming the `augment.<key>` that is missing, unknown or out of range.
  """
  pipeline = config if isinstance(config, Pipeline) else _read(config)
  if n_views is not None and pipeline.views and len(pipeline.views) != n_views:
    raise ConfigError(
      f"config.augment.views has {len(pipeline.views)} entries for {n_views} views "
      "(objective.n_views): give one per view, or () for the same settings in every view"
    )
  return pipeline


def _is_mapping(value: Any) -> bool:
  """A dict or a ConfigDict (which is no collections.abc.Mapping)."""
  return isinstance(value, Mapping) or isinstance(value, ml_collections.ConfigDict)


def _read(config: Mapping[str, Any]) -> Pipeline:
  if "ops" not in config:
    raise ConfigError(f"config.augment is missing 'ops', the pipeline's op names from {list(OPS)}")
  names = config["ops"]
  if isinstance(names, str) or not isinstance(names, Sequence) or len(set(names)) != len(names):
    raise ConfigError(f"config.augment.ops must be a tuple of distinct op names, got {names!r}")
  pipeline_ops = tuple(names)
  for name in pipeline_ops:
    get_op(name)
  if "crop" not in pipeline_ops:
    raise ConfigError("config.augment.ops must include 'crop' (it makes the out_size view)")

  checks = {key: check for op in OPS.values() for key, check in op.settings.items()}
  keys = set(config.keys()) - {"ops", "views"}
  unknown = sorted(keys - set(checks))
  if unknown:
    raise ConfigError(
      f"config.augment has unknown keys {unknown}; valid: {['ops', 'views', *checks]}"
    )
  needed = [key for name in pipeline_ops for key, c in OPS[name].settings.items() if not c.optional]
  missing = [key for key in needed if key not in keys]
  if missing:
    raise ConfigError(f"config.augment is missing {missing}; the ops {list(pipeline_ops)} need it")
  shared = {
    key: _checked(f"augment.{key}", config[key] if key in keys else None, check)
    for key, check in checks.items()
    if key in keys or check.optional
  }

  overrides = config["views"] if "views" in config else ()
  if _is_mapping(overrides) or not isinstance(overrides, Sequence):
    raise ConfigError(
      f"config.augment.views must be a tuple of mappings, one per view, got {overrides!r}"
    )
  views = []
  for v, override in enumerate(overrides):
    if not _is_mapping(override):
      raise ConfigError(f"config.augment.views[{v}] must be a mapping KEY: value, got {override!r}")
    bad = sorted(set(override.keys()) - set(checks))
    if bad:
      raise ConfigError(f"config.augment.views[{v}] has unknown keys {bad}; valid: {list(checks)}")
    view = dict(shared)
    for key, value in override.items():
      view[key] = _checked(f"augment.views[{v}].{key}", value, checks[key])
    views.append(view)
  return Pipeline(ops=pipeline_ops, shared=shared, views=tuple(views))


# ----------------------------------------------------------------------------------------------
# The batch entry points.


def to_float_image(images: Array) -> Array:
  """uint8 0..255 -> float32 / 255; float input is taken to be in [0, 1] already."""
  images = jnp.asarray(images)
  if images.dtype == jnp.uint8:
    return images.astype(jnp.float32) / 255.0
  if jnp.issubdtype(images.dtype, jnp.floating):
    return images.astype(jnp.float32)
  raise DataError(f"Images must be uint8 (0..255) or float in [0, 1], got dtype {images.dtype}")


def augment_one(key: Array, image: Array, pipeline: Pipeline, settings: Settings) -> Array:
  """The pipeline on one image `[h, w, 3]` float in [0, 1] -> `[out_size, out_size, 3]`.

  settings: one view's settings (`pipeline.settings(view)`) and `out_size`.
  """
  keys = jax.random.split(key, 1 + max(op.stream for op in OPS.values()))
  for name in pipeline.ops:
    op = OPS[name]
    image = op.apply(keys[op.stream], image, settings)
  return image


def _typed_keys(keys: Array) -> Array:
  return keys if jnp.issubdtype(keys.dtype, jax.dtypes.prng_key) else jax.random.wrap_key_data(keys)


def augment_batch(
  keys: Array,
  images: Array,
  config: Mapping[str, Any] | Pipeline,
  *,
  out_size: int,
  view: int | None = None,
) -> jnp.ndarray:
  """Augments each image with its own key, under one view's settings.

  Args:
    keys: `[batch]` typed PRNG keys, or `[batch, 2]` raw uint32 keys; one per sample.
    images: `[batch, height, width, 3]` uint8 (0..255) or float in [0, 1].
    config: `config.augment` (ConfigDict or dict; keys as in configs/digits.py) or a Pipeline.
    out_size: static output side.
    view: static; whose entry of `config.augment.views` applies (None: the shared settings).

  Returns:
    float32 `[batch, out_size, out_size, 3]` in [0, 1], not normalised.
  """
  pipeline = read_config(config)
  if isinstance(out_size, bool) or not isinstance(out_size, numbers.Integral) or out_size < 1:
    raise ConfigError(f"augment_batch out_size must be a positive int, got {out_size!r}")
  settings = {**pipeline.settings(view), "out_size": int(out_size)}
  images = to_float_image(images)
  if images.ndim != 4 or images.shape[-1] != 3:
    raise DataError(f"augment_batch wants images [batch, height, width, 3], got {images.shape}")
  keys = _typed_keys(keys)
  if keys.shape != images.shape[:1]:
    raise ValueError(f"Need one key per image: keys {keys.shape}, images {images.shape}")
  return jax.vmap(lambda k, x: augment_one(k, x, pipeline, settings))(keys, images)


def augment_views(
  keys: Array, images: Array, config: Mapping[str, Any] | Pipeline, *, out_size: int
) -> jnp.ndarray:
  """Every view of each image: view v under its key and view v's settings.

  Args:
    keys: `[..., n_views]` typed PRNG keys (or `[..., n_views, 2]` raw uint32 keys).
    images: `[..., height, width, 3]` uint8 (0..255) or float in [0, 1], batch dims as `keys`'.
    config: `config.augment` or a Pipeline; `views` empty or n_views entries.
    out_size: static output side.

  Returns:
    float32 `[..., n_views, out_size, out_size, 3]` in [0, 1], not normalised.
  """
  keys = _typed_keys(keys)
  n_views, batch = keys.shape[-1], keys.shape[:-1]
  pipeline = read_config(config, n_views=n_views)
  if images.shape[:-3] != batch:
    raise ValueError(
      f"Need one key per view of each image: keys {keys.shape}, images {images.shape}"
    )
  image_shape = images.shape[-3:]
  if all(view == pipeline.settings(0) for view in pipeline.views):
    # One vmap over every view of every image: what the trainer ran before per-view settings.
    flat = jnp.broadcast_to(images[..., None, :, :, :], (*batch, n_views, *image_shape))
    out = augment_batch(
      keys.reshape(-1), flat.reshape(-1, *image_shape), pipeline, out_size=out_size, view=0
    )
    return out.reshape(*batch, n_views, *out.shape[1:])
  flat = images.reshape(-1, *image_shape)
  views = [
    augment_batch(keys[..., v].reshape(-1), flat, pipeline, out_size=out_size, view=v)
    for v in range(n_views)
  ]
  out = jnp.stack(views, axis=1)
  return out.reshape(*batch, n_views, *out.shape[2:])
