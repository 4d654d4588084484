"""scikit-learn's handwritten digits (UCI optdigits test set, 1797 images; bundled, no download).

Each digit was acquired as a 32x32 binary bitmap of the size-normalised digit, cut into 4x4
blocks whose on-pixel counts give an 8x8 grid of values 0..16. We show that grid as bright
ink on a dark ground (0 -> 0, 16 -> 255) and upsample it with `grid_to_image`, the one
upsampling that the rendered synthetic digits (tools/render_digits.py) also go through, so the
two domains differ in the glyphs and not in the pipeline.
"""

from __future__ import annotations

import numpy as np

from syncon_jax.data.folders import Split
from syncon_jax.errors import ConfigError

CLASS_NAMES = [str(d) for d in range(10)]
GRID_SIZE = 8
GRID_MAX = 16.0  # a 4x4 block holds at most 16 on-pixels


def _bilinear_matrix(size_in: int, size_out: int) -> np.ndarray:
  """[size_out, size_in] weights of bilinear resampling with pixel centres aligned.

  Output pixel o samples input coordinate (o + 0.5) * size_in / size_out - 0.5, clamped to the
  edge pixels (as PIL's and jax.image's 'bilinear' do when upsampling).
  """
  x = (np.arange(size_out) + 0.5) * size_in / size_out - 0.5
  x = np.clip(x, 0, size_in - 1)
  lo = np.floor(x).astype(int)
  hi = np.minimum(lo + 1, size_in - 1)
  frac = x - lo
  w = np.zeros((size_out, size_in))
  np.add.at(w, (np.arange(size_out), lo), 1 - frac)
  np.add.at(w, (np.arange(size_out), hi), frac)
  return w


def grid_to_image(grid: np.ndarray, image_size: int) -> np.ndarray:
  """Turns 8x8 block-count grids into bright-on-dark RGB images.

  Args:
    grid: float or int [..., 8, 8], values 0..16 (clipped to that range).
    image_size: output side S.

  Returns:
    uint8 [..., S, S, 3]: separable bilinear upsampling (pixel centres aligned, edges clamped)
    of grid * 255 / 16, rounded, the same value in all three channels.
  """
  grid = np.asarray(grid, np.float64)
  if grid.shape[-2:] != (GRID_SIZE, GRID_SIZE):
    raise ValueError(f"grid must end in ({GRID_SIZE}, {GRID_SIZE}), got shape {grid.shape}")
  w = _bilinear_matrix(GRID_SIZE, image_size)
  up = np.einsum("ij,...jk,lk->...il", w, np.clip(grid, 0, GRID_MAX), w)
  gray = np.clip(np.rint(up * (255.0 / GRID_MAX)), 0, 255).astype(np.uint8)
  return np.repeat(gray[..., None], 3, axis=-1)


def load(
  *, image_size: int, test_fraction: float, split_seed: int
) -> tuple[Split, Split, list[str]]:
  """Loads the digits with a fixed stratified split.

  Args:
    image_size: side of the output images (data.image_size).
    test_fraction: share of each class held out for test (data.test_fraction), in (0, 1).
    split_seed: random_state of sklearn's train_test_split (data.split_seed).

  Returns:
    (train, test, ["0", ..., "9"]); images uint8 [N, S, S, 3], labels int32 [N]; within each
    split the images keep their order in sklearn's array.
  """
  if not isinstance(image_size, int | np.integer) or image_size < 1:
    raise ConfigError(f"data.image_size must be a positive integer, got {image_size!r}")
  if not 0.0 < float(test_fraction) < 1.0:
    raise ConfigError(f"data.test_fraction must lie in (0, 1), got {test_fraction!r}")
  # Imported here so that the renderer, which needs only grid_to_image, starts without sklearn.
  from sklearn.datasets import load_digits
  from sklearn.model_selection import train_test_split

  digits = load_digits()
  labels = digits.target.astype(np.int32)
  index = np.arange(len(labels))
  train_idx, test_idx = train_test_split(
    index, test_size=float(test_fraction), stratify=labels, random_state=int(split_seed)
  )
  # Sorting makes the split a set: order inside a split carries no information.
  train_idx, test_idx = np.sort(train_idx), np.sort(test_idx)
  images = grid_to_image(digits.images, int(image_size))
  return (
    Split(images[train_idx], labels[train_idx]),
    Split(images[test_idx], labels[test_idx]),
    list(CLASS_NAMES),
  )
