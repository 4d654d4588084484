"""Tests for syncon_jax.data: digits, image folders, the batch sampler."""

from __future__ import annotations

import json
import logging
import os

import ml_collections
import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import load_digits

from syncon_jax import data
from syncon_jax.data import digits, folders
from syncon_jax.data.sampler import BatchSampler
from syncon_jax.errors import ConfigError, DataError

# ----------------------------------------------------------------------------- digits


def _digits_config(**overrides) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict(
    {"name": "digits", "image_size": 8, "test_fraction": 0.3, "split_seed": 0}
  )
  c.update(overrides)
  return c


@pytest.fixture(scope="module")
def sk_digits():
  return load_digits()


def _rows(images: np.ndarray, labels: np.ndarray) -> list[bytes]:
  return sorted(img.tobytes() + bytes([lab]) for img, lab in zip(images, labels, strict=True))


def test_split_covers_all_digits_once_and_is_stratified(sk_digits):
  train, test, names = data.load_real(_digits_config())
  assert names == [str(d) for d in range(10)]
  assert len(train.labels) + len(test.labels) == len(sk_digits.target) == 1797
  # At image_size 8 the upsampling is the identity, so every image is its own grid * 255/16:
  # the two splits together must be exactly sklearn's set (as a multiset), hence disjoint.
  expected = np.rint(sk_digits.images * 255.0 / 16.0).astype(np.uint8)
  expected = np.repeat(expected[..., None], 3, -1)
  got = _rows(
    np.concatenate([train.images, test.images]), np.concatenate([train.labels, test.labels])
  )
  assert got == _rows(expected, sk_digits.target)
  per_class = np.bincount(sk_digits.target)
  test_counts = np.bincount(test.labels, minlength=10)
  assert np.all(np.abs(test_counts - 0.3 * per_class) <= 1), (test_counts, 0.3 * per_class)
  assert train.labels.dtype == np.int32 and test.labels.dtype == np.int32


def test_split_fixed_by_seed():
  a_train, a_test, _ = data.load_real(_digits_config())
  b_train, b_test, _ = data.load_real(_digits_config())
  c_train, _, _ = data.load_real(_digits_config(split_seed=1))
  np.testing.assert_array_equal(a_train.images, b_train.images)
  np.testing.assert_array_equal(a_test.labels, b_test.labels)
  assert not np.array_equal(a_train.labels, c_train.labels)


def test_images_bright_on_dark():
  train, test, _ = data.load_real(_digits_config(image_size=32))
  for split in (train, test):
    assert split.images.dtype == np.uint8
    assert split.images.shape == (len(split.labels), 32, 32, 3)
  imgs = train.images
  np.testing.assert_array_equal(imgs[..., 0], imgs[..., 2])
  # Ink is bright: every digit reaches near white; the ground (corners) is dark.
  assert imgs.reshape(len(imgs), -1).max(1).min() >= 200
  corners = imgs[:, [0, 0, -1, -1], [0, -1, 0, -1], 0]
  assert corners.mean() < 20
  assert imgs.mean() < 100  # most of the frame is ground


@pytest.mark.parametrize("size", [8, 16, 32, 37])
def test_grid_to_image_matches_pillow_bilinear(size):
  rng = np.random.default_rng(0)
  grid = rng.uniform(0, 16, (3, 8, 8))
  got = digits.grid_to_image(grid, size)
  assert got.shape == (3, size, size, 3) and got.dtype == np.uint8
  for g, img in zip(grid, got, strict=True):
    # Pillow's bilinear upsampling (half-pixel centres, edge weights renormalised) as the
    # independent reference; float32 inside Pillow allows a rounding difference of 1.
    ref = Image.fromarray((g * 255.0 / 16.0).astype(np.float32), "F")
    ref = np.asarray(ref.resize((size, size), Image.Resampling.BILINEAR), np.float64)
    assert np.abs(img[..., 0].astype(np.float64) - ref).max() <= 1.0


def test_load_real_errors():
  with pytest.raises(ConfigError, match="digits"):
    data.load_real(_digits_config(name="mnist"))
  with pytest.raises(ConfigError, match="test_fraction"):
    data.load_real(_digits_config(test_fraction=1.5))
  assert "digits" in data.DATASETS


# ----------------------------------------------------------------------------- folders


def _png(path, value: int, size=(6, 6), mode="L"):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  img = Image.new(mode, size, value if mode == "L" else (value, value // 2, 0))
  img.save(path, **({"lossless": True} if str(path).endswith(".webp") else {}))


def test_load_synthetic_reads_contract_folder(tmp_path):
  root = tmp_path / "syn"
  _png(root / "Black_footed albatross" / "a.png", 10)
  _png(root / "Black_footed albatross" / "b.jpg", 200, mode="RGB")
  _png(root / "laysan-albatross" / "c.webp", 100, size=(9, 4), mode="RGB")
  (root / "laysan-albatross" / "notes.txt").write_text("ignored")
  (root / ".ipynb_checkpoints").mkdir()
  meta = [
    {"file": "Black_footed albatross/a.png", "prompt": "p0"},
    {"file": "Black_footed albatross/b.jpg", "prompt": "p1"},
    {"file": "laysan-albatross/c.webp", "prompt": "p0"},
  ]
  (root / "metadata.jsonl").write_text("".join(json.dumps(m) + "\n" for m in meta))
  names = ["black-footed-albatross", "Laysan Albatross", "sooty albatross"]
  syn = data.load_synthetic(str(root), names, image_size=5)
  assert syn.files == [
    "Black_footed albatross/a.png",
    "Black_footed albatross/b.jpg",
    "laysan-albatross/c.webp",
  ]
  np.testing.assert_array_equal(syn.labels, [0, 0, 1])
  assert syn.images.shape == (3, 5, 5, 3) and syn.images.dtype == np.uint8
  np.testing.assert_array_equal(syn.images[0], np.full((5, 5, 3), 10))  # L -> RGB
  np.testing.assert_array_equal(syn.images[2, 2, 2], [100, 50, 0])  # resized, RGB kept
  assert abs(int(syn.images[1, 2, 2, 0]) - 200) <= 3  # JPEG is lossy
  # Same prompt text, same id; ids numbered in image order.
  np.testing.assert_array_equal(syn.prompt_ids, [0, 1, 0])
  assert syn.missing_classes == ["sooty albatross"]


def test_name_normalisation():
  n = folders.normalize_class_name
  assert (
    n("Black_footed albatross") == n("black-footed-albatross") == n(" BLACK  footed__Albatross ")
  )
  # Separators are ignored, not unified: a folder cannot hold the '/' of "F-16A/B".
  assert n("F-16A/B") == n("F-16AB") == n("f16ab") == n("F 16A_B")
  assert n("black footed albatross") == n("blackfooted albatross")
  assert n("747-100") != n("747-200") and n("F/A-18") != n("F-16A/B")


def test_prompt_ids_minus_one_without_metadata(tmp_path):
  _png(tmp_path / "0" / "x.png", 1)
  _png(tmp_path / "1" / "y.png", 2)
  syn = data.load_synthetic(str(tmp_path), ["0", "1"], image_size=4)
  np.testing.assert_array_equal(syn.prompt_ids, [-1, -1])
  assert syn.missing_classes == []


def test_missing_and_empty_dirs(tmp_path):
  with pytest.raises(DataError, match="does not exist"):
    data.load_synthetic(str(tmp_path / "nope"), ["0"], image_size=4)
  with pytest.raises(ConfigError):
    data.load_synthetic(None, ["0"], image_size=4)
  with pytest.raises(DataError, match="no class folders"):
    data.load_synthetic(str(tmp_path), ["0"], image_size=4)
  (tmp_path / "0").mkdir()
  (tmp_path / "0" / "readme.txt").write_text("not an image")
  with pytest.raises(DataError, match="no images"):
    data.load_synthetic(str(tmp_path), ["0"], image_size=4)


def test_unmatched_folder_lists_nearest_names(tmp_path):
  _png(tmp_path / "black footed albatros" / "a.png", 1)
  _png(tmp_path / "zebra" / "a.png", 1)
  names = ["black-footed-albatross", "laysan albatross", "american crow"]
  with pytest.raises(DataError) as e:
    data.load_synthetic(str(tmp_path), names, image_size=4)
  msg = str(e.value)
  assert "'black footed albatros'" in msg and "'black-footed-albatross'" in msg
  assert "'zebra'" in msg and "none close" in msg


def test_two_folders_for_one_class(tmp_path):
  _png(tmp_path / "Sooty_Albatross" / "a.png", 1)
  _png(tmp_path / "sooty albatross" / "a.png", 1)
  with pytest.raises(DataError, match="both match class"):
    data.load_synthetic(str(tmp_path), ["sooty albatross"], image_size=4)


def test_unreadable_image_names_path(tmp_path):
  _png(tmp_path / "0" / "good.png", 1)
  bad = tmp_path / "1" / "bad.png"
  bad.parent.mkdir()
  bad.write_bytes(b"\x89PNG not really")
  with pytest.raises(DataError, match="bad.png"):
    data.load_synthetic(str(tmp_path), ["0", "1"], image_size=4)


def test_bad_metadata_line(tmp_path):
  _png(tmp_path / "0" / "a.png", 1)
  (tmp_path / "metadata.jsonl").write_text('{"file": "0/a.png", "prompt": "x"}\n{oops\n')
  with pytest.raises(DataError, match=r"metadata.jsonl:2"):
    data.load_synthetic(str(tmp_path), ["0"], image_size=4)


def test_read_metadata_torn_tail_is_a_cut_line_only_when_asked(tmp_path):
  path = tmp_path / "metadata.jsonl"
  path.write_text('{"file": "0/a.png"}\n\n{"file": "0/b.png"}')  # no newline after the last
  entries, torn = folders.read_metadata(str(path))
  assert [e["file"] for e in entries] == ["0/a.png", "0/b.png"] and torn == ""
  entries, torn = folders.read_metadata(str(path), torn_tail=True)
  assert [e["file"] for e in entries] == ["0/a.png"] and torn == '{"file": "0/b.png"}'
  path.write_text('{"file": "0/a.png"}\n["0/b.png"]\n')
  with pytest.raises(DataError, match=r"metadata.jsonl:2 must be a JSON object"):
    folders.read_metadata(str(path))


def test_class_without_images_is_reported_once(tmp_path, caplog):
  _png(tmp_path / "0" / "a.png", 1)
  (tmp_path / "2").mkdir()  # present but empty
  with caplog.at_level(logging.WARNING):
    syn = data.load_synthetic(str(tmp_path), ["0", "1", "2"], image_size=4)
  assert syn.missing_classes == ["1", "2"]
  warnings = [r for r in caplog.records if "no images" in r.getMessage()]
  assert len(warnings) == 1 and "1, 2" in warnings[0].getMessage()


def test_load_image_folder(tmp_path):
  _png(tmp_path / "cat" / "a.png", 1)
  _png(tmp_path / "cat" / "b.png", 2)
  _png(tmp_path / "ant" / "c.png", 3)
  split, names = data.load_image_folder(str(tmp_path), image_size=3)
  assert names == ["ant", "cat"]
  np.testing.assert_array_equal(split.labels, [0, 1, 1])
  np.testing.assert_array_equal(split.images[:, 0, 0, 0], [3, 1, 2])
  split, names = data.load_image_folder(str(tmp_path), image_size=3, class_names=["Cat", "Ant"])
  np.testing.assert_array_equal(split.labels, [0, 0, 1])
  np.testing.assert_array_equal(split.images[:, 0, 0, 0], [1, 2, 3])


# ----------------------------------------------------------------------------- sampler


def _sampler(real_labels, syn_labels, *, B=4, S=2, seed=3, C=3) -> BatchSampler:
  return BatchSampler(
    np.asarray(real_labels),
    np.asarray(syn_labels),
    num_classes=C,
    batch_size=B,
    synthetic_per_real=S,
    seed=seed,
  )


REAL = np.array([0, 1, 2, 0, 1, 2, 0, 1, 2, 0])  # N = 10
SYN = np.array([2, 0, 0, 1, 2, 0, 1])  # M = 7


def test_sampler_depends_only_on_seed_and_step():
  a, b = _sampler(REAL, SYN), _sampler(REAL, SYN)
  for step in (5, 0, 17):  # out of order: no hidden state
    for x, y in zip(a.global_indices(step), b.global_indices(step), strict=True):
      np.testing.assert_array_equal(x, y)
  other = _sampler(REAL, SYN, seed=4)
  assert not all(
    np.array_equal(a.global_indices(s)[0], other.global_indices(s)[0]) for s in range(3)
  )


def test_sampler_real_stream_covers_each_epoch_once():
  s = _sampler(REAL, SYN, B=4)  # 10 images, 4 per batch: batches 2 and 4 straddle epochs
  stream = np.concatenate([s.global_indices(step)[0] for step in range(10)])  # 4 epochs
  for e in range(4):
    epoch = stream[10 * e : 10 * (e + 1)]
    np.testing.assert_array_equal(np.sort(epoch), np.arange(10))
    np.testing.assert_array_equal(epoch, np.random.default_rng((3, e)).permutation(10))
  assert not np.array_equal(stream[:10], stream[10:20])  # epochs are reshuffled


def test_sampler_batch_larger_than_dataset():
  s = _sampler(REAL, SYN, B=25)
  stream = np.concatenate([s.global_indices(step)[0] for step in range(2)])
  for e in range(5):
    np.testing.assert_array_equal(np.sort(stream[10 * e : 10 * (e + 1)]), np.arange(10))


def test_sampler_synthetic_share_label_and_are_uniform():
  s = _sampler(REAL, SYN, B=10, S=3)
  counts = np.zeros(len(SYN))
  for step in range(200):
    real, syn, valid = s.global_indices(step)
    assert valid.all()
    np.testing.assert_array_equal(SYN[syn], np.broadcast_to(REAL[real][:, None], syn.shape))
    np.add.at(counts, syn.ravel(), 1)
  # Within each class every member is drawn about equally often (uniform with replacement).
  for c in range(3):
    members = np.flatnonzero(SYN == c)
    share = counts[members] / counts[members].sum()
    np.testing.assert_allclose(share, 1 / len(members), atol=0.05)


def test_sampler_class_without_synthetic_images():
  syn_labels = np.array([0, 0, 2])  # class 1 has none
  s = _sampler(REAL, syn_labels, B=10, S=2)
  real, syn, valid = s.global_indices(0)
  missing = REAL[real] == 1
  assert missing.any()
  assert not valid[missing].any() and valid[~missing].all()
  assert (syn[missing] == 0).all()
  real_images = np.arange(10, dtype=np.uint8)[:, None, None, None] * np.ones((1, 2, 2, 3), np.uint8)
  syn_images = (100 + np.arange(3, dtype=np.uint8))[:, None, None, None] * np.ones(
    (1, 2, 2, 3), np.uint8
  )
  batch = s.host_batch(0, real_images, syn_images, process_index=0, process_count=1)
  assert (batch["synthetic_images"][missing] == 0).all()
  np.testing.assert_array_equal(batch["synthetic_images"][valid][:, 0, 0, 0], 100 + syn[valid])


def test_sampler_no_synthetic_at_all_and_zero_per_real():
  real_images = np.zeros((10, 2, 2, 3), np.uint8)
  s = _sampler(REAL, np.zeros(0, int), B=4, S=2)
  batch = s.host_batch(
    1, real_images, np.zeros((0, 2, 2, 3), np.uint8), process_index=0, process_count=1
  )
  assert batch["synthetic_images"].shape == (4, 2, 2, 2, 3)
  assert not batch["synthetic_valid"].any()
  s0 = _sampler(REAL, SYN, B=4, S=0)
  batch = s0.host_batch(
    0, real_images, np.zeros((7, 2, 2, 3), np.uint8), process_index=0, process_count=2
  )
  assert batch["synthetic_images"].shape == (2, 0, 2, 2, 3)
  assert batch["synthetic_labels"].shape == batch["synthetic_valid"].shape == (2, 0)


@pytest.mark.parametrize("P", [1, 2, 4])
def test_host_shards_concatenate_to_global_batch(P):
  rng = np.random.default_rng(0)
  real_images = rng.integers(0, 256, (10, 3, 3, 3), dtype=np.uint8)
  syn_images = rng.integers(0, 256, (7, 3, 3, 3), dtype=np.uint8)
  s = _sampler(REAL, SYN, B=8, S=2)
  step = 3
  shards = [
    s.host_batch(step, real_images, syn_images, process_index=p, process_count=P) for p in range(P)
  ]
  real, syn, valid = s.global_indices(step)
  glob = {k: np.concatenate([sh[k] for sh in shards]) for k in shards[0]}
  np.testing.assert_array_equal(glob["real_images"], real_images[real])
  np.testing.assert_array_equal(glob["real_labels"], REAL[real])
  np.testing.assert_array_equal(glob["index"], step * 8 + np.arange(8))
  np.testing.assert_array_equal(glob["synthetic_images"], syn_images[syn])
  np.testing.assert_array_equal(glob["synthetic_labels"], SYN[syn])
  np.testing.assert_array_equal(glob["synthetic_valid"], valid)
  assert shards[0]["real_images"].shape == (8 // P, 3, 3, 3)
  assert glob["real_labels"].dtype == np.int32 and glob["index"].dtype == np.int64


def test_sampler_config_errors():
  s = _sampler(REAL, SYN, B=6)
  with pytest.raises(ConfigError, match="batch_size"):
    s.host_batch(
      0,
      np.zeros((10, 2, 2, 3), np.uint8),
      np.zeros((7, 2, 2, 3), np.uint8),
      process_index=0,
      process_count=4,
    )
  with pytest.raises(ConfigError, match="synthetic_per_real"):
    _sampler(REAL, SYN, S=-1)
  with pytest.raises(DataError, match="labels"):
    _sampler(REAL, np.array([0, 5]), C=3)


# ----------------------------------------------------------------------------- few-shot regime


def _fewshot_config(k, seed=0, subset_seed=None) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(
    {"seed": seed, "data": dict(_digits_config().to_dict(), real_per_class=k,
                                real_subset_seed=subset_seed)}
  )  # fmt: skip


def test_fewshot_keeps_k_per_class_and_the_rest_is_the_pool():
  full, test, _ = data.load_real(_digits_config())
  splits = data.load_splits(_fewshot_config(3, seed=4))
  np.testing.assert_array_equal(np.bincount(splits.train.labels), [3] * 10)
  assert len(splits.pool.labels) == len(full.labels) - 30
  # train and pool partition the train split; the test split is untouched.
  assert _rows(np.concatenate([splits.train.images, splits.pool.images]),
               np.concatenate([splits.train.labels, splits.pool.labels])) == _rows(
    full.images, full.labels)  # fmt: skip
  assert not set(_rows(splits.train.images, splits.train.labels)) & set(
    _rows(splits.pool.images, splits.pool.labels)
  )
  np.testing.assert_array_equal(splits.test.images, test.images)
  # The subset follows the run's seed unless real_subset_seed is set.
  other = data.load_splits(_fewshot_config(3, seed=5))
  assert _rows(*other.train) != _rows(*splits.train)
  pinned = data.load_splits(_fewshot_config(3, seed=5, subset_seed=4))
  assert _rows(*pinned.train) == _rows(*splits.train)


def test_fewshot_off_and_bad_k():
  full, _, _ = data.load_real(_digits_config())
  splits = data.load_splits(_fewshot_config(0))
  np.testing.assert_array_equal(splits.train.labels, full.labels)
  assert len(splits.pool.labels) == 0
  with pytest.raises(DataError, match="real_per_class=1000"):
    data.load_splits(_fewshot_config(1000))
  with pytest.raises(ConfigError, match="real_per_class"):
    data.load_splits(_fewshot_config(-1))


def test_fewshot_config_follows_the_seed_override():
  from configs import digits as digits_config

  c = digits_config.get_config("objective=supcon,fewshot")
  assert c.data.real_per_class > 0 and c.batch_size == 10 * c.data.real_per_class
  c.seed = 3
  assert data.real_subset_seed(c) == 3
