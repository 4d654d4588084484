"""Class-named image folders: the synthetic support set and any real set stored the same way.

Folder contract (DESIGN.md):

    <root>/<class name>/<image>.{png,jpg,jpeg,webp}
    <root>/metadata.jsonl        optional: {"file", "class", "prompt", "seed", ...} per line

Class folders are matched to the real class names ignoring case, spaces, '_', '-' and '/'
(`normalize_class_name`), so "Black_footed albatross" finds "black-footed-albatross" and the
folder "F-16AB" finds FGVC-Aircraft's "F-16A/B" (a '/' cannot be in a folder name). Every
image is decoded with Pillow, converted to RGB and brought to a square of the stored size
(`data.decode_size`, else `data.image_size`) by `data.resize`: "crop" (the default) scales the
shorter side to it and keeps the centred square, so nothing is stretched; "squash" scales both
sides (the aspect ratio is lost, every pixel kept). The device's random-resized-crop samples its
views from that square, so a stored size above image_size keeps resolution for the crops (the
ImageNet recipe: 256 stored, 224 seen); evaluation sees the centred image_size square
(`augment.center_crop`). The same reading code serves the rendered digits and a user's DALL-E
folder for Birdsnap.
"""

from __future__ import annotations

import concurrent.futures
import difflib
import io
import json
import os
import re
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
from absl import logging
from PIL import Image

from syncon_jax.errors import ConfigError, DataError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp")
METADATA_FILE = "metadata.jsonl"
# Decoding is I/O- and zlib-bound and Pillow releases the GIL while decoding, so threads help
# even on a 2-core host; more than this gains nothing for folders of small images.
_MAX_DECODE_THREADS = 8
RESIZE_MODES = ("crop", "squash")


def check_resize(resize: str) -> str:
  """`resize` if it is one of RESIZE_MODES (data.resize), else one ConfigError naming the key."""
  if resize not in RESIZE_MODES:
    raise ConfigError(f"data.resize must be one of {RESIZE_MODES}, got {resize!r}")
  return resize


class Split(NamedTuple):
  """Labelled images held on the host.

  images: uint8 [N, H, W, 3], a numpy array or, for sets too large to hold decoded, a
  LazyImages (same indexing, decodes on access); labels: int32 [N] (indices into the data set's
  class names).
  """

  images: np.ndarray  # or LazyImages
  labels: np.ndarray


class SyntheticSet(NamedTuple):
  """The synthetic support set, in class order then file-name order.

  images: uint8 [M, H, W, 3]; labels: int32 [M]; files: M paths relative to the synthetic dir
  (posix form, e.g. "3/00012.png"); prompt_ids: int32 [M], one id per distinct metadata
  "prompt" (numbered in image order), -1 for images without one; missing_classes: class names
  that have no synthetic image.
  """

  images: np.ndarray
  labels: np.ndarray
  files: list[str]
  prompt_ids: np.ndarray
  missing_classes: list[str]


def normalize_class_name(name: str) -> str:
  """The matching key of a class or folder name: lower case, with every space, '_', '-' and '/'
  removed (README: "ignoring case, spaces, `_`, `-` and `/`").

  Removed rather than unified, so that a folder written without a separator a class name has
  still matches it: "F-16AB" for FGVC-Aircraft's "F-16A/B", whose '/' no folder name can hold.
  """
  return re.sub(r"[\s_\-/]+", "", name.lower())


def _is_image(file_name: str) -> bool:
  return not file_name.startswith(".") and file_name.lower().endswith(IMAGE_EXTENSIONS)


def _class_folders(root: str) -> list[str]:
  """Visible sub-folders of root, sorted (hidden ones such as .ipynb_checkpoints are skipped)."""
  if not root:
    raise ConfigError("No image folder given (data.synthetic_dir or the folder path is empty).")
  if not os.path.isdir(root):
    raise DataError(f"Image folder {root!r} does not exist or is not a directory.")
  folders = sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))
  if not folders:
    raise DataError(
      f"Image folder {root!r} has no class folders; expected <dir>/<class name>/<image>.png "
      f"with images ending in {', '.join(IMAGE_EXTENSIONS)}."
    )
  return folders


def _match_folders(root: str, folders: list[str], class_names: Sequence[str]) -> dict[str, int]:
  """Maps each folder name to its class index; DataError for a folder that matches no class."""
  by_norm: dict[str, int] = {}
  for index, name in enumerate(class_names):
    key = normalize_class_name(name)
    if key in by_norm:
      raise DataError(
        f"Class names {class_names[by_norm[key]]!r} and {name!r} are the same after "
        "ignoring case, spaces, '_', '-' and '/'; folders could not be matched to them."
      )
    by_norm[key] = index
  matched: dict[str, int] = {}
  taken: dict[int, str] = {}
  unmatched = []
  for folder in folders:
    index = by_norm.get(normalize_class_name(folder))
    if index is None:
      unmatched.append(folder)
      continue
    if index in taken:
      raise DataError(
        f"Folders {taken[index]!r} and {folder!r} in {root!r} both match class "
        f"{class_names[index]!r}; keep one."
      )
    taken[index] = folder
    matched[folder] = index
  if unmatched:
    lines = []
    for folder in unmatched:
      near = difflib.get_close_matches(normalize_class_name(folder), list(by_norm), n=3, cutoff=0.5)
      hint = ", ".join(repr(class_names[by_norm[n]]) for n in near) or "none close"
      lines.append(f"  {folder!r}: nearest class names {hint}")
    raise DataError(
      f"{len(unmatched)} folder(s) in {root!r} match no class of the data set "
      f"({len(class_names)} classes, matched ignoring case, spaces, '_', '-' and '/'):\n"
      + "\n".join(lines)
    )
  return matched


def _decode(source: str | bytes, image_size: int, crop_bottom: int, resize: str) -> np.ndarray:
  with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as img:
    full_height = img.size[1]
    # JPEG only: decode at the smallest 1/2^k scale that keeps both sides >= image_size (the
    # DCT does the first downsampling), several times faster on photos far above image_size.
    img.draft("RGB", (image_size, image_size + crop_bottom))
    img = img.convert("RGB")
    if crop_bottom:
      rows = round(crop_bottom * img.size[1] / full_height)  # in the draft's scale
      if rows >= img.size[1]:
        raise ValueError(f"image is {full_height} px high, cannot crop {crop_bottom} px")
      # Cut first: resampling near the box's edge must not blend in the cut rows.
      img = img.crop((0, 0, img.size[0], img.size[1] - rows))
    if img.size != (image_size, image_size):
      width, height = img.size
      box = (0, 0, width, height)
      if resize == "crop":
        side = min(width, height)
        left, top = (width - side) // 2, (height - side) // 2
        box = (left, top, left + side, top + side)
      # resize(box=...) crops and resamples in one pass, reading the source pixels once.
      img = img.resize((image_size, image_size), Image.Resampling.BILINEAR, box=box)
    return np.asarray(img, dtype=np.uint8)


def read_image(
  path: str | bytes,
  image_size: int,
  *,
  name: str | None = None,
  crop_bottom: int = 0,
  resize: str = "crop",
) -> np.ndarray:
  """Decodes one image to uint8 [image_size, image_size, 3]; DataError naming the path if not.

  path may also be the encoded bytes of an image; `name` then says where they came from.
  crop_bottom: rows cut off the bottom before resizing (FGVC-Aircraft's copyright banner).
  resize: "crop" (shorter side to image_size, the centred square) or "squash" (both sides).
  """
  try:
    return _decode(path, image_size, crop_bottom, check_resize(resize))
  except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
    where = name or (f"<{len(path)} encoded bytes>" if isinstance(path, bytes) else path)
    raise DataError(f"Cannot read image {where!r}: {e}") from e


def _num_threads(num_threads: int | None, n: int) -> int:
  cap = _MAX_DECODE_THREADS if num_threads is None else int(num_threads)
  return max(1, min(cap, os.cpu_count() or 1, n))


def decode_images(
  sources: Sequence[str | bytes],
  image_size: int,
  *,
  names: Sequence[str] | None = None,
  num_threads: int | None = None,
  crop_bottom: int = 0,
  resize: str = "crop",
) -> np.ndarray:
  """Decodes image files (paths) or encoded images (bytes) in a thread pool.

  Returns uint8 [len(sources), image_size, image_size, 3], in order; the first unreadable image
  raises DataError naming it (names[i] when given, else the path). crop_bottom and resize as in
  read_image.
  """
  out = np.empty((len(sources), image_size, image_size, 3), np.uint8)
  if not len(sources):
    return out
  names = [None] * len(sources) if names is None else names
  read = lambda i: read_image(
    sources[i], image_size, name=names[i], crop_bottom=crop_bottom, resize=resize
  )
  with concurrent.futures.ThreadPoolExecutor(_num_threads(num_threads, len(sources))) as pool:
    # map preserves order and re-raises the first DataError with its path.
    for i, image in enumerate(pool.map(read, range(len(sources)))):
      out[i] = image
  return out


class LazyImages:
  """Images decoded and resized on access: an array-like uint8 [N, S, S, 3].

  For data sets too large to hold decoded (Birdsnap, Food-101 at 224 px): it keeps file paths
  or encoded bytes and decodes only the rows asked for, in a thread pool, on every access.
  Indexing with an int, a slice, an int array or a bool mask returns a numpy array, which is
  all the batch sampler (`images[idx]`) and the feature extractor (`images[i:j]`) use;
  `np.asarray(lazy)` decodes everything.
  """

  dtype = np.dtype(np.uint8)
  ndim = 4

  def __init__(
    self,
    sources: Sequence[str | bytes],
    image_size: int,
    *,
    names: Sequence[str] | None = None,
    num_threads: int | None = None,
    crop_bottom: int = 0,
    resize: str = "crop",
  ):
    """sources: N image paths or encoded images; names: N labels for error messages;
    crop_bottom: rows cut off the bottom of every image before resizing; resize: "crop" or
    "squash" (read_image)."""
    if names is not None and len(names) != len(sources):
      raise ValueError(f"{len(names)} names for {len(sources)} images")
    self.sources = list(sources)
    self.names = None if names is None else list(names)
    self.image_size = int(image_size)
    self.num_threads = num_threads
    self.crop_bottom = int(crop_bottom)
    self.resize = check_resize(resize)

  @property
  def shape(self) -> tuple[int, int, int, int]:
    return (len(self.sources), self.image_size, self.image_size, 3)

  @property
  def size(self) -> int:
    return int(np.prod(self.shape))

  def __len__(self) -> int:
    return len(self.sources)

  def subset(self, index) -> LazyImages:
    """The rows `index` (an int array, a slice or a bool mask), still undecoded."""
    rows = np.arange(len(self))[index]  # numpy semantics and IndexError for slices and arrays
    if rows.ndim != 1:
      raise IndexError(f"LazyImages takes a 1-D index, got shape {rows.shape}")
    return LazyImages(
      [self.sources[i] for i in rows],
      self.image_size,
      names=None if self.names is None else [self.names[i] for i in rows],
      num_threads=self.num_threads,
      crop_bottom=self.crop_bottom,
      resize=self.resize,
    )

  def __getitem__(self, index) -> np.ndarray:
    if isinstance(index, int | np.integer):
      return self[np.asarray([index])][0]
    return self.subset(index).materialize()

  def __array__(self, dtype=None, copy=None) -> np.ndarray:
    out = self.materialize()
    return out if dtype is None else out.astype(dtype)

  def reshape(self, *shape) -> np.ndarray:
    """Decodes everything, then reshapes (what a raw-pixel baseline does)."""
    return np.asarray(self).reshape(*shape)

  def materialize(self) -> np.ndarray:
    """Every row, decoded: uint8 [N, S, S, 3]."""
    return decode_images(
      self.sources,
      self.image_size,
      names=self.names,
      num_threads=self.num_threads,
      crop_bottom=self.crop_bottom,
      resize=self.resize,
    )

  def __repr__(self) -> str:
    return f"LazyImages(shape={self.shape})"


def _scan(root: str, class_names: Sequence[str]) -> tuple[list[str], np.ndarray, list[str]]:
  """Lists images under matched class folders: (relative files, labels, classes without any)."""
  matched = _match_folders(root, _class_folders(root), class_names)
  files: list[str] = []
  labels: list[int] = []
  for folder, index in sorted(matched.items(), key=lambda kv: (kv[1], kv[0])):
    names = sorted(f for f in os.listdir(os.path.join(root, folder)) if _is_image(f))
    files.extend(f"{folder}/{name}" for name in names)
    labels.extend([index] * len(names))
  if not files:
    raise DataError(
      f"Image folder {root!r} has class folders but no images ending in "
      f"{', '.join(IMAGE_EXTENSIONS)}."
    )
  labels_arr = np.asarray(labels, np.int32)
  counts = np.bincount(labels_arr, minlength=len(class_names))
  missing = [class_names[i] for i in np.flatnonzero(counts == 0)]
  if missing:
    logging.warning(
      "%d of %d classes have no images in %s (they get no synthetic positives): %s",
      len(missing),
      len(class_names),
      root,
      ", ".join(missing),
    )
  return files, labels_arr, missing


def read_metadata(path: str, *, torn_tail: bool = False) -> tuple[list[dict], str]:
  """The entries of a metadata.jsonl, each a JSON object with a 'file' key (DataError naming the
  file and line otherwise).

  torn_tail: the text after the last newline is a line a kill cut short (what the generator
  appends is newline-terminated): returned, not parsed. Without it, that text is a last line.
  -> (entries in file order, the torn text or '').
  """
  with open(path, encoding="utf-8") as f:
    lines = f.read().split("\n")
  torn = lines.pop() if torn_tail else ""
  entries = []
  for line_no, line in enumerate(lines, 1):
    if not line.strip():
      continue
    try:
      entry = json.loads(line)
    except json.JSONDecodeError as e:
      raise DataError(f"{path}:{line_no} is not valid JSON ({e}); fix or delete the line.") from e
    if not isinstance(entry, dict) or "file" not in entry:
      raise DataError(f"{path}:{line_no} must be a JSON object with a 'file' key.")
    entries.append(entry)
  return entries, torn


def _read_prompt_ids(root: str, files: list[str]) -> np.ndarray:
  """Prompt id per file from metadata.jsonl ("prompt" key), -1 where there is none."""
  prompt_ids = np.full(len(files), -1, np.int32)
  path = os.path.join(root, METADATA_FILE)
  if not os.path.exists(path):
    return prompt_ids
  prompt_of: dict[str, str] = {}
  for entry in read_metadata(path)[0]:
    if entry.get("prompt") is None:
      continue
    file = str(entry["file"])
    if os.path.isabs(file):
      file = os.path.relpath(file, root)
    prompt_of[os.path.normpath(file).replace(os.sep, "/")] = str(entry["prompt"])
  ids: dict[str, int] = {}
  for i, file in enumerate(files):
    prompt = prompt_of.get(file)
    if prompt is not None:
      prompt_ids[i] = ids.setdefault(prompt, len(ids))
  return prompt_ids


def load_synthetic(
  synthetic_dir: str,
  class_names: Sequence[str],
  *,
  image_size: int,
  resize: str = "crop",
  num_threads: int | None = None,
) -> SyntheticSet:
  """Reads a synthetic support folder that follows the contract above.

  Args:
    synthetic_dir: the folder (config key data.synthetic_dir).
    class_names: the real data set's class names; label i means class_names[i].
    image_size: output side length in pixels (the real images' stored size).
    resize: "crop" or "squash" (read_image), as the real images.
    num_threads: decoding threads (data.decode_threads); None for min(8, cores).

  Returns:
    A SyntheticSet; classes without images are logged once and listed in missing_classes.

  Raises:
    ConfigError: synthetic_dir is empty/None.
    DataError: the folder is missing, has no class folders or no images, a folder matches no
      class (message lists the nearest class names), or an image cannot be decoded (its path).
  """
  files, labels, missing = _scan(synthetic_dir, class_names)
  paths = [os.path.join(synthetic_dir, f) for f in files]
  images = decode_images(paths, image_size, num_threads=num_threads, resize=resize)
  prompt_ids = _read_prompt_ids(synthetic_dir, files)
  return SyntheticSet(images, labels, files, prompt_ids, missing)


def load_image_folder(
  root: str,
  *,
  image_size: int,
  class_names: Sequence[str] | None = None,
  lazy: bool = False,
  num_threads: int | None = None,
  resize: str = "crop",
) -> tuple[Split, list[str]]:
  """Reads class-named sub-folders of real images with the same code as `load_synthetic`.

  Without class_names the classes are the sorted visible sub-folder names; with them, folders
  are matched after normalisation and a folder matching none is a DataError. With lazy=True
  the images stay on disk and Split.images is a LazyImages decoding on access.

  Returns:
    (Split with images uint8 [N, S, S, 3] and labels int32 [N], the class names used).
  """
  if class_names is None:
    class_names = _class_folders(root)
  class_names = list(class_names)
  files, labels, _ = _scan(root, class_names)
  paths = [os.path.join(root, f) for f in files]
  images = LazyImages(paths, image_size, num_threads=num_threads, resize=resize)
  return Split(images if lazy else images.materialize(), labels), class_names


def decode_options(data_config: Any) -> dict[str, Any]:
  """The decoding keys of the `data` config, as the loaders' keyword arguments: image_size (the
  stored side: data.decode_size, else data.image_size), resize and num_threads."""
  size = data_config.get("decode_size") or data_config.get("image_size")
  image_size = data_config.get("image_size")
  if image_size and size < image_size:
    raise ConfigError(
      f"data.decode_size={size} is below data.image_size={image_size}: the views are cut "
      "from the stored image, which must be at least as large."
    )
  resize = check_resize(data_config.get("resize") or "crop")
  return {"image_size": size, "resize": resize, "num_threads": data_config.get("decode_threads")}
