"""FGVC-Aircraft 2013b (Maji et al. 2013), read from the official archive in data.manual_dir.

data.manual_dir is the folder that holds `fgvc-aircraft-2013b/`, or that folder itself. We read

    fgvc-aircraft-2013b/data/images/<id>.jpg
    fgvc-aircraft-2013b/data/images_<level>_<split>.txt    one `<id> <name with spaces>` a line
    fgvc-aircraft-2013b/data/variants.txt                  class order at the variant level

with level = data.label_level (variant: 102 classes, family: 70, manufacturer: 41) and split
one of train, val, trainval, test (data.train_split / data.test_split; trainval + test by
default, BYOL's protocol refits the probe on train+val). Class i is the i-th line of
variants.txt / families.txt / manufacturers.txt, or, if that file is absent, the i-th name in
sorted order. The 20-pixel copyright banner at the bottom of every image is cut off before
resizing, as the data set's README asks.

Some variant names hold a '/' ("F-16A/B", "F/A-18"), which no folder name can; a synthetic
folder for them needs a name that matches after normalisation, see folders.normalize_class_name.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
from absl import logging

from syncon_jax.data.folders import LazyImages, Split, decode_options
from syncon_jax.errors import ConfigError, DataError

ARCHIVE_DIR = "fgvc-aircraft-2013b"
BANNER_PX = 20  # the README: "Each image has at the bottom a banner 20 pixels high"
LEVELS = {"variant": "variants.txt", "family": "families.txt", "manufacturer": "manufacturers.txt"}
SPLITS = ("train", "val", "trainval", "test")

HOW_TO_GET = """How to get FGVC-Aircraft 2013b (2.75 GB):
  wget https://www.robots.ox.ac.uk/~vgg/data/fgvc-aircraft/archives/fgvc-aircraft-2013b.tar.gz
  tar xzf fgvc-aircraft-2013b.tar.gz
and run with --config.data.manual_dir=<the folder that holds fgvc-aircraft-2013b/>."""


def find_root(manual_dir: str) -> str:
  """The fgvc-aircraft-2013b folder: manual_dir/fgvc-aircraft-2013b or manual_dir itself."""
  if not manual_dir:
    raise ConfigError(f"data.manual_dir must point at FGVC-Aircraft.\n{HOW_TO_GET}")
  manual_dir = os.path.expanduser(manual_dir)
  candidates = [os.path.join(manual_dir, ARCHIVE_DIR), manual_dir]
  for root in candidates:
    if os.path.isdir(os.path.join(root, "data", "images")):
      return root
  raise DataError(
    "FGVC-Aircraft: no data/images folder in "
    + " or ".join(repr(c) for c in candidates)
    + f".\n{HOW_TO_GET}"
  )


def _read_list(path: str) -> list[tuple[str, str]]:
  """(image id, name) pairs of an `<id> <name with spaces>` file."""
  if not os.path.isfile(path):
    raise DataError(f"FGVC-Aircraft: {path} not found.\n{HOW_TO_GET}")
  out = []
  with open(path, encoding="utf-8") as f:
    for line_no, line in enumerate(f, 1):
      line = line.strip()
      if not line:
        continue
      image_id, _, name = line.partition(" ")
      if not name.strip():
        raise DataError(f"FGVC-Aircraft: {path}:{line_no} has no label after the image id.")
      out.append((image_id, name.strip()))
  return out


def load(
  manual_dir: str,
  *,
  image_size: int,
  label_level: str = "variant",
  train_split: str = "trainval",
  test_split: str = "test",
  lazy: bool = False,
  num_threads: int | None = None,
  resize: str = "crop",
) -> tuple[Split, Split, list[str]]:
  """Loads FGVC-Aircraft at one label level.

  Returns:
    (train, test, class names); images uint8 [N, S, S, 3] with the banner removed (LazyImages
    when lazy), labels int32 [N]; rows in the order of the split files.
  """
  if label_level not in LEVELS:
    raise ConfigError(f"data.label_level={label_level!r} is not a level; valid: {list(LEVELS)}")
  for key, split in (("train_split", train_split), ("test_split", test_split)):
    if split not in SPLITS:
      raise ConfigError(f"data.{key}={split!r} is not an FGVC-Aircraft split; valid: {SPLITS}")
  data_dir = os.path.join(find_root(manual_dir), "data")
  lists = {
    role: _read_list(os.path.join(data_dir, f"images_{label_level}_{split}.txt"))
    for role, split in (("train", train_split), ("test", test_split))
  }
  classes_file = os.path.join(data_dir, LEVELS[label_level])
  if os.path.isfile(classes_file):
    with open(classes_file, encoding="utf-8") as f:
      class_names = [line.strip() for line in f if line.strip()]
  else:
    class_names = sorted({name for pairs in lists.values() for _, name in pairs})
  index = {name: i for i, name in enumerate(class_names)}
  out = {}
  for role, pairs in lists.items():
    unknown = sorted({name for _, name in pairs} - set(index))
    if unknown:
      raise DataError(
        f"FGVC-Aircraft: labels {unknown[:3]} of the {role} split are not in {classes_file}."
      )
    paths = [os.path.join(data_dir, "images", f"{image_id}.jpg") for image_id, _ in pairs]
    absent = [p for p in paths if not os.path.isfile(p)]
    if absent:
      raise DataError(
        f"FGVC-Aircraft: {len(absent)} image(s) listed for {role} are missing, e.g. "
        f"{absent[:3]}; the archive is incomplete, extract it again.\n{HOW_TO_GET}"
      )
    labels = np.asarray([index[name] for _, name in pairs], np.int32)
    images = LazyImages(
      paths, image_size, num_threads=num_threads, crop_bottom=BANNER_PX, resize=resize
    )
    out[role] = Split(images if lazy else images.materialize(), labels)
  logging.info(
    "FGVC-Aircraft (%s): %d %s and %d %s images, %d classes.",
    label_level,
    len(out["train"].labels),
    train_split,
    len(out["test"].labels),
    test_split,
    len(class_names),
  )
  return out["train"], out["test"], class_names


def load_from_config(data_config: Any) -> tuple[Split, Split, list[str]]:
  get = data_config.get
  return load(
    get("manual_dir"),
    label_level=get("label_level", "variant"),
    train_split=get("train_split") or "trainval",
    test_split=get("test_split") or "test",
    lazy=bool(get("lazy", False)),
    **decode_options(data_config),
  )
