"""Data: real data sets (an explicit registry), synthetic image folders and the batch sampler.

train, test, class_names = load_real(config.data)
synthetic = load_synthetic(config.data.synthetic_dir, class_names,
                           image_size=config.data.image_size)
sampler = BatchSampler(train.labels, synthetic.labels, ...)
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from syncon_jax.data import aircraft, birdsnap, cifake, digits, tfds_sources
from syncon_jax.data.folders import (
  LazyImages,
  Split,
  SyntheticSet,
  load_image_folder,
  load_synthetic,
  normalize_class_name,
)
from syncon_jax.data.sampler import BatchSampler
from syncon_jax.errors import ConfigError

__all__ = [
  "DATASETS",
  "BatchSampler",
  "LazyImages",
  "Split",
  "SyntheticSet",
  "load_image_folder",
  "load_real",
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
  size, lazy = _required(data_config, "image_size"), bool(data_config.get("lazy", False))
  threads = data_config.get("decode_threads")
  train_dir = os.path.join(root, data_config.get("train_split") or "train")
  test_dir = os.path.join(root, data_config.get("test_split") or "test")
  train, names = load_image_folder(train_dir, image_size=size, lazy=lazy, num_threads=threads)
  test, _ = load_image_folder(
    test_dir, image_size=size, class_names=names, lazy=lazy, num_threads=threads
  )
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
