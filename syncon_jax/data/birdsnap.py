"""Birdsnap 1.1 (Berg et al. 2014), read from its official distribution in data.manual_dir.

TFDS lacks Birdsnap, and its images are Flickr URLs that each user downloads. The layout the
official archive and its get_birdsnap.py script produce, and what we read:

    <manual_dir>/species.txt        tab-separated, header: id, common, scientific, dir
    <manual_dir>/images.txt         tab-separated, header; we use the columns path, species_id
    <manual_dir>/test_images.txt    header line `path`, then one path per line
    <manual_dir>/download/images/<path>   where get_birdsnap.py puts the images
    <manual_dir>/images/<path>            also accepted

Train is every row of images.txt not listed in test_images.txt. Class i is the species with
the i-th smallest id; class names are the common names ("Black-footed Albatross"), which is
what a synthetic folder is matched against (after normalising case, spaces, '_' and '-').
Images that failed to download (missing) or are not images (an error page saved as .jpg) are
skipped and counted in the log: many Flickr URLs are dead, so every copy of Birdsnap differs a
little, which is why the log states the counts.
"""

from __future__ import annotations

import concurrent.futures
import csv
import os
from typing import Any

import numpy as np
from absl import logging
from PIL import Image

from syncon_jax.data.folders import LazyImages, Split, decode_options
from syncon_jax.errors import ConfigError, DataError

SPECIES_FILE = "species.txt"
IMAGES_FILE = "images.txt"
TEST_FILE = "test_images.txt"
# Where get_birdsnap.py writes the images, then the plain alternative.
IMAGE_DIRS = ("download/images", "images")
# Checking ~50k files is stat/open-bound, not CPU-bound: threads overlap the I/O waits.
_CHECK_THREADS = 32

HOW_TO_GET = """How to get Birdsnap 1.1:
  1. Download and extract the archive:
       wget http://thomasberg.org/datasets/birdsnap/1.1/birdsnap.tgz && tar xzf birdsnap.tgz
     (species.txt, images.txt, test_images.txt, get_birdsnap.py; 49,829 images listed);
  2. cd birdsnap && python get_birdsnap.py   # downloads the ~50k Flickr images into
     download/images/; dead URLs are expected, the loader skips and counts them;
  3. run with --config.data.manual_dir=/path/to/birdsnap."""


def _read_table(path: str, required: tuple[str, ...]) -> list[dict[str, str]]:
  """Rows of a tab-separated file with a header, checked to have the `required` columns."""
  if not os.path.isfile(path):
    raise DataError(f"Birdsnap: {path} not found.\n{HOW_TO_GET}")
  with open(path, encoding="utf-8", newline="") as f:
    reader = csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
    missing = [c for c in required if c not in (reader.fieldnames or [])]
    if missing:
      raise DataError(
        f"Birdsnap: {path} lacks the column(s) {missing} (header: {reader.fieldnames}); "
        f"expected a tab-separated file whose header names {list(required)}.\n{HOW_TO_GET}"
      )
    return [{k: (v or "").strip() for k, v in row.items() if k is not None} for row in reader]


def _image_root(manual_dir: str) -> str:
  for sub in IMAGE_DIRS:
    root = os.path.join(manual_dir, sub)
    if os.path.isdir(root):
      return root
  raise DataError(
    f"Birdsnap: no image folder in {manual_dir} (looked for "
    f"{', '.join(os.path.join(manual_dir, s) for s in IMAGE_DIRS)}).\n{HOW_TO_GET}"
  )


def _status(path: str) -> str:
  """ "ok", "missing", or "unreadable" when the header does not parse as an image (cheap: the
  pixels are not decoded; a file truncated after its header fails later, naming its path)."""
  if not os.path.isfile(path):
    return "missing"
  try:
    with Image.open(path) as img:
      return "ok" if min(img.size) > 0 else "unreadable"
  except (OSError, ValueError, SyntaxError):
    return "unreadable"


def read_metadata(manual_dir: str) -> tuple[list[str], list[tuple[str, int]], set[str]]:
  """-> (class names, [(relative path, class index)] of images.txt, the set of test paths)."""
  species = _read_table(os.path.join(manual_dir, SPECIES_FILE), ("id", "common"))
  try:
    species.sort(key=lambda r: int(r["id"]))
  except ValueError as e:
    raise DataError(f"Birdsnap: {SPECIES_FILE} has a non-integer id ({e}).") from e
  class_of_id = {int(r["id"]): i for i, r in enumerate(species)}
  class_names = [r["common"] for r in species]
  rows = _read_table(os.path.join(manual_dir, IMAGES_FILE), ("path", "species_id"))
  entries = []
  for line_no, row in enumerate(rows, 2):
    try:
      entries.append((row["path"], class_of_id[int(row["species_id"])]))
    except (KeyError, ValueError) as e:
      raise DataError(
        f"Birdsnap: {IMAGES_FILE} line {line_no} has species_id {row['species_id']!r}, "
        f"which is not an id of {SPECIES_FILE}."
      ) from e
  test_path = os.path.join(manual_dir, TEST_FILE)
  if not os.path.isfile(test_path):
    raise DataError(f"Birdsnap: {test_path} not found.\n{HOW_TO_GET}")
  with open(test_path, encoding="utf-8") as f:
    lines = [line.strip() for line in f]
  if not lines or lines[0] != "path":
    raise DataError(f"Birdsnap: {test_path} must start with the header line 'path'.")
  test = {line for line in lines[1:] if line}
  unknown = test - {p for p, _ in entries}
  if unknown:
    raise DataError(
      f"Birdsnap: {len(unknown)} path(s) of {TEST_FILE} are not in {IMAGES_FILE}, e.g. "
      f"{sorted(unknown)[:3]}; the two files come from different releases?"
    )
  return class_names, entries, test


def load(
  manual_dir: str,
  *,
  image_size: int,
  lazy: bool = True,
  num_threads: int | None = None,
  resize: str = "crop",
) -> tuple[Split, Split, list[str]]:
  """Loads Birdsnap 1.1 from manual_dir (data.manual_dir), skipping unavailable images.

  Returns:
    (train, test, 500 common names); images uint8 [N, S, S, 3] (LazyImages when lazy, the
    default: ~50k photos), labels int32 [N]; rows in images.txt order.
  """
  if not manual_dir:
    raise ConfigError(f"data.manual_dir must point at the Birdsnap folder.\n{HOW_TO_GET}")
  manual_dir = os.path.expanduser(manual_dir)
  if not os.path.isdir(manual_dir):
    raise DataError(f"Birdsnap: data.manual_dir {manual_dir} does not exist.\n{HOW_TO_GET}")
  class_names, entries, test = read_metadata(manual_dir)
  root = _image_root(manual_dir)
  paths = [os.path.join(root, p) for p, _ in entries]
  with concurrent.futures.ThreadPoolExecutor(_CHECK_THREADS) as pool:
    status = list(pool.map(_status, paths))
  n_missing = status.count("missing")
  bad = [p for p, st in zip(paths, status, strict=True) if st == "unreadable"]
  if n_missing or bad:
    logging.warning(
      "Birdsnap: skipping %d of %d images listed in %s: %d not downloaded (not in %s), "
      "%d not readable as images%s.",
      n_missing + len(bad),
      len(entries),
      IMAGES_FILE,
      n_missing,
      root,
      len(bad),
      f" (e.g. {bad[:3]})" if bad else "",
    )
  out = {}
  for role, in_test in (("train", False), ("test", True)):
    keep = [
      i
      for i, ((path, _), st) in enumerate(zip(entries, status, strict=True))
      if st == "ok" and (path in test) == in_test
    ]
    if not keep:
      raise DataError(
        f"Birdsnap: no readable {role} image under {root} ({len(entries)} listed in "
        f"{IMAGES_FILE}).\n{HOW_TO_GET}"
      )
    labels = np.asarray([entries[i][1] for i in keep], np.int32)
    images = LazyImages(
      [paths[i] for i in keep], image_size, num_threads=num_threads, resize=resize
    )
    out[role] = Split(images if lazy else images.materialize(), labels)
  logging.info(
    "Birdsnap: %d train and %d test images, %d species.",
    len(out["train"].labels),
    len(out["test"].labels),
    len(class_names),
  )
  return out["train"], out["test"], class_names


def load_from_config(data_config: Any) -> tuple[Split, Split, list[str]]:
  get = data_config.get
  return load(
    get("manual_dir"),
    lazy=bool(get("lazy", True)),
    **decode_options(data_config),
  )
