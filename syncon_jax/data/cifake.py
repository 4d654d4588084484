"""CIFAKE (Bird & Lotfi 2024): CIFAR-10 photos (REAL) and Stable Diffusion 1.4 look-alikes (FAKE).

Layout of the Kaggle download, in data.manual_dir (or its `cifake/` sub-folder):

    train/REAL/*.jpg  train/FAKE/*.jpg   50,000 each, 32x32
    test/REAL/*.jpg   test/FAKE/*.jpg    10,000 each

Two tasks (data.task):
  real_fake  classes ["REAL", "FAKE"]: is the image a photo or generated?
  cifar10    the CIFAR-10 class, read from the file name (below), on the images of
             data.train_sources / data.test_sources (e.g. train on FAKE, test on REAL: the
             train-on-synthetic / test-on-real experiment of the StableRep CIFAKE replication).

The CIFAR-10 class is in the file name. The data set's page documents no class labels; the
rule below is the one CIFAKE users found and a third-party CIFAKE loader encodes; we could not
check it against the images here (no download), so verify the logged counts on your copy:
`<n>.jpg` is class 1 and `<n> (k).jpg` is class k, for k in 2..10, in CIFAR-10's order
airplane, automobile, bird, cat, deer, dog, frog, horse, ship, truck. So "1234.jpg" is an
airplane and "1234 (3).jpg" a bird. The suffix looks like what a file manager appends to the
k-th file saved under an existing name: the images of each class were numbered from the same
counter and saved class by class. " (1)" is read as class 1 too. A name that fits neither form
is a DataError for the cifar10 task. The per-class counts are logged: expect 5,000 per class
in train and 1,000 in test per source if the rule holds for your copy.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
from absl import logging

from syncon_jax.data.folders import IMAGE_EXTENSIONS, LazyImages, Split, decode_options
from syncon_jax.errors import ConfigError, DataError

CIFAR10_CLASSES = [
  "airplane",
  "automobile",
  "bird",
  "cat",
  "deer",
  "dog",
  "frog",
  "horse",
  "ship",
  "truck",
]
SOURCES = ("REAL", "FAKE")
TASKS = ("real_fake", "cifar10")
_NAME = re.compile(r"^\d+(?: \((\d+)\))?$")  # "1234" or "1234 (7)", extension stripped

HOW_TO_GET = """How to get CIFAKE (Kaggle account and API token needed):
  pip install kaggle
  kaggle datasets download -d birdy654/cifake-real-and-ai-generated-synthetic-images
  unzip cifake-real-and-ai-generated-synthetic-images.zip -d cifake
and run with --config.data.manual_dir=<path>/cifake (it holds train/ and test/)."""


def cifar10_label(file_name: str) -> int:
  """CIFAR-10 class index 0..9 of a CIFAKE file name ("12.jpg" -> 0, "12 (3).jpg" -> 2).

  Raises DataError naming the file when the name does not follow the rule.
  """
  stem, _ = os.path.splitext(os.path.basename(file_name))
  match = _NAME.match(stem)
  k = int(match.group(1) or 1) if match else 0
  if not 1 <= k <= len(CIFAR10_CLASSES):
    raise DataError(
      f"CIFAKE file {file_name!r} does not carry a CIFAR-10 class: expected '<n>.jpg' "
      f"(airplane) or '<n> (k).jpg' with k in 2..{len(CIFAR10_CLASSES)}."
    )
  return k - 1


def find_root(manual_dir: str) -> str:
  """The folder holding train/ and test/: manual_dir or manual_dir/cifake."""
  if not manual_dir:
    raise ConfigError(f"data.manual_dir must point at CIFAKE.\n{HOW_TO_GET}")
  manual_dir = os.path.expanduser(manual_dir)
  candidates = [manual_dir, os.path.join(manual_dir, "cifake")]
  for root in candidates:
    if all(os.path.isdir(os.path.join(root, s, "REAL")) for s in ("train", "test")):
      return root
  raise DataError(
    "CIFAKE: no train/REAL and test/REAL folders in "
    + " or ".join(repr(c) for c in candidates)
    + f".\n{HOW_TO_GET}"
  )


def list_images(root: str, split: str, source: str) -> list[str]:
  """Sorted paths of the images in <root>/<split>/<source>; DataError if there are none."""
  folder = os.path.join(root, split, source)
  if not os.path.isdir(folder):
    raise DataError(f"CIFAKE: {folder} not found.\n{HOW_TO_GET}")
  names = sorted(
    f for f in os.listdir(folder) if not f.startswith(".") and f.lower().endswith(IMAGE_EXTENSIONS)
  )
  if not names:
    raise DataError(f"CIFAKE: {folder} holds no images.\n{HOW_TO_GET}")
  return [os.path.join(folder, f) for f in names]


def _check_sources(key: str, sources: Sequence[str]) -> list[str]:
  sources = [sources] if isinstance(sources, str) else list(sources)
  bad = [s for s in sources if s not in SOURCES]
  if not sources or bad:
    raise ConfigError(f"data.{key}={sources!r}: give one or more of {list(SOURCES)}")
  return sources


def load(
  manual_dir: str,
  *,
  image_size: int,
  task: str = "cifar10",
  train_sources: Sequence[str] = ("REAL",),
  test_sources: Sequence[str] = ("REAL",),
  lazy: bool = False,
  num_threads: int | None = None,
  resize: str = "crop",
) -> tuple[Split, Split, list[str]]:
  """Loads CIFAKE for one task.

  Args:
    manual_dir: data.manual_dir. image_size: the stored side (data.decode_size, else
      data.image_size; the images are 32x32).
    task: data.task, "cifar10" or "real_fake".
    train_sources, test_sources: data.train_sources / data.test_sources, subsets of
      ("REAL", "FAKE") whose images make up each split.

  Returns:
    (train, test, class names); images uint8 [N, S, S, 3], labels int32 [N]; sources in the
    given order, files sorted by name within each.
  """
  if task not in TASKS:
    raise ConfigError(f"data.task={task!r} is not a CIFAKE task; valid: {list(TASKS)}")
  root = find_root(manual_dir)
  class_names = list(CIFAR10_CLASSES) if task == "cifar10" else list(SOURCES)
  out = {}
  for role, key, sources in (
    ("train", "train_sources", train_sources),
    ("test", "test_sources", test_sources),
  ):
    sources = _check_sources(key, sources)
    paths: list[str] = []
    labels: list[int] = []
    for source in sources:
      files = list_images(root, role, source)
      paths.extend(files)
      if task == "cifar10":
        labels.extend(cifar10_label(p) for p in files)
      else:
        labels.extend([SOURCES.index(source)] * len(files))
    labels_arr = np.asarray(labels, np.int32)
    counts = np.bincount(labels_arr, minlength=len(class_names))
    logging.info(
      "CIFAKE %s (%s, task %s): %d images; per class %s.",
      role,
      "+".join(sources),
      task,
      len(paths),
      dict(zip(class_names, counts.tolist(), strict=True)),
    )
    images = LazyImages(paths, image_size, num_threads=num_threads, resize=resize)
    out[role] = Split(images if lazy else images.materialize(), labels_arr)
  return out["train"], out["test"], class_names


def export_class_folders(
  manual_dir: str, out_dir: str, *, split: str = "train", source: str = "FAKE"
) -> int:
  """Links <split>/<source> images into <out_dir>/<CIFAR-10 class>/ (the synthetic-folder
  contract), so CIFAKE's generated images can serve as data.synthetic_dir for SynCon on
  CIFAR-10 or on CIFAKE's REAL images. Returns the number of images linked."""
  root = find_root(manual_dir)
  files = list_images(root, split, _check_sources("source", [source])[0])
  for path in files:
    folder = os.path.join(out_dir, CIFAR10_CLASSES[cifar10_label(path)])
    os.makedirs(folder, exist_ok=True)
    link = os.path.join(folder, os.path.basename(path))
    if not os.path.lexists(link):
      os.symlink(os.path.abspath(path), link)
  return len(files)


def load_from_config(data_config: Any) -> tuple[Split, Split, list[str]]:
  get = data_config.get
  return load(
    get("manual_dir"),
    task=get("task", "cifar10"),
    train_sources=get("train_sources", ("REAL",)),
    test_sources=get("test_sources", ("REAL",)),
    lazy=bool(get("lazy", False)),
    **decode_options(data_config),
  )
