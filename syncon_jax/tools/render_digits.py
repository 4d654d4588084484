r"""Renders synthetic digits into the synthetic-folder layout (DESIGN.md), seeded.

  python -m syncon_jax.tools.render_digits --out=runs/synthetic_digits
  python -m syncon_jax.tools.render_digits --out=/tmp/syn --corrupt_classes=3,8,6 --corruption=both

They stand in for a text-to-image model's output: close enough to sklearn's handwritten digits
to help, with a real domain gap (a typeface, not handwriting). The renders follow the way the
real digits were acquired (UCI optdigits): the digit, size-normalised so that it fills the
frame's height, is a 32x32 binary bitmap; its 4x4 blocks' on-pixel counts give an 8x8 grid of
0..16; `syncon_jax.data.digits.grid_to_image` upsamples that grid exactly as for the real digits.

A "prompt" is a (digit, style) pair. The style fixes stroke width, rotation, shear and the
glyph's width; images of one prompt differ by bitmap noise and small jitter of those values.
Image k of class c uses prompt k % prompts_per_class. Every random value comes from
np.random.default_rng((seed, 0, digit, prompt)) (style) or ((seed, 1, class, k)) (image), so an
image does not change when per_class or the corruption of other classes changes.

Corruptions (of the classes in corrupt_classes; "prompt" stays the class's own prompt, as a
text-to-image model was asked for the class and delivered something else):
  swap   the folder of class c holds renders of digit (c + 5) % 10 (SWAP_OFFSET);
  noise  the folder holds unstructured images: random 32x32 bitmaps, each with its own ink
         density, through the same block-count and upsampling pipeline;
  both   the listed classes in the given order, the first ceil(n/2) swapped, the rest noise;
  collapse  every listed folder holds renders of one digit, the lowest class not listed (whose
         own folder stays clean): a generator that draws one wrong class for many prompts.

Output: <out>/<class>/<nnnnn>.png and <out>/metadata.jsonl with one line per image:
{"file", "class", "prompt", "prompt_id", "seed", "index", "corrupted", "rendered"}, where
"corrupted" is false or the corruption's kind and "rendered" the digit actually drawn (or "noise").
An existing <out> is replaced only if it holds nothing but a previous render.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence

import numpy as np
from absl import app, flags
from PIL import Image, ImageDraw, ImageFont

from syncon_jax.data.digits import CLASS_NAMES, grid_to_image
from syncon_jax.errors import ConfigError, exit_on_user_error

SWAP_OFFSET = 5  # swap corruption: class c holds renders of digit (c + SWAP_OFFSET) % 10
BITMAP = 32  # optdigits bitmap side
BLOCK = 4  # optdigits block side: 32 / 4 = 8 grid cells
_FONT_SIZE = 80  # large enough that the 32-pixel bitmap is a downsampling, never an upsampling
_CANVAS = 160  # holds a rotated, sheared, stroked glyph of _FONT_SIZE without clipping

# Style ranges (per prompt) and jitter (per image). Chosen to resemble handwriting, which is
# slanted, of varying stroke and narrower or wider than a typeface.
_STROKE = (1, 3)  # extra stroke width in canvas pixels (inclusive range)
_ROTATION_DEG = 8.0
_SHEAR = (-0.1, 0.3)  # horizontal shift per unit height; > 0 leans the top right, as most hands do
_WIDTH = (0.6, 1.0)  # scales the glyph's own width/height ratio
_NOISE = (0.0, 0.02)  # share of bitmap pixels flipped
_JITTER_ROTATION_DEG = 3.0
_JITTER_SHEAR = 0.05
_JITTER_WIDTH = 0.05
_JITTER_SHIFT = 1  # bitmap pixels, horizontal
_NOISE_DENSITY = (0.15, 0.45)  # ink share of a noise-corruption bitmap


def _swap(classes: Sequence[int]) -> dict[int, str]:
  return dict.fromkeys(classes, "swap")


def _noise(classes: Sequence[int]) -> dict[int, str]:
  return dict.fromkeys(classes, "noise")


def _both(classes: Sequence[int]) -> dict[int, str]:
  n_swap = (len(classes) + 1) // 2
  return {**_swap(classes[:n_swap]), **_noise(classes[n_swap:])}


def _collapse(classes: Sequence[int]) -> dict[int, str]:
  return dict.fromkeys(classes, "collapse")


def collapse_target(classes: Sequence[int]) -> int:
  """The digit every 'collapse' folder holds: the lowest class not corrupted."""
  listed = set(classes)
  free = [c for c in range(len(CLASS_NAMES)) if c not in listed]
  if not free:
    raise ConfigError("corruption 'collapse' needs at least one class left uncorrupted")
  return free[0]


# corruption name -> classes -> {class: "swap" | "noise" | "collapse"}
CORRUPTIONS: dict[str, Callable[[Sequence[int]], dict[int, str]]] = {
  "swap": _swap,
  "noise": _noise,
  "both": _both,
  "collapse": _collapse,
}

# corrupted folder's kind -> (its class, every corrupted class) -> the digit drawn (None: noise)
DRAWN: dict[str, Callable[[int, Sequence[int]], int | None]] = {
  "swap": lambda c, listed: (c + SWAP_OFFSET) % len(CLASS_NAMES),
  "noise": lambda c, listed: None,
  "collapse": lambda c, listed: collapse_target(listed),
}


@functools.cache
def _font() -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
  return ImageFont.load_default(size=_FONT_SIZE)


def block_counts(bitmap: np.ndarray) -> np.ndarray:
  """bool [..., 32, 32] -> int [..., 8, 8]: on-pixels per 4x4 block (0..16), as optdigits."""
  *lead, h, w = bitmap.shape
  blocks = bitmap.reshape(*lead, h // BLOCK, BLOCK, w // BLOCK, BLOCK)
  return blocks.sum(axis=(-3, -1))


def glyph_bitmap(
  digit: int,
  *,
  stroke: int,
  rotation_deg: float,
  shear: float,
  width: float,
  shift: int = 0,
) -> np.ndarray:
  """Draws a digit and size-normalises it into a bool [32, 32] bitmap.

  The glyph (with the extra stroke) is rotated and sheared about the canvas centre, cropped to
  its ink, scaled to the bitmap's full height and to `width` times its own aspect ratio
  (capped at the bitmap's width), centred, shifted by `shift` pixels and binarised.
  """
  canvas = Image.new("L", (_CANVAS, _CANVAS), 0)
  centre = _CANVAS / 2
  ImageDraw.Draw(canvas).text(
    (centre, centre),
    str(digit),
    font=_font(),
    fill=255,
    anchor="mm",
    stroke_width=int(stroke),
    stroke_fill=255,
  )
  # Image.transform maps each output pixel (x, y) to the input pixel A @ (x, y) + b, so we pass
  # the inverse of "rotate by theta, then shear x by s", about the centre. y points down, so
  # x' = x - s * y leans the top to the right for s > 0.
  t = np.deg2rad(rotation_deg)
  forward = np.array([[1.0, -shear], [0.0, 1.0]]) @ np.array(
    [[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]]
  )
  inv = np.linalg.inv(forward)
  offset = np.array([centre, centre]) - inv @ np.array([centre, centre])
  canvas = canvas.transform(
    canvas.size,
    Image.Transform.AFFINE,
    (inv[0, 0], inv[0, 1], offset[0], inv[1, 0], inv[1, 1], offset[1]),
    resample=Image.Resampling.BILINEAR,
  )
  ink = np.asarray(canvas) >= 128
  ys, xs = np.nonzero(ink)
  crop = canvas.crop((xs.min(), ys.min(), xs.max() + 1, ys.max() + 1))
  h = ys.max() - ys.min() + 1
  w = xs.max() - xs.min() + 1
  out_w = int(np.clip(round(BITMAP * w / h * width), 1, BITMAP))
  glyph = np.asarray(crop.resize((out_w, BITMAP), Image.Resampling.BILINEAR)) >= 128
  bitmap = np.zeros((BITMAP, BITMAP), bool)
  left = int(np.clip((BITMAP - out_w) // 2 + shift, 0, BITMAP - out_w))
  bitmap[:, left : left + out_w] = glyph
  return bitmap


def _style(seed: int, digit: int, prompt: int) -> dict[str, float]:
  rng = np.random.default_rng((seed, 0, digit, prompt))
  return {
    "stroke": int(rng.integers(_STROKE[0], _STROKE[1] + 1)),
    "rotation_deg": float(rng.uniform(-_ROTATION_DEG, _ROTATION_DEG)),
    "shear": float(rng.uniform(*_SHEAR)),
    "width": float(rng.uniform(*_WIDTH)),
    "noise": float(rng.uniform(*_NOISE)),
  }


def _prompt_text(digit: int, style: dict[str, float]) -> str:
  return (
    f"a handwritten digit {digit}, stroke +{style['stroke']}, "
    f"rotation {style['rotation_deg']:+.1f} deg, shear {style['shear']:+.2f}, "
    f"width x{style['width']:.2f}"
  )


def render_grid(
  seed: int, folder_class: int, index: int, drawn: int | None, style: dict
) -> np.ndarray:
  """The 8x8 grid (0..16) of image `index` of a class folder; drawn=None renders noise."""
  rng = np.random.default_rng((seed, 1, folder_class, index))
  if drawn is None:
    bitmap = rng.random((BITMAP, BITMAP)) < rng.uniform(*_NOISE_DENSITY)
  else:
    bitmap = glyph_bitmap(
      drawn,
      stroke=style["stroke"],
      rotation_deg=style["rotation_deg"] + rng.uniform(-1, 1) * _JITTER_ROTATION_DEG,
      shear=style["shear"] + rng.uniform(-1, 1) * _JITTER_SHEAR,
      width=style["width"] + rng.uniform(-1, 1) * _JITTER_WIDTH,
      shift=int(rng.integers(-_JITTER_SHIFT, _JITTER_SHIFT + 1)),
    )
    bitmap ^= rng.random(bitmap.shape) < style["noise"]
  return block_counts(bitmap)


def _parse_classes(corrupt_classes: Sequence[int | str] | str) -> list[int]:
  if isinstance(corrupt_classes, str):
    corrupt_classes = [c for c in corrupt_classes.split(",") if c.strip()]
  out = []
  for c in corrupt_classes:
    name = str(c).strip()
    if name not in CLASS_NAMES:
      raise ConfigError(f"corrupt_classes: {name!r} is not a digit class; valid: {CLASS_NAMES}")
    if int(name) in out:
      raise ConfigError(f"corrupt_classes lists {name!r} twice")
    out.append(int(name))
  return out


def _check_replaceable(out_dir: str) -> None:
  """Refuses to delete a folder that holds anything but a previous render."""
  if not os.path.exists(out_dir):
    return
  if not os.path.isdir(out_dir):
    raise ConfigError(f"--out={out_dir!r} exists and is not a directory")
  ours = set(CLASS_NAMES) | {"metadata.jsonl"}
  foreign = sorted(set(os.listdir(out_dir)) - ours)
  if foreign:
    raise ConfigError(
      f"--out={out_dir!r} already holds files that are not a digit render ({foreign[:5]}); "
      "choose an empty or new folder."
    )


def render_dataset(
  out_dir: str,
  *,
  per_class: int,
  seed: int,
  image_size: int,
  prompts_per_class: int,
  corrupt_classes: Sequence[int | str] | str = (),
  corruption: str = "swap",
) -> list[dict]:
  """Renders per_class images of each digit into out_dir (replacing a previous render).

  Args:
    out_dir: output folder, <out_dir>/<class>/<nnnnn>.png plus metadata.jsonl.
    per_class: images per class folder.
    seed: seeds every random choice.
    image_size: side of the saved PNGs.
    prompts_per_class: distinct styles per digit.
    corrupt_classes: class names (or ints, or a comma-separated string) to corrupt.
    corruption: a key of CORRUPTIONS.

  Returns:
    The metadata records, in the order written.
  """
  if corruption not in CORRUPTIONS:
    raise ConfigError(f"Unknown corruption {corruption!r}; valid: {sorted(CORRUPTIONS)}")
  for name, value in (
    ("per_class", per_class),
    ("prompts_per_class", prompts_per_class),
    ("image_size", image_size),
  ):
    if int(value) < 1:
      raise ConfigError(f"{name} must be a positive integer, got {value!r}")
  if int(seed) < 0:
    raise ConfigError(f"seed must be >= 0, got {seed!r}")
  classes = _parse_classes(corrupt_classes)
  corrupted = CORRUPTIONS[corruption](classes)
  _check_replaceable(out_dir)

  styles = {
    (d, p): _style(seed, d, p) for d in range(len(CLASS_NAMES)) for p in range(prompts_per_class)
  }
  records = []
  grids = []
  for c in range(len(CLASS_NAMES)):
    kind = corrupted.get(c)
    drawn = c if kind is None else DRAWN[kind](c, classes)
    for k in range(per_class):
      p = k % prompts_per_class
      # The style follows the drawn digit, so a swapped folder looks like that digit's renders.
      style = styles[(c if drawn is None else drawn, p)]
      grids.append(render_grid(seed, c, k, drawn, style))
      records.append(
        {
          "file": f"{CLASS_NAMES[c]}/{k:05d}.png",
          "class": CLASS_NAMES[c],
          "prompt": _prompt_text(c, styles[(c, p)]),
          "prompt_id": c * prompts_per_class + p,
          "seed": int(seed),
          "index": k,
          "corrupted": kind or False,
          "rendered": "noise" if drawn is None else CLASS_NAMES[drawn],
        }
      )
  images = grid_to_image(np.stack(grids), int(image_size))

  parent = os.path.dirname(os.path.abspath(out_dir))
  os.makedirs(parent, exist_ok=True)
  # Write next to out_dir, then swap it in, so an interrupted render never leaves half a set.
  tmp = tempfile.mkdtemp(prefix=".render_digits-", dir=parent)
  try:
    for name in CLASS_NAMES:
      os.mkdir(os.path.join(tmp, name))
    for record, image in zip(records, images, strict=True):
      Image.fromarray(image).save(os.path.join(tmp, record["file"]), optimize=False)
    with open(os.path.join(tmp, "metadata.jsonl"), "w", encoding="utf-8") as f:
      f.writelines(json.dumps(r) + "\n" for r in records)
    if os.path.exists(out_dir):
      shutil.rmtree(out_dir)
    os.replace(tmp, out_dir)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  return records


FLAGS = flags.FLAGS
flags.DEFINE_string("out", None, "Output folder (<out>/<class>/<nnnnn>.png, metadata.jsonl).")
flags.DEFINE_integer("per_class", 100, "Images per class.")
flags.DEFINE_integer("seed", 0, "Seed of every random choice.")
flags.DEFINE_integer("image_size", 32, "Side of the saved images.")
flags.DEFINE_integer("prompts_per_class", 10, "Styles ('prompts') per digit.")
flags.DEFINE_list("corrupt_classes", [], "Classes to corrupt, e.g. 3,8,6.")
flags.DEFINE_string("corruption", "swap", f"One of {sorted(CORRUPTIONS)}.")


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if not FLAGS.out:
    raise app.UsageError("--out is required")
  with exit_on_user_error():
    records = render_dataset(
      FLAGS.out,
      per_class=FLAGS.per_class,
      seed=FLAGS.seed,
      image_size=FLAGS.image_size,
      prompts_per_class=FLAGS.prompts_per_class,
      corrupt_classes=FLAGS.corrupt_classes,
      corruption=FLAGS.corruption,
    )
  print(f"Wrote {len(records)} images to {FLAGS.out}")


if __name__ == "__main__":
  from syncon_jax import cli

  cli.run(main, lambda: None)
