"""TensorFlow Datasets sources: CIFAR, Flowers-102, CUB-200, DTD, Food-101, Pets, Cars.

Images are read undecoded (tfds.decode.SkipDecoding) and decoded by the same Pillow code as the
image folders (folders.read_image: RGB, the shorter side to the stored size data.decode_size
and the centred square, or both sides with data.resize="squash"), so a TFDS set and its
synthetic folder go through one pipeline. With data.lazy the
encoded bytes stay in host memory and rows are decoded when the sampler asks for them.

Class names come from the builder's `label` feature (`info.features["label"].names`).
`data.data_dir` is the TFDS data directory, a local path or gs:// (None: TFDS's default,
~/tensorflow_datasets); the public prepared copies live in gs://tfds-data/datasets.

TensorFlow is imported only when a TFDS source is loaded (it costs ~10 s) and is kept off
every GPU right after the import, so it never takes accelerator memory from JAX.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
from absl import logging

from syncon_jax.data.folders import LazyImages, Split, decode_options
from syncon_jax.errors import ConfigError, DataError


class TfdsSource(NamedTuple):
  """Default splits of a TFDS data set: training images and the images the probe is scored on."""

  train_split: str
  test_split: str


# name -> default splits. Where a validation split exists it joins train: the linear probe picks
# its L2 strength on held-out parts of train (BYOL's protocol: select on val, refit on
# train+val, report test). Food-101 has no test split; its "validation" is the official test.
SOURCES: dict[str, TfdsSource] = {
  "cifar10": TfdsSource("train", "test"),
  "cifar100": TfdsSource("train", "test"),
  "oxford_flowers102": TfdsSource("train+validation", "test"),
  "caltech_birds2011": TfdsSource("train", "test"),
  "dtd": TfdsSource("train+validation", "test"),
  "food101": TfdsSource("train", "validation"),
  "oxford_iiit_pet": TfdsSource("train", "test"),
  "cars196": TfdsSource("train", "test"),
}


def import_tfds():
  """Imports tensorflow_datasets with TensorFlow hidden from every GPU; returns the module."""
  import tensorflow as tf

  # Before anything else touches TF: once it has initialised a GPU, the devices are fixed and
  # it would hold memory that JAX needs.
  tf.config.set_visible_devices([], "GPU")
  import tensorflow_datasets as tfds

  return tfds


def _how_to_get(name: str, data_dir_root: str) -> str:
  """data_dir_root: the TFDS root (what data.data_dir names), not the versioned subfolder."""
  return (
    f"Rerun with --config.data.download=True --config.data.data_dir={data_dir_root} to let the "
    f"run download and prepare it there once (needs internet; some sets ask for a manual "
    f"download, see https://www.tensorflow.org/datasets/catalog/{name}), or point "
    f"--config.data.data_dir at the root folder of a prepared copy (the one holding {name}/, "
    f"e.g. gs://tfds-data/datasets or your bucket)."
  )


def _read_split(tfds, builder, split: str, name: str) -> tuple[list[bytes], np.ndarray]:
  """All (encoded image, label) pairs of a split, in the builder's fixed order."""
  # Only image and label: the other features (boxes, masks, file names) would cost decoding.
  decoders = tfds.decode.PartialDecoding(
    {"image": True, "label": True}, decoders={"image": tfds.decode.SkipDecoding()}
  )
  try:
    ds = builder.as_dataset(split=split, decoders=decoders, shuffle_files=False)
  except AssertionError as e:  # TFDS's way of saying "not prepared in data_dir"
    raise DataError(
      f"TFDS data set {name!r} was not found in {builder.data_dir!r}. "
      + _how_to_get(name, builder.data_dir_root)
    ) from e
  except ValueError as e:  # an unknown split name or bad split syntax
    raise ConfigError(f"TFDS data set {name!r}: bad split {split!r} ({e})") from e
  images: list[bytes] = []
  labels: list[int] = []
  for example in tfds.as_numpy(ds):
    images.append(bytes(example["image"]))
    labels.append(int(example["label"]))
  if not images:
    raise DataError(f"TFDS data set {name!r} split {split!r} in {builder.data_dir!r} is empty.")
  return images, np.asarray(labels, np.int32)


def load(
  name: str,
  *,
  image_size: int,
  data_dir: str | None = None,
  train_split: str | None = None,
  test_split: str | None = None,
  download: bool = False,
  lazy: bool = False,
  num_threads: int | None = None,
  resize: str = "crop",
) -> tuple[Split, Split, list[str]]:
  """Loads a TFDS image classification set named in SOURCES.

  Args:
    name: TFDS name (data.name), a key of SOURCES.
    image_size: side S of the stored images (data.decode_size, else data.image_size).
    data_dir: TFDS data directory (data.data_dir), local or gs://; None for TFDS's default.
    train_split, test_split: TFDS split strings (data.train_split / data.test_split); None
      takes SOURCES[name].
    download: prepare the data set in data_dir if it is not there (data.download).
    lazy: keep encoded bytes and decode on access (data.lazy) instead of decoding everything.
    num_threads: decoding threads (data.decode_threads); None for min(8, cores).
    resize: "crop" or "squash" (data.resize; folders.read_image).

  Returns:
    (train, test, class_names); images uint8 [N, S, S, 3] (LazyImages when lazy), labels
    int32 [N].
  """
  if name not in SOURCES:
    raise ConfigError(f"{name!r} is not a TFDS source here; valid: {sorted(SOURCES)}")
  if not isinstance(image_size, int | np.integer) or image_size < 1:
    raise ConfigError(f"data.image_size must be a positive integer, got {image_size!r}")
  tfds = import_tfds()
  builder = tfds.builder(name, data_dir=data_dir)
  if download and not builder.is_prepared():
    logging.info("Preparing TFDS %s in %s (data.download=True).", name, builder.data_dir)
    builder.download_and_prepare()
  label = builder.info.features["label"]
  class_names = [str(n) for n in label.names]
  splits = {
    "train": train_split or SOURCES[name].train_split,
    "test": test_split or SOURCES[name].test_split,
  }
  out = {}
  for role, split in splits.items():
    encoded, labels = _read_split(tfds, builder, split, name)
    if labels.max() >= len(class_names):
      raise DataError(f"TFDS {name!r} {split!r} has label {labels.max()} >= {len(class_names)}")
    names = [f"tfds {name} {split}[{i}]" for i in range(len(encoded))]
    images = LazyImages(encoded, image_size, names=names, num_threads=num_threads, resize=resize)
    out[role] = Split(images if lazy else images.materialize(), labels)
    logging.info("TFDS %s %s: %d images.", name, split, len(labels))
  return out["train"], out["test"], class_names


def load_from_config(data_config: Any) -> tuple[Split, Split, list[str]]:
  """The DATASETS entry: load(data.name, ...) with the keys of the `data` ConfigDict."""
  get = data_config.get
  return load(
    get("name"),
    data_dir=get("data_dir"),
    train_split=get("train_split"),
    test_split=get("test_split"),
    download=bool(get("download", False)),
    lazy=bool(get("lazy", False)),
    **decode_options(data_config),
  )
