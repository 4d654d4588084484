"""Data: real data sets (an explicit registry), synthetic image folders and the batch sampler.

train, test, class_names = load_real(config.data)
synthetic = load_synthetic(config.data.synthetic_dir, class_names,
                           image_size=config.data.image_size)
sampler = BatchSampler(train.labels, synthetic.labels, ...)

The few-shot regime (data.real_per_class = k > 0): `load_splits(config)` keeps k labelled real
train images per class for training and the probe, and returns the rest of the real train split
as the validation pool, which only measures utility and selects hyperparameters.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

from syncon_jax.data import aircraft, birdsnap, cifake, digits, tfds_sources
from syncon_jax.data.folders import (
  LazyImages,
  Split,
  SyntheticSet,
  decode_options,
  load_image_folder,
  load_synthetic,
  normalize_class_name,
)
from syncon_jax.data.sampler import BatchSampler
from syncon_jax.errors import ConfigError, DataError

__all__ = [
  "DATASETS",
  "BatchSampler",
  "LazyImages",
  "Split",
  "SyntheticSet",
  "load_image_folder",
  "load_real",
  "load_splits",
  "RealSplits",
  "few_shot_indices",
  "load_synthetic",
  "normalize_class_name",
]

RealLoader = Callable[[Any], tuple[Split, Split, list[str]]]


def _required(data_config: Any, key: str) -> Any:
  value = data_config.get(key)
  if value is None:
    raise ConfigError(f"data.{key} must be set for data.name={data_config.get('name')!r}")
  return value


def _load_digits(data_config: Any) -> tuple[Split, Split, list[str]]:
  return digits.load(
    image_size=_required(data_config, "image_size"),
    test_fraction=_required(data_config, "test_fraction"),
    split_seed=_required(data_config, "split_seed"),
  )


def _load_image_folder(data_config: Any) -> tuple[Split, Split, list[str]]:
  """<manual_dir>/<train_split>/<class>/* and <manual_dir>/<test_split>/<class>/*; the classes
  are the train folders, test folders are matched to them by normalised name."""
  root = os.path.expanduser(_required(data_config, "manual_dir"))
  _required(data_config, "image_size")
  kw = dict(lazy=bool(data_config.get("lazy", False)), **decode_options(data_config))
  train_dir = os.path.join(root, data_config.get("train_split") or "train")
  test_dir = os.path.join(root, data_config.get("test_split") or "test")
  train, names = load_image_folder(train_dir, **kw)
  test, _ = load_image_folder(test_dir, class_names=names, **kw)
  return train, test, names


# name -> loader(data_config) -> (train, test, class_names). The TFDS names are TFDS's own.
DATASETS: dict[str, RealLoader] = {
  "digits": _load_digits,
  **{name: tfds_sources.load_from_config for name in tfds_sources.SOURCES},
  "birdsnap": birdsnap.load_from_config,
  "aircraft": aircraft.load_from_config,
  "cifake": cifake.load_from_config,
  "image_folder": _load_image_folder,
}


def load_real(data_config: Any) -> tuple[Split, Split, list[str]]:
  """Loads the real data set named by data_config.name (the `data` ConfigDict, or a dict).

  Returns (train, test, class_names); images uint8 [N, S, S, 3] (a numpy array, or LazyImages
  for sets decoded on access), labels int32 [N].
  """
  name = data_config.get("name")
  if name not in DATASETS:
    raise ConfigError(f"Unknown data.name {name!r}; valid: {sorted(DATASETS)}")
  return DATASETS[name](data_config)


# ----------------------------------------------------------------------------------------------
# The few-shot regime.


class RealSplits(NamedTuple):
  """The real data of a run. train: what pretraining and the probe see (k images per class in
  the few-shot regime, else the whole train split); pool: the rest of the train split (empty
  unless few-shot), never trained on; test: the data set's test split."""

  train: Split
  pool: Split
  test: Split
  class_names: list[str]


def few_shot_indices(labels: np.ndarray, per_class: int, seed: int) -> np.ndarray:
  """`per_class` indices of every class present, drawn without replacement by `seed`.

  labels: int [N] -> int64 [num_present_classes * per_class], sorted. A class with fewer than
  `per_class` images is a DataError (the regime promises k per class).
  """
  labels = np.asarray(labels).reshape(-1)
  rng = np.random.default_rng(int(seed))
  picks = []
  for c in np.unique(labels):
    idx = np.flatnonzero(labels == c)
    if len(idx) < per_class:
      raise DataError(
        f"data.real_per_class={per_class}, but class {int(c)} has only {len(idx)} train images"
      )
    picks.append(rng.choice(idx, size=per_class, replace=False))
  return np.sort(np.concatenate(picks)).astype(np.int64)


def _take(images, idx: np.ndarray):
  """Rows idx of an image array, keeping a LazyImages lazy (the pool may be large)."""
  return images.subset(idx) if isinstance(images, LazyImages) else images[idx]


def real_subset_seed(config: Any) -> int:
  """data.real_subset_seed, or the run's seed when it is None (so each seed draws its own k)."""
  seed = config.data.get("real_subset_seed")
  return int(config.seed if seed is None else seed)


def load_splits(config: Any) -> RealSplits:
  """The run's real data (the full config: data.real_per_class and the seed decide the split).

  data.real_per_class k > 0: train = k images per class drawn by real_subset_seed(config), pool
  = every other train image; k = 0 or unset: train = the whole train split, pool empty.
  """
  train, test, class_names = load_real(config.data)
  k = config.data.get("real_per_class") or 0
  if not isinstance(k, int | np.integer) or k < 0:
    raise ConfigError(f"data.real_per_class must be a non-negative integer, got {k!r}")
  if k == 0:
    empty = Split(train.images[:0], train.labels[:0])
    return RealSplits(train, empty, test, class_names)
  keep = few_shot_indices(train.labels, int(k), real_subset_seed(config))
  rest = np.setdiff1d(np.arange(len(train.labels)), keep)
  return RealSplits(
    Split(_take(train.images, keep), train.labels[keep]),
    Split(_take(train.images, rest), train.labels[rest]),
    test,
    class_names,
  )
