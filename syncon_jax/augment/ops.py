"""The image ops of the augmentation, in JAX: each a pure function of a PRNG key and one image
`[height, width, 3]` float in [0, 1] with static shapes, and its settings as keyword arguments
(static Python numbers). The pipeline (pipeline.py) vmaps them over the batch.

They follow torchvision's SimCLR transforms (Chen et al. 2020): RandomResizedCrop,
RandomHorizontalFlip, RandomApply(ColorJitter), RandomGrayscale, RandomApply(GaussianBlur), and
BYOL's solarisation (Grill et al. 2020). Normalisation (mean/std) is left to the caller.

Where this differs from torchvision, on purpose:
- the crop box is resampled from the full image with `jax.image.scale_and_translate`
  (bilinear, no antialias, half-pixel centres). When a box is upsampled, the outermost half
  output pixel blends with the image pixels just outside the box, where torchvision (which
  crops first) repeats the box's edge. Inside the box the two agree.
- grayscale uses ITU-R 601 luma (0.299, 0.587, 0.114); torchvision uses 0.2989.
- none in ColorJitter: its four ops run in a random order, as in torchvision (see
  `apply_jitter` for how that stays cheap under vmap). DeepMind's BYOL code uses TensorFlow's
  colour ops instead (additive brightness, per-channel contrast means, saturation in HSV).
- the blur kernel is at least 3 taps, so small images still get blurred (SimCLR's size rule
  gives a 1-tap kernel below 20 pixels); padding reflects (BYOL's code pads with zeros).
"""

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

# ITU-R BT.601 luma weights for R, G, B.
LUMA_WEIGHTS = (0.299, 0.587, 0.114)

# torchvision's RandomResizedCrop draws at most this many boxes before the centre-crop fallback.
CROP_MAX_TRIES = 10

Array = jax.Array


# ----------------------------------------------------------------------------------------------
# Random resized crop, and the centre crop evaluation sees instead.


def center_crop(images, size: int):
  """The centred `size` square of `[..., height, width, c]` (numpy or JAX; a no-op at `size`).

  Offsets as torchvision's CenterCrop: round((height - size) / 2). Evaluation's view of images
  stored larger than `data.image_size` (`data.decode_size`): resize 256, centre crop 224.
  """
  height, width = images.shape[-3], images.shape[-2]
  if min(height, width) < size:
    raise ValueError(f"cannot centre-crop {size} px from images of {height}x{width}")
  top, left = int(round((height - size) / 2)), int(round((width - size) / 2))
  return images[..., top : top + size, left : left + size, :]


def sample_crop_box(
  key: Array,
  height: int,
  width: int,
  *,
  scale: Sequence[float],
  ratio: Sequence[float],
  max_tries: int = CROP_MAX_TRIES,
) -> Array:
  """Draws a crop box with torchvision's `RandomResizedCrop.get_params` rule.

  Each try draws an area fraction uniform in `scale` and an aspect ratio (w / h) log-uniform in
  `ratio`, rounds the side lengths, and keeps the first try whose box fits in the image, at a
  uniform integer position. If none of the `max_tries` fits, the largest centred box whose
  aspect ratio is clipped into `ratio` is used. The tries are drawn all at once, so there is no
  loop inside jit.

  Args:
    key: one PRNG key.
    height, width: static image size.
    scale, ratio: static (lo, hi) pairs.
    max_tries: static number of tries.

  Returns:
    int32 `[4]`: (top, left, box_height, box_width), with
    0 <= top, top + box_height <= height, and likewise for left and width.
  """
  # One flat draw for all tries: every threefry call adds XLA compile time, and on CPU a flat
  # draw compiled several times faster than the same numbers drawn as [4, max_tries].
  u_area, u_ratio, u_top, u_left = jax.random.uniform(key, (4 * max_tries,)).reshape(4, max_tries)
  area = float(height * width)
  target_area = area * (scale[0] + (scale[1] - scale[0]) * u_area)
  log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
  aspect = jnp.exp(log_lo + (log_hi - log_lo) * u_ratio)
  # jnp.round rounds half to even, like Python's round() in torchvision.
  w = jnp.round(jnp.sqrt(target_area * aspect)).astype(jnp.int32)
  h = jnp.round(jnp.sqrt(target_area / aspect)).astype(jnp.int32)
  fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
  # Uniform integers in [0, height - h]; the clip guards float rounding at u -> 1. Tries that do
  # not fit get nonsense here and are never used.
  top = jnp.clip(jnp.floor(u_top * (height - h + 1)).astype(jnp.int32), 0, height - h)
  left = jnp.clip(jnp.floor(u_left * (width - w + 1)).astype(jnp.int32), 0, width - w)
  first = jnp.argmax(fits)  # index of the first fitting try (0 when none fits)
  drawn = jnp.stack([top[first], left[first], h[first], w[first]])
  return jnp.where(jnp.any(fits), drawn, jnp.asarray(_centre_box(height, width, ratio)))


def _centre_box(height: int, width: int, ratio: Sequence[float]) -> tuple[int, int, int, int]:
  """torchvision's fallback: the largest centred box with aspect ratio clipped into `ratio`."""
  in_ratio = width / height
  if in_ratio < min(ratio):
    w = width
    h = int(round(w / min(ratio)))
  elif in_ratio > max(ratio):
    h = height
    w = int(round(h * max(ratio)))
  else:
    h, w = height, width
  return (height - h) // 2, (width - w) // 2, h, w


def crop_and_resize(image: Array, box: Array, *, out_size: int) -> Array:
  """Resamples `box` = (top, left, box_height, box_width) of `image` to `[out_size, out_size]`.

  Bilinear, no antialias, half-pixel centres: output pixel (i, j) samples the input at
  row top + (i + 0.5) * box_height / out_size - 0.5 (index units; likewise for columns),
  clamped to the image.

  Args:
    image: `[height, width, channels]` float.
    box: int `[4]`, may be traced.
    out_size: static output side.

  Returns:
    `[out_size, out_size, channels]`, same dtype as `image`.
  """
  box = jnp.asarray(box, image.dtype)
  top, left, box_h, box_w = box[0], box[1], box[2], box[3]
  # scale_and_translate maps input coordinates x to output coordinates x * scale + translation.
  scale = jnp.stack([out_size / box_h, out_size / box_w])
  translation = jnp.stack([-top * out_size / box_h, -left * out_size / box_w])
  return jax.image.scale_and_translate(
    image,
    (out_size, out_size, image.shape[2]),
    (0, 1),
    scale,
    translation,
    method="linear",
    antialias=False,
  ).astype(image.dtype)


def random_resized_crop(
  key: Array,
  image: Array,
  *,
  scale: Sequence[float],
  ratio: Sequence[float],
  out_size: int,
  max_tries: int = CROP_MAX_TRIES,
) -> Array:
  """torchvision's RandomResizedCrop: `[height, width, c]` -> `[out_size, out_size, c]`.

  The box comes from `sample_crop_box(key, height, width, ...)` and is resampled by
  `crop_and_resize`.
  """
  height, width = image.shape[0], image.shape[1]
  box = sample_crop_box(key, height, width, scale=scale, ratio=ratio, max_tries=max_tries)
  return crop_and_resize(image, box, out_size=out_size)


# ----------------------------------------------------------------------------------------------
# Flip and grayscale.


def _draw(key: Array, prob: float | Array) -> Array:
  """True with probability `prob` (never for prob 0, always for prob 1)."""
  return jax.random.uniform(key) < prob


def random_flip(key: Array, image: Array, *, prob: float | Array) -> Array:
  """Mirrors `[height, width, c]` left-right with probability `prob`."""
  return jnp.where(_draw(key, prob), image[:, ::-1, :], image)


def rgb_to_grayscale(image: Array) -> Array:
  """ITU-R 601 luma of `[..., 3]` RGB, returned as `[..., 1]`."""
  r, g, b = image[..., 0], image[..., 1], image[..., 2]
  wr, wg, wb = LUMA_WEIGHTS
  return (wr * r + wg * g + wb * b)[..., None]


def random_grayscale(key: Array, image: Array, *, prob: float | Array) -> Array:
  """Replaces every channel of `[height, width, 3]` by its luma, with probability `prob`."""
  gray = jnp.broadcast_to(rgb_to_grayscale(image), image.shape)
  return jnp.where(_draw(key, prob), gray, image)


# ----------------------------------------------------------------------------------------------
# Colour jitter (torchvision.transforms.ColorJitter).


def _blend(image: Array, other: Array | float, factor: Array) -> Array:
  """torchvision's `_blend`: factor * image + (1 - factor) * other, clipped to [0, 1]."""
  return jnp.clip(factor * image + (1.0 - factor) * other, 0.0, 1.0)


def adjust_brightness(image: Array, factor: Array | float) -> Array:
  """`[..., 3]` -> clip(factor * image)."""
  return _blend(image, 0.0, factor)


def adjust_contrast(image: Array, factor: Array | float) -> Array:
  """Blends `[h, w, 3]` with the mean luma of the whole image."""
  return _blend(image, jnp.mean(rgb_to_grayscale(image)), factor)


def adjust_saturation(image: Array, factor: Array | float) -> Array:
  """Blends `[..., 3]` with its per-pixel luma."""
  return _blend(image, rgb_to_grayscale(image), factor)


def rgb_to_hsv(image: Array) -> Array:
  """`[..., 3]` RGB in [0, 1] -> HSV in [0, 1] (colorsys's formulas, hue 0 for grays)."""
  r, g, b = image[..., 0], image[..., 1], image[..., 2]
  maxc = jnp.max(image, axis=-1)
  minc = jnp.min(image, axis=-1)
  rangec = maxc - minc
  gray = rangec == 0
  # Divide by 1 where the true divisor is 0 so that grays give 0 rather than NaN.
  s = jnp.where(gray, 0.0, rangec / jnp.where(gray, 1.0, maxc))
  safe_range = jnp.where(gray, 1.0, rangec)
  rc = (maxc - r) / safe_range
  gc = (maxc - g) / safe_range
  bc = (maxc - b) / safe_range
  # Pick the max channel with argmax (ties go to r, then g, as in colorsys) rather than by
  # `r == maxc`: XLA may recompute `image` in two fusions that round differently (FMA), and a
  # one-ulp mismatch would then pick the wrong formula and the wrong hue sector.
  top = jnp.argmax(image, axis=-1)
  h = jnp.where(top == 0, bc - gc, jnp.where(top == 1, 2.0 + rc - bc, 4.0 + gc - rc))
  h = jnp.where(gray, 0.0, jnp.mod(h / 6.0, 1.0))
  return jnp.stack([h, s, maxc], axis=-1)


def hsv_to_rgb(hsv: Array) -> Array:
  """`[..., 3]` HSV in [0, 1] -> RGB in [0, 1] (colorsys's formulas)."""
  h, s, v = hsv[..., 0], hsv[..., 1], hsv[..., 2]
  i = jnp.floor(h * 6.0)
  f = h * 6.0 - i
  i = i.astype(jnp.int32) % 6
  p = jnp.clip(v * (1.0 - s), 0.0, 1.0)
  q = jnp.clip(v * (1.0 - s * f), 0.0, 1.0)
  t = jnp.clip(v * (1.0 - s * (1.0 - f)), 0.0, 1.0)
  sector = [i == k for k in range(5)]  # sector 5 is the default below
  r = jnp.select(sector, [v, q, p, p, t], default=v)
  g = jnp.select(sector, [t, v, v, q, p], default=p)
  b = jnp.select(sector, [p, p, t, v, v], default=q)
  return jnp.stack([r, g, b], axis=-1)


def adjust_hue(image: Array, delta: Array | float) -> Array:
  """Rotates the hue of `[..., 3]` RGB by `delta` turns (torchvision: delta in [-0.5, 0.5])."""
  hsv = rgb_to_hsv(image)
  hue = jnp.mod(hsv[..., 0] + delta, 1.0)
  return hsv_to_rgb(jnp.stack([hue, hsv[..., 1], hsv[..., 2]], axis=-1))


class JitterParams(NamedTuple):
  """One draw of ColorJitter's parameters (all scalars but `order`)."""

  order: Array  # int32 [4]: a permutation of (0 brightness, 1 contrast, 2 saturation, 3 hue)
  brightness: Array
  contrast: Array
  saturation: Array
  hue: Array


def jitter_params(
  key: Array,
  *,
  brightness: float,
  contrast: float,
  saturation: float,
  hue: float,
  dtype: Any = jnp.float32,
) -> JitterParams:
  """torchvision's `ColorJitter.get_params`: factors uniform in [max(0, 1 - s), 1 + s], hue
  shift uniform in [-hue, hue], and a uniformly random order of the four ops."""
  u = jax.random.uniform(key, (8,), dtype)
  # argsort of iid uniforms is a uniformly random permutation (ties have probability ~1e-6);
  # cheaper to compile than jax.random.permutation.
  order = jnp.argsort(u[:4]).astype(jnp.int32)

  def factor(u_k: Array, strength: float) -> Array:
    lo, hi = max(0.0, 1.0 - strength), 1.0 + strength
    return lo + (hi - lo) * u_k

  return JitterParams(
    order=order,
    brightness=factor(u[4], brightness),
    contrast=factor(u[5], contrast),
    saturation=factor(u[6], saturation),
    hue=-hue + 2.0 * hue * u[7],
  )


def apply_jitter(
  image: Array, params: JitterParams, *, active: Sequence[bool] = (True,) * 4
) -> Array:
  """Applies the four colour ops to `[h, w, 3]` in `params.order`; an op whose `active` entry
  (static, indexed like `order`) is False is skipped, as torchvision skips strength 0.

  Brightness, contrast and saturation are all `_blend(x, other, factor)`, differing only in
  `other` (0, the mean luma, the per-pixel luma), so each position runs one blend whose factor
  and `other` are picked by the op index. Hue, the costly op, runs once: the blends ordered
  before it, then hue, then the blends after it. That is the same function as switching over
  the four ops at each position, at a quarter of the work (and of the compile time).
  """
  if not any(active):
    return image
  factors = jnp.stack([params.brightness, params.contrast, params.saturation])
  blend_active = jnp.asarray(active[:3])
  hue_position = jnp.argmax(params.order == 3)

  def blend_step(x: Array, position: int, wanted: Array) -> Array:
    op = params.order[position]
    gray = rgb_to_grayscale(x)
    other = jnp.where(op == 0, 0.0, jnp.where(op == 1, jnp.mean(gray), gray))
    factor = factors[jnp.minimum(op, 2)]
    use = wanted & (op != 3) & blend_active[jnp.minimum(op, 2)]
    return jnp.where(use, _blend(x, other, factor), x)

  for position in range(4):
    image = blend_step(image, position, position < hue_position)
  if active[3]:
    image = adjust_hue(image, params.hue)
  for position in range(4):
    image = blend_step(image, position, position > hue_position)
  return image


def color_jitter(
  key: Array,
  image: Array,
  *,
  brightness: float,
  contrast: float,
  saturation: float,
  hue: float,
  prob: float | Array,
) -> Array:
  """torchvision's RandomApply(ColorJitter(brightness, contrast, saturation, hue), p=prob) on
  `[h, w, 3]` in [0, 1]; output clipped to [0, 1]. Strengths are static numbers; an op with
  strength 0 is skipped (so all zeros returns the image exactly)."""
  k_apply, k_params = jax.random.split(key)
  params = jitter_params(
    k_params,
    brightness=brightness,
    contrast=contrast,
    saturation=saturation,
    hue=hue,
    dtype=image.dtype,
  )
  active = tuple(s != 0 for s in (brightness, contrast, saturation, hue))
  jittered = apply_jitter(image, params, active=active)
  return jnp.where(_draw(k_apply, prob), jittered, image)


# ----------------------------------------------------------------------------------------------
# Gaussian blur.


def blur_kernel_size(height: int, width: int) -> int:
  """SimCLR's rule: an odd kernel about 10% of the image side (radius side // 20), at least 3."""
  radius = max(1, min(height, width) // 20)
  return 2 * radius + 1


def gaussian_kernel1d(sigma: Array | float, kernel_size: int, dtype: Any = jnp.float32) -> Array:
  """`[kernel_size]` normalised Gaussian taps at offsets -r..r (torchvision's kernel)."""
  radius = kernel_size // 2
  x = jnp.arange(-radius, radius + 1, dtype=dtype)
  pdf = jnp.exp(-0.5 * (x / sigma) ** 2)
  return pdf / jnp.sum(pdf)


def blur(image: Array, sigma: Array | float, kernel_size: int) -> Array:
  """Separable Gaussian blur of `[h, w, c]` with reflect padding (torchvision's GaussianBlur)."""
  height, width = image.shape[0], image.shape[1]
  if kernel_size < 1 or kernel_size % 2 == 0:
    raise ValueError(f"Blur kernel_size must be a positive odd number, got {kernel_size}")
  radius = kernel_size // 2
  if radius >= min(height, width):
    raise ValueError(
      f"Blur kernel_size {kernel_size} too large for a {height}x{width} image (reflect padding)"
    )
  taps = gaussian_kernel1d(sigma, kernel_size, image.dtype)
  # Shift-and-add keeps a per-sample kernel cheap under vmap (no grouped convolution).
  padded = jnp.pad(image, ((radius, radius), (0, 0), (0, 0)), mode="reflect")
  image = sum(taps[k] * padded[k : k + height] for k in range(kernel_size))
  padded = jnp.pad(image, ((0, 0), (radius, radius), (0, 0)), mode="reflect")
  return sum(taps[k] * padded[:, k : k + width] for k in range(kernel_size))


def gaussian_blur(
  key: Array,
  image: Array,
  *,
  sigma_range: Sequence[float],
  prob: float | Array,
  kernel_size: int | None = None,
) -> Array:
  """RandomApply(GaussianBlur) on `[h, w, c]`: sigma uniform in `sigma_range`, applied with
  probability `prob`; kernel size from `blur_kernel_size` unless given (static, odd)."""
  if kernel_size is None:
    kernel_size = blur_kernel_size(image.shape[0], image.shape[1])
  u_apply, u_sigma = jax.random.uniform(key, (2,), image.dtype)
  sigma = sigma_range[0] + (sigma_range[1] - sigma_range[0]) * u_sigma
  return jnp.where(u_apply < prob, blur(image, sigma, kernel_size), image)


# ----------------------------------------------------------------------------------------------
# Solarisation (BYOL).


def solarize(image: Array, threshold: float | Array) -> Array:
  """Inverts every value of `[...]` at or above `threshold`: x -> 1 - x there."""
  return jnp.where(image < threshold, image, 1.0 - image)


def random_solarize(key: Array, image: Array, *, threshold: float, prob: float | Array) -> Array:
  """BYOL's solarisation of `[h, w, c]` in [0, 1], applied with probability `prob`."""
  return jnp.where(_draw(key, prob), solarize(image, threshold), image)
