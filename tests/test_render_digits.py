"""Tests for syncon_jax.tools.render_digits: the folder contract, realism, corruptions."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from syncon_jax import data
from syncon_jax.data import digits
from syncon_jax.errors import ConfigError
from syncon_jax.tools import render_digits

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NAMES = digits.CLASS_NAMES
SIZE = 32
PER_CLASS = 30
PROMPTS = 10  # the command's default


@pytest.fixture(scope="module")
def real_means() -> np.ndarray:
  """[10, SIZE*SIZE] float64 pixel means of the real train digits per class."""
  train, _, _ = digits.load(image_size=SIZE, test_fraction=0.3, split_seed=0)
  x = train.images[..., 0].reshape(len(train.labels), -1).astype(np.float64)
  return np.stack([x[train.labels == c].mean(0) for c in range(10)])


def _nearest_mean(images: np.ndarray, means: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(predicted class, distance to the nearest class mean) per image."""
  x = images[..., 0].reshape(len(images), -1).astype(np.float64)
  d = np.sqrt(((x[:, None, :] - means[None]) ** 2).sum(-1))
  return d.argmin(1), d.min(1)


def _render(out, **kw):
  args = {"per_class": PER_CLASS, "seed": 0, "image_size": SIZE, "prompts_per_class": PROMPTS}
  args.update(kw)
  return render_digits.render_dataset(str(out), **args)


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
  out = tmp_path_factory.mktemp("render") / "clean"
  records = _render(out)
  return out, records, data.load_synthetic(str(out), NAMES, image_size=SIZE)


@pytest.fixture(scope="module")
def corrupted(tmp_path_factory):
  # 2 -> 7 and 5 -> 0 swapped (first half of the list), 6 noise.
  out = tmp_path_factory.mktemp("render") / "both"
  records = _render(out, corrupt_classes="2,5,6", corruption="both")
  return out, records, data.load_synthetic(str(out), NAMES, image_size=SIZE)


def test_follows_folder_contract(clean):
  out, records, syn = clean
  assert sorted(os.listdir(out)) == sorted([*NAMES, "metadata.jsonl"])
  for name in NAMES:
    assert sorted(os.listdir(out / name)) == [f"{k:05d}.png" for k in range(PER_CLASS)]
  lines = [json.loads(x) for x in (out / "metadata.jsonl").read_text().splitlines()]
  assert lines == records and len(lines) == 10 * PER_CLASS
  for r in lines:
    assert {"file", "class", "prompt", "prompt_id", "seed", "corrupted"} <= set(r)
    assert r["file"].startswith(r["class"] + "/") and r["corrupted"] is False
    assert r["prompt_id"] == int(r["class"]) * PROMPTS + r["index"] % PROMPTS
  # Loads back through the synthetic loader: labels from folders, prompts grouped as written.
  assert syn.missing_classes == [] and syn.images.shape == (10 * PER_CLASS, SIZE, SIZE, 3)
  by_file = {r["file"]: r for r in records}
  np.testing.assert_array_equal(syn.labels, [int(by_file[f]["class"]) for f in syn.files])
  written = np.array([by_file[f]["prompt_id"] for f in syn.files])
  for pid in np.unique(syn.prompt_ids):
    assert len(set(written[syn.prompt_ids == pid])) == 1
  assert len(np.unique(syn.prompt_ids)) == len(np.unique(written)) == 10 * PROMPTS


def test_images_of_one_prompt_differ(clean):
  _, _, syn = clean
  same_prompt = np.flatnonzero(syn.prompt_ids == syn.prompt_ids[0])
  assert len(same_prompt) == PER_CLASS // PROMPTS
  a, b = syn.images[same_prompt[0]], syn.images[same_prompt[1]]
  assert not np.array_equal(a, b)


def test_pipeline_matches_real_acquisition(clean):
  """Every image is an 8x8 grid of block counts (0..16) upsampled by grid_to_image."""
  _, _, syn = clean
  # Rendering a grid again from the recorded seed and index reproduces the saved PNG.
  style = render_digits._style(0, 3, 1)
  grid = render_digits.render_grid(0, 3, 1, 3, style)
  assert grid.shape == (8, 8) and grid.min() >= 0 and grid.max() <= 16
  i = syn.files.index("3/00001.png")
  np.testing.assert_array_equal(syn.images[i], digits.grid_to_image(grid, SIZE))
  # The glyph fills the frame's height, as size-normalised optdigits bitmaps do.
  bitmap = render_digits.glyph_bitmap(4, stroke=1, rotation_deg=0.0, shear=0.0, width=0.8)
  assert bitmap.any(axis=1).all() and not bitmap.any(axis=0).all()


def test_nearest_real_class_mean_recognises_most_classes(clean, real_means):
  _, _, syn = clean
  pred, _ = _nearest_mean(syn.images, real_means)
  acc = np.array([(pred[syn.labels == c] == c).mean() for c in range(10)])
  print("per-class accuracy of rendered digits under real class means:", np.round(acc, 2))
  # Chance is 0.1. Glyphs placed small at random scored about 0 on 7 of 10 classes (issue 3).
  # Renders that follow the acquisition are recognisable for most digits, while the typeface's
  # big closed loops of 6 and 9 stay far from handwritten ones (a real domain gap, also seen in
  # issue 5's prototype). Thresholds were set from seeds 0..11 (30 per class, 10 prompts), not
  # from this seed: every seed had >= 7 classes at >= 3x chance (0.3) and a mean of 0.52..0.60;
  # 11 of 12 had 8 classes >= 0.25 (digit 2 varies most, 0.17..0.70, with its 10 styles).
  assert (acc >= 0.3).sum() >= 7, acc
  assert acc.mean() >= 0.45, acc


def test_swapped_classes_look_like_their_source(corrupted, real_means):
  _, records, syn = corrupted
  pred, _ = _nearest_mean(syn.images, real_means)
  for c in (2, 5):
    source = (c + render_digits.SWAP_OFFSET) % 10
    in_folder = syn.labels == c
    assert {r["corrupted"] for r in records if r["class"] == str(c)} == {"swap"}
    assert (pred[in_folder] == source).mean() >= 0.5
    assert (pred[in_folder] == c).mean() <= 0.1


def test_noise_class_is_unstructured(corrupted, clean, real_means):
  _, records, syn = corrupted
  assert {r["corrupted"] for r in records if r["class"] == "6"} == {"noise"}
  assert {r["rendered"] for r in records if r["class"] == "6"} == {"noise"}
  # Noise is further from every real class mean than any clean class's renders are on average.
  _, dist = _nearest_mean(syn.images, real_means)
  _, clean_dist = _nearest_mean(clean[2].images, real_means)
  clean_per_class = [clean_dist[clean[2].labels == c].mean() for c in range(10)]
  assert dist[syn.labels == 6].mean() > max(clean_per_class)
  # Uncorrupted folders are identical to the clean render: corruption touches only its classes.
  for c in (0, 1, 3, 4, 7, 8, 9):
    np.testing.assert_array_equal(
      syn.images[syn.labels == c], clean[2].images[clean[2].labels == c]
    )


def test_collapsed_folders_hold_the_lowest_uncorrupted_digit(tmp_path, clean, real_means):
  corrupt = "0,1,2,3,4"  # -> all 5s, a digit the renderer draws recognisably
  records = _render(
    tmp_path / "collapse", per_class=10, corrupt_classes=corrupt, corruption="collapse"
  )
  assert render_digits.collapse_target([0, 1, 2, 3, 4]) == 5
  assert render_digits.collapse_target([0, 1, 3]) == 2
  syn = data.load_synthetic(str(tmp_path / "collapse"), NAMES, image_size=SIZE)
  pred, _ = _nearest_mean(syn.images, real_means)
  for c in range(5):
    assert {(r["corrupted"], r["rendered"]) for r in records if r["class"] == str(c)} == {
      ("collapse", "5")
    }
    assert (pred[syn.labels == c] == 5).mean() >= 0.5 and (pred[syn.labels == c] == c).mean() <= 0.1
  # The target's own folder and the others are the clean render's.
  for c in range(5, 10):
    np.testing.assert_array_equal(
      syn.images[syn.labels == c], clean[2].images[clean[2].labels == c][:10]
    )
  with pytest.raises(ConfigError, match="collapse"):
    render_digits.collapse_target(range(10))


def test_corruption_split_of_both():
  assert render_digits.CORRUPTIONS["both"]([3, 8, 6]) == {3: "swap", 8: "swap", 6: "noise"}
  assert render_digits.CORRUPTIONS["both"]([1, 2]) == {1: "swap", 2: "noise"}


def test_deterministic_for_a_seed(tmp_path):
  a = _render(tmp_path / "a", per_class=3)
  b = _render(tmp_path / "b", per_class=3)
  c = _render(tmp_path / "c", per_class=3, seed=1)
  assert a == b
  for r in a:
    assert (tmp_path / "a" / r["file"]).read_bytes() == (tmp_path / "b" / r["file"]).read_bytes()
  differ = [
    (tmp_path / "a" / r["file"]).read_bytes() != (tmp_path / "c" / r["file"]).read_bytes()
    for r in c
  ]
  assert all(differ)


def test_rerender_replaces_previous_but_not_foreign_folder(tmp_path):
  out = tmp_path / "syn"
  _render(out, per_class=3)
  _render(out, per_class=2)
  assert len(os.listdir(out / "0")) == 2
  (out / "mine.txt").write_text("user data")
  with pytest.raises(ConfigError, match="mine.txt"):
    _render(out, per_class=2)
  assert (out / "mine.txt").exists()


def test_bad_arguments(tmp_path):
  with pytest.raises(ConfigError, match="both"):
    _render(tmp_path / "x", corruption="blur")
  with pytest.raises(ConfigError, match="'10'"):
    _render(tmp_path / "x", corrupt_classes=[10])
  with pytest.raises(ConfigError, match="per_class"):
    _render(tmp_path / "x", per_class=0)
  assert not (tmp_path / "x").exists()


def test_command_line(tmp_path):
  cmd = [sys.executable, "-m", "syncon_jax.tools.render_digits", f"--out={tmp_path / 'o'}"]
  ok = subprocess.run(
    [*cmd, "--per_class=2", "--prompts_per_class=1", "--corrupt_classes=1", "--corruption=noise"],
    capture_output=True,
    text=True,
    cwd=REPO,
  )
  assert ok.returncode == 0, ok.stderr
  lines = [json.loads(x) for x in (tmp_path / "o" / "metadata.jsonl").read_text().splitlines()]
  assert len(lines) == 20 and {r["corrupted"] for r in lines if r["class"] == "1"} == {"noise"}
  bad = subprocess.run([*cmd, "--corruption=blur"], capture_output=True, text=True, cwd=REPO)
  assert bad.returncode != 0 and "blur" in bad.stderr and "Traceback" not in bad.stderr
