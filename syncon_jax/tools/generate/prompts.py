"""Prompts, seeds and the plan: which image of which class is made from which prompt and seed.

Prompts per class come from templates chosen by the data set (`TEMPLATES`, keyed by
`data.name`), optionally followed by one prompt per description of the class from a JSON file
(He et al. 2023's language-enhanced prompts). Image i of a class uses prompt i mod P and is
the (i // P)-th image of that prompt, so several images share a prompt (StableRep's images per
caption) and raising --images_per_class only adds images. Its seed is a hash of (run seed,
class name, prompt id, index): fixed per image whatever else the run generates.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import NamedTuple

from syncon_jax.data.folders import normalize_class_name
from syncon_jax.errors import ConfigError, DataError

# CLIP's zero-shot templates (Radford et al. 2021, Flowers/Aircraft/Birds/Food/Pets/Cars/CIFAR)
# first: the first template of a set is also the zero-shot filter's class prompt. The others vary
# the scene, as Fake it till you make it (Sariyildiz et al. 2023) varies backgrounds.
_BIRD = (
  "a photo of a {}, a type of bird.",
  "a photo of a {} perched on a branch.",
  "a photo of a {} in flight.",
  "a close-up photo of a {} in its natural habitat.",
  "a photo of a {} standing on the ground.",
)
_CIFAR = (
  "a photo of a {}.",
  "a blurry photo of a {}.",
  "a photo of a small {}.",
  "a low resolution photo of a {}.",
  "a close-up photo of a {}.",
)
TEMPLATES: dict[str, tuple[str, ...]] = {
  "oxford_flowers102": (
    "a photo of a {}, a type of flower.",
    "a close-up photo of a {} flower.",
    "a photo of a {} flower in a garden.",
    "a photo of a {} flower in the wild.",
    "a photo of {} flowers in a vase.",
  ),
  "aircraft": (
    "a photo of a {}, a type of aircraft.",
    "a photo of a {} airplane on the runway.",
    "a photo of a {} aircraft flying in the sky.",
    "a photo of a {} parked at an airport.",
    "a photo of a {} taking off.",
  ),
  "birdsnap": _BIRD,
  "caltech_birds2011": _BIRD,
  "cifar10": _CIFAR,
  "cifar100": _CIFAR,
  "food101": (
    "a photo of {}, a type of food.",
    "a photo of a plate of {} on a table.",
    "a close-up photo of {}.",
  ),
  "oxford_iiit_pet": (
    "a photo of a {}, a type of pet.",
    "a photo of a {} at home.",
    "a photo of a {} outdoors.",
  ),
  "cars196": (
    "a photo of a {}, a type of car.",
    "a photo of a {} on the road.",
    "a photo of a {} parked on a street.",
  ),
  "dtd": ("a photo of a {} texture.", "a close-up photo of a {} pattern."),
  "digits": (
    "a photo of the handwritten digit {}.",
    "a scan of the number {} written in ink on paper.",
    "the digit {} drawn with a pencil.",
  ),
}
GENERIC_TEMPLATES = ("a photo of a {}.", "a close-up photo of a {}.", "a photo of the {}.")


class Task(NamedTuple):
  """One image to make. file: path under the output folder, posix form ("rose/0001_0000.png")."""

  class_index: int  # index into the run's class list
  class_name: str
  file: str
  index: int  # i: the class's i-th image
  prompt_id: int  # index of the prompt within its class
  prompt: str
  seed: int


def display_name(class_name: str) -> str:
  """How a class is named in a prompt: '_' read as a space (CIFAR-100's "maple_tree")."""
  return " ".join(class_name.replace("_", " ").split())


def folder_name(class_name: str) -> str:
  """The class's folder: the name with '/' made '_' ("F/A-18" -> "F_A-18"), which matches the
  class again after folders.normalize_class_name."""
  folder = class_name.replace("/", "_").replace("\0", "")
  if not folder.strip() or folder.startswith(".") or folder in ("..",):
    raise DataError(f"Class name {class_name!r} cannot be a folder name (empty or hidden).")
  return folder


def templates_for(dataset: str, templates_file: str | None = None) -> tuple[str, ...]:
  """The data set's templates, or those of templates_file (one a line, each with one '{}')."""
  if templates_file is None:
    return TEMPLATES.get(dataset, GENERIC_TEMPLATES)
  try:
    with open(templates_file, encoding="utf-8") as f:
      lines = [(n, line.strip()) for n, line in enumerate(f, 1) if line.strip()]
  except OSError as e:
    raise DataError(f"Cannot read --templates_file {templates_file!r}: {e.strerror}") from e
  for n, line in lines:
    if line.count("{}") != 1:
      raise DataError(f"{templates_file}:{n}: a template needs exactly one '{{}}', got {line!r}")
  if not lines:
    raise DataError(f"--templates_file {templates_file!r} has no templates.")
  return tuple(line for _, line in lines)


def read_descriptions(path: str, class_names: Sequence[str]) -> dict[str, list[str]]:
  """{class name: descriptions} from a JSON object {class: "text" or ["text", ...]}.

  Keys match class names after normalize_class_name; a key that matches none is a DataError.
  """
  try:
    with open(path, encoding="utf-8") as f:
      raw = json.load(f)
  except OSError as e:
    raise DataError(f"Cannot read --descriptions_file {path!r}: {e.strerror}") from e
  except json.JSONDecodeError as e:
    raise DataError(f"--descriptions_file {path!r} is not valid JSON: {e}") from e
  if not isinstance(raw, dict):
    raise DataError(f"--descriptions_file {path!r} must hold a JSON object {{class: [text]}}.")
  by_norm = {normalize_class_name(n): n for n in class_names}
  out: dict[str, list[str]] = {}
  for key, value in raw.items():
    name = by_norm.get(normalize_class_name(key))
    if name is None:
      raise DataError(f"--descriptions_file {path!r}: {key!r} is not a class of this data set.")
    texts = [value] if isinstance(value, str) else value
    if not isinstance(texts, list) or not all(isinstance(t, str) and t.strip() for t in texts):
      raise DataError(f"--descriptions_file {path!r}: {key!r} needs a text or a list of texts.")
    out[name] = [t.strip() for t in texts]
  return out


def class_prompts(
  class_name: str, templates: Sequence[str], descriptions: Sequence[str] = ()
) -> list[str]:
  """Every prompt of a class: the templates, then the first template plus each description."""
  name = display_name(class_name)
  prompts = [t.format(name) for t in templates]
  base = prompts[0].rstrip(".")
  prompts += [f"{base}, {d.rstrip('.')}." for d in descriptions]
  return prompts


def image_seed(seed: int, class_name: str, prompt_id: int, index: int) -> int:
  """A 63-bit seed fixed by (run seed, class name, prompt id, index within the prompt)."""
  key = f"{seed}\0{class_name}\0{prompt_id}\0{index}".encode()
  return int.from_bytes(hashlib.sha256(key).digest()[:8], "little") >> 1


def make_plan(
  class_names: Sequence[str],
  prompts: Sequence[Sequence[str]],
  images_per_class: int,
  seed: int,
  extension: str = ".png",
) -> list[Task]:
  """The run's images in the order they are made: class by class, prompt by prompt.

  prompts[c] lists class c's prompts. File names are <folder>/<prompt id>_<index>.png, so a
  class folder sorts in plan order.
  """
  if images_per_class < 1:
    raise ConfigError(f"--images_per_class must be at least 1, got {images_per_class}")
  plan = []
  for c, name in enumerate(class_names):
    folder = folder_name(name)
    n_prompts = len(prompts[c])
    per_prompt = [
      range(p, images_per_class, n_prompts) for p in range(min(n_prompts, images_per_class))
    ]
    for p, indices in enumerate(per_prompt):
      for j, _ in enumerate(indices):
        file = f"{folder}/{p:04d}_{j:04d}{extension}"
        plan.append(
          Task(c, name, file, p + j * n_prompts, p, prompts[c][p], image_seed(seed, name, p, j))
        )
  return plan


def check_folders_distinct(class_names: Sequence[str]) -> None:
  """Two classes whose folders would be the same after normalisation cannot both be written."""
  seen: dict[str, str] = {}
  for name in class_names:
    key = normalize_class_name(folder_name(name))
    if key in seen:
      raise DataError(
        f"Classes {seen[key]!r} and {name!r} give the same folder after normalising case, "
        "spaces, '_', '-' and '/'."
      )
    seen[key] = name
