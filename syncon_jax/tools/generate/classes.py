"""The class names to generate: those the trainer matches synthetic folders against.

A TFDS set's names are its builder's `label` feature, read as data/tfds_sources.py reads them
(without reading any image). Every other set (digits, Birdsnap, FGVC-Aircraft, CIFAKE, image
folders) is listed by its own loader in `data.load_real` with `data.lazy=True`, so nothing is
decoded. A set that is not prepared here can name its classes in a file instead
(--classes_file, one a line).
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from typing import Any

from syncon_jax import data
from syncon_jax.data import tfds_sources
from syncon_jax.data.folders import normalize_class_name
from syncon_jax.errors import ConfigError, DataError, UserError

CLASSES_FILE_HINT = "pass --classes_file=FILE with one class name a line"


def _tfds_names(data_config: Any) -> list[str]:
  name = data_config.get("name")
  tfds = tfds_sources.import_tfds()
  builder = tfds.builder(name, data_dir=data_config.get("data_dir"))
  names = [str(n) for n in builder.info.features["label"].names]
  # Some builders (CIFAR, CUB) learn their names while preparing; until then they are "0", "1".
  if not builder.is_prepared() and names == [str(i) for i in range(len(names))]:
    raise DataError(
      f"TFDS data set {name!r} is not prepared in {builder.data_dir!r}, so its class names are "
      f"not known. {tfds_sources._how_to_get(name, data_config.get('data_dir'))} Or "
      f"{CLASSES_FILE_HINT}."
    )
  return names


def from_config(data_config: Any) -> list[str]:
  """The class names of the data set named by data_config.name (the config's `data` dict)."""
  name = data_config.get("name")
  if name not in data.DATASETS:
    raise ConfigError(f"Unknown data.name {name!r}; valid: {sorted(data.DATASETS)}")
  if name in tfds_sources.SOURCES:
    return _tfds_names(data_config)
  lazy = dict(data_config.items()) if hasattr(data_config, "items") else dict(data_config)
  lazy["lazy"] = True
  try:
    _, _, names = data.load_real(lazy)
  except UserError as e:
    raise type(e)(
      f"{e}\n(The class names of {name!r} come from its data, or {CLASSES_FILE_HINT}.)"
    ) from e
  return list(names)


def from_file(path: str) -> list[str]:
  """One class name a line (blank lines skipped)."""
  try:
    with open(path, encoding="utf-8") as f:
      names = [line.strip() for line in f if line.strip()]
  except OSError as e:
    raise DataError(f"Cannot read --classes_file {path!r}: {e.strerror}") from e
  if not names:
    raise DataError(f"--classes_file {path!r} lists no class.")
  return names


def select(class_names: Sequence[str], wanted: Sequence[str]) -> list[str]:
  """The classes of `wanted` (matched after normalisation), in data set order; all if empty.

  An unknown name is a DataError that lists the nearest class names.
  """
  if not wanted:
    return list(class_names)
  by_norm = {normalize_class_name(n): n for n in class_names}
  chosen = set()
  for name in wanted:
    key = normalize_class_name(name)
    if key not in by_norm:
      near = difflib.get_close_matches(key, list(by_norm), n=3, cutoff=0.5)
      hint = ", ".join(repr(by_norm[k]) for k in near) or "none close"
      raise DataError(
        f"Unknown class {name!r} in --classes ({len(class_names)} classes; nearest: {hint})."
      )
    chosen.add(by_norm[key])
  return [n for n in class_names if n in chosen]
