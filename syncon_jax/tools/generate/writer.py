"""Writing the folder so that a kill at any moment leaves it consistent.

An image is encoded in memory, written to a hidden temporary file beside its final name
(`.<name>.tmp<pid>`, which the folder reader skips), synced and renamed over the final name
(os.replace is atomic on POSIX), and only then is its metadata line appended and synced. So a
kill leaves, at worst, an image without its line (the rerun adds the line) or a torn last
line (the rerun drops it and rewrites the file); never a half-written image nor a line for an
image that does not exist. Errors writing (a full disk) are DataErrors naming the file.
"""

from __future__ import annotations

import errno
import io
import json
import os
import re
from collections.abc import Iterable
from typing import Any

from absl import logging
from PIL import Image

from syncon_jax.data.folders import METADATA_FILE, read_metadata
from syncon_jax.errors import DataError

REJECTED_DIR = ".rejected"  # images the zero-shot filter rejects; hidden from the folder reader
_TEMPORARY = re.compile(r"^\..+\.tmp\d+$")


def _write_error(path: str, e: OSError) -> DataError:
  full = e.errno in (errno.ENOSPC, errno.EDQUOT)
  why = "the disk is full" if full else (e.strerror or str(e))
  return DataError(f"Cannot write {path}: {why}. Completed images are kept; rerun to resume.")


def encode_png(image: Image.Image) -> bytes:
  """PNG bytes of an RGB image; Pillow writes no time stamp, so equal pixels give equal bytes."""
  buffer = io.BytesIO()
  image.convert("RGB").save(buffer, format="PNG")
  return buffer.getvalue()


def write_atomic(path: str, payload: bytes) -> None:
  """Writes payload to path through a synced temporary file and os.replace."""
  folder, name = os.path.split(path)
  tmp = os.path.join(folder, f".{name}.tmp{os.getpid()}")
  try:
    os.makedirs(folder, exist_ok=True)
    with open(tmp, "wb") as f:
      f.write(payload)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except OSError as e:
    try:
      os.remove(tmp)
    except OSError:
      pass
    raise _write_error(path, e) from e


def remove_temporaries(root: str) -> int:
  """Deletes temporary files a killed run left under root; returns how many."""
  removed = 0
  for folder, _, files in os.walk(root):
    for name in files:
      if _TEMPORARY.match(name):
        os.remove(os.path.join(folder, name))
        removed += 1
  return removed


class MetadataLog:
  """metadata.jsonl: one JSON object a line, keyed by "file" (a path under the output folder).

  Opening it drops a torn last line and lines whose image is gone (and rewrites the file if it
  did); `append` adds one synced line; `rewrite` puts the lines in a given order.
  """

  def __init__(self, root: str):
    self.root = root
    self.path = os.path.join(root, METADATA_FILE)
    self.entries: dict[str, dict[str, Any]] = {}
    if os.path.exists(self.path):
      self._load()

  def _load(self) -> None:
    entries, torn = read_metadata(self.path, torn_tail=True)
    dropped = 1 if torn.strip() else 0
    for entry in entries:
      if not os.path.exists(os.path.join(self.root, entry["file"])):
        dropped += 1
        continue
      self.entries[entry["file"]] = entry
    if dropped:
      logging.warning("%s: dropped %d torn line or line(s) of missing images.", self.path, dropped)
      self.rewrite(self.entries)

  def get(self, file: str) -> dict[str, Any] | None:
    return self.entries.get(file)

  def append(self, entry: dict[str, Any]) -> None:
    try:
      os.makedirs(self.root, exist_ok=True)
      with open(self.path, "a", encoding="utf-8") as f:
        f.write(json.dumps(entry, ensure_ascii=False) + "\n")
        f.flush()
        os.fsync(f.fileno())
    except OSError as e:
      raise _write_error(self.path, e) from e
    self.entries[entry["file"]] = entry

  def rewrite(self, order: Iterable[str]) -> None:
    """Rewrites the file atomically: the lines of `order` first, then every other line."""
    first = list(dict.fromkeys(f for f in order if f in self.entries))
    placed = set(first)
    rest = [f for f in self.entries if f not in placed]
    text = "".join(json.dumps(self.entries[f], ensure_ascii=False) + "\n" for f in first + rest)
    current = None
    if os.path.exists(self.path):
      with open(self.path, encoding="utf-8") as f:
        current = f.read()
    if text != current:
      write_atomic(self.path, text.encode("utf-8"))
    self.entries = {f: self.entries[f] for f in first + rest}
