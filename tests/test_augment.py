"""Each augmentation op against its definition, written independently in numpy (float64)."""

import colorsys
import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from syncon_jax import augment
from syncon_jax.augment import ops
from syncon_jax.errors import ConfigError, DataError

LUMA = np.array([0.299, 0.587, 0.114])


def _config(**overrides) -> ml_collections.ConfigDict:
  """A config.augment with every op off (identity pipeline) unless overridden."""
  c = ml_collections.ConfigDict(
    dict(
      ops=("crop", "flip", "color_jitter", "grayscale", "blur", "solarize"),
      crop_scale=(1.0, 1.0),
      crop_ratio=(1.0, 1.0),
      flip=False,
      jitter_prob=0.0,
      brightness=0.0,
      contrast=0.0,
      saturation=0.0,
      hue=0.0,
      grayscale_prob=0.0,
      blur_prob=0.0,
      blur_sigma=(0.1, 2.0),
      solarize_prob=0.0,
      solarize_threshold=0.5,
      views=(),
    )
  )
  c.update(overrides)
  return c


def _image(seed: int, shape=(8, 10, 3)) -> np.ndarray:
  return np.random.default_rng(seed).random(shape)


def _keys(n: int, seed: int = 0) -> jax.Array:
  return jax.random.split(jax.random.key(seed), n)


@functools.cache
def _jitted_augment(cfg_items: tuple, out_size: int):
  cfg = _config(**dict(cfg_items))
  return jax.jit(lambda k, x: augment.augment_batch(k, x, cfg, out_size=out_size))


def _run(cfg: ml_collections.ConfigDict, keys, images, out_size: int) -> np.ndarray:
  items = tuple(sorted(cfg.to_dict().items()))
  return np.asarray(_jitted_augment(items, out_size)(keys, images))


# --------------------------------------------------------------------------- numpy references


def np_gray(image: np.ndarray) -> np.ndarray:
  return image @ LUMA


def np_bilinear_box(image: np.ndarray, box, out_size: int) -> np.ndarray:
  """Half-pixel bilinear sampling of `box` from the full image, coordinates clamped to it."""
  top, left, bh, bw = (float(v) for v in box)
  height, width = image.shape[:2]

  def taps(start, size, n):
    pos = start + (np.arange(out_size) + 0.5) * size / out_size - 0.5
    pos = np.clip(pos, 0, n - 1)
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, n - 1)
    return lo, hi, pos - lo

  y0, y1, fy = taps(top, bh, height)
  x0, x1, fx = taps(left, bw, width)
  rows = image[y0] * (1 - fy)[:, None, None] + image[y1] * fy[:, None, None]
  return rows[:, x0] * (1 - fx)[None, :, None] + rows[:, x1] * fx[None, :, None]


def np_hue_shift(image: np.ndarray, delta: float) -> np.ndarray:
  out = np.empty_like(image)
  for idx in np.ndindex(image.shape[:-1]):
    h, s, v = colorsys.rgb_to_hsv(*image[idx])
    out[idx] = colorsys.hsv_to_rgb((h + delta) % 1.0, s, v)
  return out


def np_jitter(image: np.ndarray, order, b, c, s, h) -> np.ndarray:
  for op in order:
    if op == 0:
      image = np.clip(b * image, 0, 1)
    elif op == 1:
      image = np.clip(c * image + (1 - c) * np_gray(image).mean(), 0, 1)
    elif op == 2:
      image = np.clip(s * image + (1 - s) * np_gray(image)[..., None], 0, 1)
    else:
      image = np_hue_shift(image, h)
  return image


def np_gauss_blur(image: np.ndarray, sigma: float, kernel_size: int) -> np.ndarray:
  r = kernel_size // 2
  x = np.arange(-r, r + 1, dtype=np.float64)
  k = np.exp(-0.5 * (x / sigma) ** 2)
  k /= k.sum()
  padded = np.pad(image, ((r, r), (r, r), (0, 0)), mode="reflect")
  height, width = image.shape[:2]
  rows = sum(k[i] * padded[i : i + height] for i in range(kernel_size))
  return sum(k[j] * rows[:, j : j + width] for j in range(kernel_size))


# --------------------------------------------------------------------------- crop


def test_crop_box_within_image_with_area_and_ratio_in_range():
  height, width, n = 300, 240, 2000
  # Every try fits here (widest box sqrt(0.2 * 300 * 240 * 2) = 170 px), so the first try is
  # kept and its area is uniform in `scale`.
  scale, ratio = (0.05, 0.2), (0.5, 2.0)
  sampler = jax.jit(
    jax.vmap(lambda k: ops.sample_crop_box(k, height, width, scale=scale, ratio=ratio))
  )
  top, left, bh, bw = np.asarray(sampler(_keys(n))).T
  assert (top >= 0).all() and (left >= 0).all() and (bh > 0).all() and (bw > 0).all()
  assert (top + bh <= height).all() and (left + bw <= width).all()
  # Rounding each side moves the area by at most half of each side (+ 1/4 pixel).
  frac = bh * bw / (height * width)
  tol = (0.5 * (bh + bw) + 0.25) / (height * width)
  assert ((frac >= scale[0] - tol) & (frac <= scale[1] + tol)).all()
  assert abs(frac.mean() - np.mean(scale)) < 0.005
  # log(aspect) uniform over log(ratio): symmetric around 0, reaching near both ends.
  log_aspect = np.log(bw / bh)
  assert abs(log_aspect.mean()) < 0.03
  assert log_aspect.min() < np.log(0.55) and log_aspect.max() > np.log(1.8)
  assert (np.abs(log_aspect) <= np.log(2.0) + 0.05).all()
  # Positions are uniform integers over [0, height - box_height], both ends included.
  assert (top == 0).sum() > 0 and (top == height - bh).sum() > 0
  assert abs(np.mean(top / (height - bh)) - 0.5) < 0.03


def test_crop_box_falls_back_to_centre_crop_when_nothing_fits():
  # Area >= 90% at aspect >= 3 cannot fit a square image: every try fails.
  sampler = jax.jit(
    jax.vmap(lambda k: ops.sample_crop_box(k, 30, 30, scale=(0.9, 1.0), ratio=(3.0, 4.0)))
  )
  boxes = np.asarray(sampler(_keys(20)))
  h = round(30 / 3.0)
  np.testing.assert_array_equal(boxes, np.tile([(30 - h) // 2, 0, h, 30], (20, 1)))


def test_crop_identity_at_full_scale():
  image = jnp.asarray(_image(0, (9, 9, 3)).astype(np.float32))
  crop = jax.jit(
    jax.vmap(
      lambda k: ops.random_resized_crop(k, image, scale=(1.0, 1.0), ratio=(1.0, 1.0), out_size=9)
    )
  )
  out = np.asarray(crop(_keys(3)))
  np.testing.assert_allclose(out, np.broadcast_to(image, out.shape), atol=1e-6)


@pytest.mark.parametrize("out_size", [5, 16])
def test_crop_resamples_its_box_bilinearly(out_size):
  image = _image(1, (12, 10, 3))
  kwargs = dict(scale=(0.2, 0.8), ratio=(0.75, 4 / 3))

  def crop(key):
    box = ops.sample_crop_box(key, 12, 10, **kwargs)
    return box, ops.random_resized_crop(key, jnp.asarray(image), out_size=out_size, **kwargs)

  with jax.enable_x64(True):
    boxes, outs = jax.jit(jax.vmap(crop))(_keys(4))
  assert outs.shape == (4, out_size, out_size, 3)
  for box, out in zip(np.asarray(boxes), np.asarray(outs), strict=True):
    np.testing.assert_allclose(out, np_bilinear_box(image, box, out_size), atol=1e-10)


# --------------------------------------------------------------------------- flip, grayscale


def test_flip():
  image = jnp.asarray(_image(2))
  key = jax.random.key(0)
  np.testing.assert_array_equal(ops.random_flip(key, image, prob=0.0), image)
  np.testing.assert_array_equal(ops.random_flip(key, image, prob=1.0), np.fliplr(image))
  flips = jax.jit(jax.vmap(lambda k: ops.random_flip(k, image, prob=0.5)))(_keys(400))
  flipped = np.all(np.asarray(flips) == np.fliplr(image), axis=(1, 2, 3))
  kept = np.all(np.asarray(flips) == np.asarray(image), axis=(1, 2, 3))
  assert (flipped ^ kept).all()
  assert 0.4 < flipped.mean() < 0.6


def test_grayscale_equals_numpy_luma():
  image = _image(3)
  key = jax.random.key(0)
  with jax.enable_x64(True):
    out = np.asarray(ops.random_grayscale(key, jnp.asarray(image), prob=1.0))
    np.testing.assert_array_equal(ops.random_grayscale(key, jnp.asarray(image), prob=0.0), image)
  np.testing.assert_allclose(out, np.repeat(np_gray(image)[..., None], 3, axis=-1), atol=1e-12)


# --------------------------------------------------------------------------- colour


def test_hsv_matches_colorsys_and_round_trips():
  rgb = np.concatenate([_image(4, (200, 3)), np.eye(3), [[0.5, 0.5, 0.5], [0, 0, 0], [1, 1, 1]]])
  with jax.enable_x64(True):
    convert = jax.jit(lambda x: (ops.rgb_to_hsv(x), ops.hsv_to_rgb(ops.rgb_to_hsv(x))))
    hsv, back = (np.asarray(a) for a in convert(jnp.asarray(rgb)))
  expected = np.array([colorsys.rgb_to_hsv(*p) for p in rgb])
  hue_gap = np.abs(hsv[:, 0] - expected[:, 0])
  np.testing.assert_allclose(np.minimum(hue_gap, 1 - hue_gap), 0, atol=1e-12)
  np.testing.assert_allclose(hsv[:, 1:], expected[:, 1:], atol=1e-12)
  np.testing.assert_allclose(back, rgb, atol=1e-12)
  np.testing.assert_allclose(back, [colorsys.hsv_to_rgb(*p) for p in hsv], atol=1e-12)


def test_hue_shift_matches_colorsys():
  image = _image(5, (4, 5, 3))
  deltas = [0.0, 0.1, -0.37, 0.5]
  with jax.enable_x64(True):
    shift = jax.jit(jax.vmap(ops.adjust_hue, in_axes=(None, 0)))
    outs = np.asarray(shift(jnp.asarray(image), jnp.asarray(deltas)))
  for delta, out in zip(deltas, outs, strict=True):
    np.testing.assert_allclose(out, np_hue_shift(image, delta), atol=1e-12)


def test_brightness_contrast_saturation_definitions():
  image = _image(6)
  with jax.enable_x64(True):
    x = jnp.asarray(image)
    for f in (0.0, 0.6, 1.7):
      np.testing.assert_allclose(ops.adjust_brightness(x, f), np.clip(f * image, 0, 1))
      np.testing.assert_allclose(
        ops.adjust_contrast(x, f),
        np.clip(f * image + (1 - f) * np_gray(image).mean(), 0, 1),
        atol=1e-12,
      )
      np.testing.assert_allclose(
        ops.adjust_saturation(x, f),
        np.clip(f * image + (1 - f) * np_gray(image)[..., None], 0, 1),
        atol=1e-12,
      )


def test_color_jitter_zero_strength_or_prob_is_identity():
  image = jnp.asarray(_image(7).astype(np.float32))

  @jax.jit
  def both(key):
    zero = ops.color_jitter(
      key, image, brightness=0.0, contrast=0.0, saturation=0.0, hue=0.0, prob=1.0
    )
    never = ops.color_jitter(
      key, image, brightness=0.8, contrast=0.8, saturation=0.8, hue=0.5, prob=0.0
    )
    return zero, never

  zero, never = both(jax.random.key(1))
  np.testing.assert_array_equal(zero, image)
  np.testing.assert_array_equal(never, image)


def test_color_jitter_brightness_alone_multiplies_by_one_factor():
  image = jnp.asarray(_image(8).astype(np.float32))
  jitter = jax.jit(
    jax.vmap(
      lambda k: ops.color_jitter(
        k, image, brightness=0.5, contrast=0.0, saturation=0.0, hue=0.0, prob=1.0
      )
    )
  )
  outs = jitter(_keys(30))
  img = np.asarray(image, np.float64)
  factors = []
  for out in np.asarray(outs, np.float64):
    unclipped = out < 1.0
    f = np.median(out[unclipped] / img[unclipped])
    factors.append(f)
    np.testing.assert_allclose(out, np.clip(f * img, 0, 1), atol=1e-6)
  assert 0.5 <= min(factors) and max(factors) <= 1.5 and np.ptp(factors) > 0.5


def test_color_jitter_matches_numpy_for_its_drawn_params():
  image = _image(9, (5, 6, 3))
  strengths = dict(brightness=0.4, contrast=0.5, saturation=0.6, hue=0.2)

  def jitter(key):
    out = ops.color_jitter(key, jnp.asarray(image), prob=1.0, **strengths)
    # color_jitter splits its key into (apply, params); the params come from the second.
    params = ops.jitter_params(jax.random.split(key)[1], dtype=jnp.float64, **strengths)
    return out, params

  with jax.enable_x64(True):
    outs, params = jax.tree.map(np.asarray, jax.jit(jax.vmap(jitter))(_keys(12)))
  orders = set()
  for i, out in enumerate(outs):
    p = [float(v[i]) for v in params[1:]]
    order = tuple(int(o) for o in params.order[i])
    orders.add(order)
    assert sorted(order) == [0, 1, 2, 3]
    assert 0.6 <= p[0] <= 1.4 and 0.5 <= p[1] <= 1.5 and 0.4 <= p[2] <= 1.6 and -0.2 <= p[3] <= 0.2
    np.testing.assert_allclose(out, np_jitter(image, order, *p), atol=1e-10)
  assert len(orders) > 3  # the order is random, not fixed


# --------------------------------------------------------------------------- blur


def test_blur_kernel_sums_to_one_and_is_gaussian():
  for sigma in (0.3, 1.0, 2.5):
    k = np.asarray(ops.gaussian_kernel1d(sigma, 7))
    x = np.arange(-3, 4)
    expected = np.exp(-(x**2) / (2 * sigma**2))
    np.testing.assert_allclose(k.sum(), 1.0, rtol=1e-6)
    np.testing.assert_allclose(k, expected / expected.sum(), rtol=1e-5)


def test_blur_kernel_size_follows_simclr_rule():
  assert ops.blur_kernel_size(224, 224) == 23  # SimCLR: 224 // 10 = 22 -> radius 11
  assert ops.blur_kernel_size(96, 120) == 9
  assert ops.blur_kernel_size(16, 16) == 3  # floor of 3 taps
  assert all(ops.blur_kernel_size(s, s) % 2 == 1 for s in range(4, 300))


@pytest.mark.parametrize("kernel_size", [None, 5])
def test_gaussian_blur_equals_numpy_separable_convolution(kernel_size):
  image = _image(10, (12, 9, 3))
  sigma = 1.3
  key = jax.random.key(0)
  with jax.enable_x64(True):
    out = ops.gaussian_blur(
      key, jnp.asarray(image), sigma_range=(sigma, sigma), prob=1.0, kernel_size=kernel_size
    )
    off = ops.gaussian_blur(key, jnp.asarray(image), sigma_range=(0.1, 2.0), prob=0.0)
  size = kernel_size or ops.blur_kernel_size(12, 9)
  np.testing.assert_allclose(np.asarray(out), np_gauss_blur(image, sigma, size), atol=1e-12)
  np.testing.assert_array_equal(np.asarray(off), image)


# --------------------------------------------------------------------------- augment_batch


def test_augment_batch_identity_config_returns_image():
  images = (np.random.default_rng(11).random((3, 8, 8, 3)) * 255).astype(np.uint8)
  out = _run(_config(), _keys(3), images, 8)
  assert out.dtype == np.float32 and out.shape == (3, 8, 8, 3)
  np.testing.assert_allclose(out, images / 255.0, atol=1e-6)


def test_augment_batch_keys_and_input_types():
  # Crop and flip only: cheap to compile, and every view differs with its key.
  cfg = _config(crop_scale=(0.3, 1.0), crop_ratio=(0.75, 4 / 3), flip=True)
  images = (np.random.default_rng(12).random((4, 12, 12, 3)) * 255).astype(np.uint8)
  keys = _keys(4, seed=5)
  out = _run(cfg, keys, images, 10)
  assert out.shape == (4, 10, 10, 3) and out.dtype == np.float32
  # Raw uint32 keys give the same as the typed keys they hold; float input in [0, 1] the same
  # as the uint8 it came from.
  raw_keys_float_images = _run(cfg, jax.random.key_data(keys), images / 255.0, 10)
  np.testing.assert_allclose(raw_keys_float_images, out, atol=1e-6)
  np.testing.assert_allclose(augment.to_float_image(images), images / 255.0, rtol=1e-6)


def test_augment_batch_range_determinism_and_per_sample_independence():
  # Every op on, at extreme strengths, with probabilities strictly inside (0, 1).
  cfg = _config(
    crop_scale=(0.05, 1.0),
    crop_ratio=(0.2, 5.0),
    flip=True,
    jitter_prob=0.9,
    brightness=5.0,
    contrast=5.0,
    saturation=5.0,
    hue=0.5,
    grayscale_prob=0.3,
    blur_prob=0.7,
    blur_sigma=(0.01, 10.0),
  )
  n = 6
  images = np.random.default_rng(13).random((n, 12, 12, 3)).astype(np.float32)
  images[0] = 0.0
  images[1] = 1.0
  keys = _keys(n, seed=7)
  out = _run(cfg, keys, images, 10)
  assert out.shape == (n, 10, 10, 3) and out.dtype == np.float32
  assert np.isfinite(out).all() and out.min() >= 0.0 and out.max() <= 1.0
  np.testing.assert_array_equal(_run(cfg, keys, images, 10), out)
  # Different keys -> different views of the same image.
  views = _run(cfg, keys, np.repeat(images[2:3], n, axis=0), 10)
  for i in range(n):
    for j in range(i):
      assert np.abs(views[i] - views[j]).max() > 1e-3
  # Sample i depends only on (key i, image i): reordering the batch or replacing the other
  # images leaves it unchanged, and a batch holding only sample i reproduces it.
  perm = np.array([3, 0, 5, 1, 4, 2])
  np.testing.assert_allclose(_run(cfg, keys[perm], images[perm], 10), out[perm], atol=1e-6)
  others = np.random.default_rng(14).random(images.shape).astype(np.float32)
  others[4] = images[4]
  np.testing.assert_allclose(_run(cfg, keys, others, 10)[4], out[4], atol=1e-6)
  single = _run(cfg, keys[4:5], images[4:5], 10)
  np.testing.assert_allclose(single[0], out[4], atol=1e-6)


@pytest.mark.parametrize(
  "key, value, match",
  [
    ("crop_scale", (0.0, 1.0), "augment.crop_scale"),
    ("crop_scale", (0.8, 0.5), "augment.crop_scale"),
    ("crop_ratio", (1.0,), "augment.crop_ratio"),
    ("jitter_prob", 1.5, "augment.jitter_prob"),
    ("hue", 0.7, "augment.hue"),
    ("brightness", -0.1, "augment.brightness"),
    ("blur_sigma", (0.0, 1.0), "augment.blur_sigma"),
    ("blur_kernel_size", 4, "augment.blur_kernel_size"),
    ("blur_sigmaa", (0.1, 1.0), "unknown keys.*blur_sigmaa"),
  ],
)
def test_bad_config_raises_config_error_naming_the_key(key, value, match):
  cfg = _config().to_dict()
  cfg[key] = value
  with pytest.raises(ConfigError, match=match):
    augment.read_config(cfg)


def test_missing_key_and_bad_images_raise():
  cfg = _config().to_dict()
  del cfg["hue"]
  with pytest.raises(ConfigError, match="hue"):
    augment.read_config(cfg)
  with pytest.raises(DataError, match="3"):
    augment.augment_batch(_keys(2), np.zeros((2, 8, 8, 1), np.uint8), _config(), out_size=8)
  with pytest.raises(DataError, match="int32"):
    augment.augment_batch(_keys(2), np.zeros((2, 8, 8, 3), np.int32), _config(), out_size=8)


def test_digits_config_is_accepted():
  import importlib.util
  import pathlib

  path = pathlib.Path(__file__).resolve().parents[1] / "configs" / "digits.py"
  spec = importlib.util.spec_from_file_location("digits_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  cfg = augment.read_config(module.get_config().augment)
  assert cfg.shared["flip"] == 0.0 and cfg.shared["crop_scale"] == (0.5, 1.0)


# --------------------------------------------------------------------------- solarisation


def test_solarize_equals_numpy_definition():
  image = _image(15)
  image[0, 0, 0] = 0.3  # the threshold itself is inverted (BYOL: x < threshold keeps x)
  key = jax.random.key(0)
  with jax.enable_x64(True):
    out = np.asarray(ops.random_solarize(key, jnp.asarray(image), threshold=0.3, prob=1.0))
    off = np.asarray(ops.random_solarize(key, jnp.asarray(image), threshold=0.3, prob=0.0))
  np.testing.assert_array_equal(out, np.where(image < 0.3, image, 1.0 - image))
  assert out[0, 0, 0] == 0.7
  np.testing.assert_array_equal(off, image)


# --------------------------------------------------------------------------- per-view settings


def _views_config(views, **overrides) -> dict:
  return _config(views=views, **overrides).to_dict()


def test_per_view_settings_take_effect():
  # View 0 always blurred (at a fixed sigma) and never solarised, view 1 the other way round;
  # every other op off, so each view is its op of the image exactly.
  cfg = _views_config(
    ({"blur_prob": 1.0, "solarize_prob": 0.0}, {"blur_prob": 0.0, "solarize_prob": 1.0}),
    blur_sigma=(1.1, 1.1),
  )
  # The pipeline computes in float32 (the ops' float64 exactness is tested above).
  images = np.random.default_rng(16).random((3, 8, 8, 3)).astype(np.float32)
  keys = jax.random.split(jax.random.key(2), (3, 2))
  out = np.asarray(augment.augment_views(keys, images, cfg, out_size=8))
  assert out.shape == (3, 2, 8, 8, 3) and out.dtype == np.float32
  size = ops.blur_kernel_size(8, 8)
  for image, views in zip(images.astype(np.float64), out, strict=True):
    np.testing.assert_allclose(views[0], np_gauss_blur(image, 1.1, size), atol=1e-6)
    np.testing.assert_allclose(views[1], np.where(image < 0.5, image, 1.0 - image), atol=1e-6)


def test_views_are_their_keys_and_settings_and_deterministic():
  # augment_views = augment_batch per view, under that view's keys and settings; the same keys
  # give the same views, and without per-view settings it is one batch of every view.
  byol = _views_config(
    ({"blur_prob": 1.0, "solarize_prob": 0.0}, {"blur_prob": 0.1, "solarize_prob": 0.2}),
    crop_scale=(0.3, 1.0),
    crop_ratio=(0.75, 4 / 3),
    flip=True,
  )
  images = (np.random.default_rng(17).random((2, 3, 10, 10, 3)) * 255).astype(np.uint8)
  keys = jax.random.split(jax.random.key(3), (2, 3, 2))
  views = jax.jit(lambda k, x: augment.augment_views(k, x, byol, out_size=8))
  out = np.asarray(views(keys, images))
  assert out.shape == (2, 3, 2, 8, 8, 3)
  np.testing.assert_array_equal(np.asarray(views(keys, images)), out)
  flat = images.reshape(6, 10, 10, 3)
  for v in range(2):
    alone = augment.augment_batch(keys[..., v].reshape(-1), flat, byol, out_size=8, view=v)
    np.testing.assert_allclose(out[:, :, v].reshape(6, 8, 8, 3), alone, atol=1e-6)
  other = np.asarray(views(jax.random.split(jax.random.key(4), (2, 3, 2)), images))
  assert np.abs(other - out).max() > 0.1

  shared = dict(byol, views=())
  same = np.asarray(augment.augment_views(keys, images, shared, out_size=8))
  batch = augment.augment_batch(keys.reshape(-1), np.repeat(flat, 2, axis=0), shared, out_size=8)
  np.testing.assert_array_equal(same.reshape(12, 8, 8, 3), batch)


def test_an_op_switched_off_or_added_leaves_the_others_randomness(monkeypatch):
  # A new op is one function and one registry entry; each op draws from its own stream, so the
  # crop and flip of a pipeline are the same with or without the ops after them.
  def invert(key, image, settings):
    return jnp.where(jax.random.uniform(key) < settings["invert_prob"], 1.0 - image, image)

  monkeypatch.setitem(
    augment.OPS, "invert", augment.Op(invert, 6, {"invert_prob": augment.pipeline.PROBABILITY})
  )
  base = _config(crop_scale=(0.3, 1.0), crop_ratio=(0.75, 4 / 3), flip=True).to_dict()
  images = np.random.default_rng(18).random((4, 10, 10, 3)).astype(np.float32)
  keys = _keys(4, seed=9)

  def run(**changes):
    return np.asarray(augment.augment_batch(keys, images, dict(base, **changes), out_size=8))

  plain = run(ops=("crop", "flip"))
  np.testing.assert_array_equal(run(), plain)  # the other ops listed, at probability 0
  np.testing.assert_array_equal(run(ops=("crop", "flip", "invert"), invert_prob=1.0), 1 - plain)
  np.testing.assert_array_equal(run(ops=("crop", "flip", "invert"), invert_prob=0.0), plain)


@pytest.mark.parametrize(
  "changes, match",
  [
    (dict(ops=("crop", "twirl")), r"'twirl'.*valid: \['crop', 'flip'"),
    (dict(ops=("flip",)), "must include 'crop'"),
    (dict(ops="crop"), "augment.ops must be a tuple"),
    (dict(views=({"blur_prob": 2.0}, {})), r"augment.views\[0\].blur_prob must be a number"),
    (dict(views=({}, {"blur_probb": 0.1})), r"views\[1\] has unknown keys \['blur_probb'\]"),
    (dict(views={"blur_prob": 0.1}), "augment.views must be a tuple of mappings"),
    (dict(views=({},)), "1 entries for 2 views"),
  ],
)
def test_bad_pipeline_or_views_raise_config_error(changes, match):
  with pytest.raises(ConfigError, match=match):
    augment.read_config(dict(_config().to_dict(), **changes), n_views=2)


def test_views_may_be_config_dicts():
  views = (ml_collections.ConfigDict({"blur_prob": 1.0}), {"blur_prob": 0.0})
  pipeline = augment.read_config(_views_config(views), n_views=2)
  assert [v["blur_prob"] for v in pipeline.views] == [1.0, 0.0]


def test_settings_of_an_op_left_out_may_stay():
  # So an op can be switched off from the command line (a key cannot be deleted there).
  cfg = dict(_config().to_dict(), ops=("crop",))
  del cfg["solarize_prob"]
  assert augment.read_config(cfg).ops == ("crop",)
  with pytest.raises(ConfigError, match="augment.hue"):
    augment.read_config(dict(cfg, hue=0.9))


def test_byol_runs_its_recipe_from_the_config_and_the_command_line(monkeypatch):
  from configs import digits
  from tests.conftest import REPO
  from tests.test_cli import parse

  pipeline = augment.read_config(digits.get_config("objective=byol").augment, n_views=2)
  assert [v["blur_prob"] for v in pipeline.views] == [1.0, 0.1]
  assert [v["solarize_prob"] for v in pipeline.views] == [0.0, 0.2]
  assert all(v["saturation"] == 0.2 and v["flip"] == 0.0 for v in pipeline.views)
  assert augment.read_config(digits.get_config("objective=byol_nn").augment).views == pipeline.views
  assert augment.read_config(digits.get_config("objective=simclr").augment).views == ()

  monkeypatch.chdir(REPO)
  config = parse(
    [
      "prog",
      "--config=configs/digits.py:objective=byol",
      "--config.augment.views[1].solarize_prob=0.5",
      "--config.augment.saturation=0.3",
    ],
    monkeypatch,
  )
  views = augment.read_config(config.augment).views
  assert [v["solarize_prob"] for v in views] == [0.0, 0.5]
  assert [v["saturation"] for v in views] == [0.3, 0.3]
  # The override edited this config's copy of the recipe, not the recipe.
  assert augment.read_config(digits.get_config("objective=byol").augment).views == pipeline.views
  config = parse(
    [
      "prog",
      "--config=configs/digits.py:objective=simclr",
      "--config.augment.views=({'blur_prob': 1.0}, {'blur_prob': 0.0})",
    ],
    monkeypatch,
  )
  assert [v["blur_prob"] for v in augment.read_config(config.augment).views] == [1.0, 0.0]
