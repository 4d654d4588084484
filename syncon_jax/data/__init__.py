"""Data: real data sets (an explicit registry), synthetic image folders and the batch sampler.

train, test, class_names = load_real(config.data)
synthetic = load_synthetic(config.data.synthetic_dir, class_names,
                           image_size=config.data.image_size)
sampler = BatchSampler(train.labels, synthetic.labels, ...)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from syncon_jax.data import digits
from syncon_jax.data.folders import (
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


# name -> loader(data_config) -> (train, test, class_names)
DATASETS: dict[str, RealLoader] = {
  "digits": _load_digits,
}


def load_real(data_config: Any) -> tuple[Split, Split, list[str]]:
  """Loads the real data set named by data_config.name (the `data` ConfigDict, or a dict).

  Returns (train, test, class_names); images uint8 [N, S, S, 3], labels int32 [N].
  """
  name = data_config.get("name")
  if name not in DATASETS:
    raise ConfigError(f"Unknown data.name {name!r}; valid: {sorted(DATASETS)}")
  return DATASETS[name](data_config)
