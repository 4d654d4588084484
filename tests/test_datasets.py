"""Real data sets and the paper configs: TFDS sources under tfds.testing.mock_data, Birdsnap,
FGVC-Aircraft and CIFAKE written in miniature in their official layouts, lazy decoding, and
each paper config training 2 steps and running linear eval on them."""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import logging
import math
import os
import re
import shutil
import zlib

import ml_collections
import numpy as np
import pytest
from PIL import Image

from syncon_jax import data
from syncon_jax.data import aircraft, birdsnap, cifake, folders, tfds_sources
from syncon_jax.errors import ConfigError, DataError

# ----------------------------------------------------------------------------- helpers


def _ref(source, size: int, crop_bottom: int = 0, resize: str = "crop") -> np.ndarray:
  """Independent decode: full-resolution Pillow decode, banner cut, then the centred square
  (resize="crop", resampled from the whole image as torchvision's Resize + CenterCrop) or the
  whole image (resize="squash"), bilinear to size x size."""
  img = Image.open(io.BytesIO(source) if isinstance(source, bytes) else source).convert("RGB")
  if crop_bottom:
    img = img.crop((0, 0, img.width, img.height - crop_bottom))
  box = (0, 0, img.width, img.height)
  if resize == "crop":
    side = min(img.size)
    x0, y0 = (img.width - side) // 2, (img.height - side) // 2
    box = (x0, y0, x0 + side, y0 + side)
  return np.asarray(img.resize((size, size), Image.Resampling.BILINEAR, box=box), np.uint8)


def _image(rng, w: int, h: int, tint: int) -> np.ndarray:
  base = rng.integers(0, 120, (h, w, 3))
  base[..., tint % 3] += 120  # a class colour, so the probe has something to find
  return base.astype(np.uint8)


def _jpeg(path, arr: np.ndarray) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  Image.fromarray(arr).save(path, quality=95)


def _cfg(**kv) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(kv)


# ----------------------------------------------------------------------------- TFDS (mocked)

# Class counts of the real data sets: facts of the data, independent of our code.
TFDS_NUM_CLASSES = {
  "cifar10": 10,
  "cifar100": 100,
  "oxford_flowers102": 102,
  "caltech_birds2011": 200,
  "dtd": 47,
  "food101": 101,
  "oxford_iiit_pet": 37,
  "cars196": 196,
}
MOCK_CLASSES = 4  # labels used by the fake examples: enough rows per class for the probe
MOCK_PER_CLASS = {"train": 4, "test": 2}


def _mock_examples(name: str, split: str) -> list[tuple[bytes, int]]:
  """Deterministic (PNG bytes, label) examples of a fake split; sizes vary, some non-square."""
  role = "test" if split == tfds_sources.SOURCES[name].test_split else "train"
  rng = np.random.default_rng(zlib.crc32(f"{name}/{split}".encode()))
  out = []
  for i in range(MOCK_CLASSES * MOCK_PER_CLASS[role]):
    w, h = (int(v) for v in rng.integers(12, 40, 2))
    buf = io.BytesIO()
    Image.fromarray(_image(rng, w, h, i)).save(buf, format="PNG")
    out.append((buf.getvalue(), i % MOCK_CLASSES))
  return out


SPLITS_SEEN: list[tuple[str, str]] = []


def _fake_as_dataset(self, split, decoders=None, read_config=None, **kwargs):
  """Stands in for builder._as_dataset: image undecoded (as SkipDecoding leaves it) + label."""
  import tensorflow as tf

  del decoders, read_config, kwargs
  SPLITS_SEEN.append((self.name, str(split)))
  examples = _mock_examples(self.name, str(split))
  return tf.data.Dataset.from_tensor_slices(
    {
      "image": tf.constant([e[0] for e in examples], tf.string),
      "label": tf.constant([e[1] for e in examples], tf.int64),
    }
  )


@pytest.fixture(scope="module")
def tfds_mock():
  """A factory of mock_data contexts (TensorFlow is imported once, on first use)."""
  tfds = tfds_sources.import_tfds()
  return lambda: tfds.testing.mock_data(as_dataset_fn=_fake_as_dataset)


@pytest.mark.parametrize("lazy", [False, True])
def test_tfds_sources_read_images_labels_and_class_names(tfds_mock, lazy):
  assert set(tfds_sources.SOURCES) == set(TFDS_NUM_CLASSES)
  for name, num_classes in TFDS_NUM_CLASSES.items():
    SPLITS_SEEN.clear()
    with tfds_mock():
      train, test, names = data.load_real(
        _cfg(name=name, image_size=9, data_dir="/nonexistent/tfds", lazy=lazy)
      )
    assert len(names) == num_classes and len(set(names)) == num_classes, name
    defaults = tfds_sources.SOURCES[name]
    assert SPLITS_SEEN == [(name, defaults.train_split), (name, defaults.test_split)]
    for split, served in ((train, defaults.train_split), (test, defaults.test_split)):
      examples = _mock_examples(name, served)
      assert isinstance(split.images, folders.LazyImages) == lazy
      images = np.asarray(split.images)
      assert images.shape == (len(examples), 9, 9, 3) and images.dtype == np.uint8
      np.testing.assert_array_equal(split.labels, [e[1] for e in examples])
      np.testing.assert_array_equal(images, np.stack([_ref(e[0], 9) for e in examples]))


def test_tfds_flowers_names_and_split_override(tfds_mock):
  SPLITS_SEEN.clear()
  with tfds_mock():
    _, _, names = data.load_real(
      _cfg(name="oxford_flowers102", image_size=8, train_split="train", test_split="validation")
    )
  # Flowers' ClassLabel carries the flower names (what a synthetic folder is matched to).
  assert names[0] == "pink primrose"
  assert SPLITS_SEEN == [("oxford_flowers102", "train"), ("oxford_flowers102", "validation")]


def test_tfds_download_reaches_the_network(tmp_path, monkeypatch):
  """data.download=True gets as far as fetching the files (it died on a missing dependency,
  importlib_resources, before any network access); the download itself is stood in for."""
  tfds = tfds_sources.import_tfds()

  def offline(self, *args, **kwargs):
    raise RuntimeError("offline stand-in for the download")

  monkeypatch.setattr(tfds.download.DownloadManager, "download_and_extract", offline)
  monkeypatch.setattr(tfds.download.DownloadManager, "download", offline)
  with pytest.raises(RuntimeError, match="offline stand-in"):
    tfds_sources.load("cifar10", image_size=8, data_dir=str(tmp_path), download=True)


def test_tfds_missing_data_says_where_and_how(tmp_path):
  tfds_sources.import_tfds()
  with pytest.raises(DataError) as e:
    tfds_sources.load("oxford_flowers102", image_size=8, data_dir=str(tmp_path))
  msg = str(e.value)
  assert "oxford_flowers102" in msg and "download=True" in msg
  # The folder to pass is the TFDS root, not the versioned subfolder it looked in.
  assert f"--config.data.data_dir={tmp_path} " in msg
  with pytest.raises(ConfigError, match="cifar10"):
    tfds_sources.load("mnist", image_size=8)


# ----------------------------------------------------------------------------- Birdsnap

BIRDSNAP_SPECIES = [  # (id, common, scientific, dir): ids out of order on purpose
  (3, "Blue Jay", "Cyanocitta cristata", "Blue_Jay"),
  (1, "Black-footed Albatross", "Phoebastria nigripes", "Black_footed_Albatross"),
  (2, "Laysan Albatross", "Phoebastria immutabilis", "Laysan_Albatross"),
]
BIRDSNAP_NAMES = ["Black-footed Albatross", "Laysan Albatross", "Blue Jay"]  # by id


@pytest.fixture(scope="module")
def birdsnap_dir(tmp_path_factory) -> dict:
  """Birdsnap 1.1 in miniature: 3 species x 8 images, 2 of each in test; one train image never
  downloaded and one train image that is an HTML error page saved as .jpg."""
  root = tmp_path_factory.mktemp("birdsnap")
  with open(root / "species.txt", "w") as f:
    f.write("id\tcommon\tscientific\tdir\n")
    for row in BIRDSNAP_SPECIES:
      f.write("\t".join(map(str, row)) + "\n")
  rng = np.random.default_rng(0)
  rows, test, expect = [], [], {"train": [], "test": []}
  missing, corrupt = "Laysan_Albatross/204.jpg", "Blue_Jay/305.jpg"
  for sid, _, _, folder in sorted(BIRDSNAP_SPECIES):
    for k in range(8):
      path = f"{folder}/{sid * 100 + k}.jpg"
      rows.append(f"http://flickr/x.jpg\tabc\t{path}\t{sid}\t1\t2\t3\t4\n")
      role = "test" if k < 2 else "train"
      if role == "test":
        test.append(path)
      file = root / "download" / "images" / path
      if path == missing:
        continue
      if path == corrupt:
        os.makedirs(file.parent, exist_ok=True)
        file.write_text("<html>Flickr: this photo is no longer available</html>")
        continue
      _jpeg(file, _image(rng, 20, 14, sid))
      expect[role].append((str(file), sid - 1))
  with open(root / "images.txt", "w") as f:
    f.write("url\tmd5\tpath\tspecies_id\tbb_x1\tbb_y1\tbb_x2\tbb_y2\n")
    f.writelines(rows)
  with open(root / "test_images.txt", "w") as f:
    f.write("path\n" + "".join(p + "\n" for p in test))
  return {"root": str(root), "expect": expect, "missing": missing, "corrupt": corrupt}


@pytest.fixture(scope="module")
def birdsnap_synthetic(tmp_path_factory) -> str:
  """Synthetic folders named like a user would: case, '_', '-' and spaces differ."""
  root = tmp_path_factory.mktemp("birdsnap_synthetic")
  rng = np.random.default_rng(1)
  for i, folder in enumerate(["black_footed_albatross", "LAYSAN-albatross", "blue  jay"]):
    for k in range(3):
      _jpeg(root / folder / f"{k}.jpg", _image(rng, 24, 24, i + 1))
  return str(root)


def test_birdsnap_reads_official_layout_and_skips_unavailable(birdsnap_dir, caplog):
  with caplog.at_level(logging.WARNING):
    train, test, names = data.load_real(
      _cfg(name="birdsnap", manual_dir=birdsnap_dir["root"], image_size=10, lazy=True)
    )
  assert names == BIRDSNAP_NAMES  # common names, in species-id order
  for split, role in ((train, "train"), (test, "test")):
    exp = birdsnap_dir["expect"][role]
    assert isinstance(split.images, folders.LazyImages)
    assert split.images.sources == [p for p, _ in exp]
    np.testing.assert_array_equal(split.labels, [c for _, c in exp])
    np.testing.assert_array_equal(np.asarray(split.images), np.stack([_ref(p, 10) for p, _ in exp]))
  assert len(train.labels) == 3 * 6 - 2 and len(test.labels) == 3 * 2
  (warning,) = [r.getMessage() for r in caplog.records if "Birdsnap: skipping" in r.getMessage()]
  assert "skipping 2 of 24" in warning and "1 not downloaded" in warning
  assert "1 not readable" in warning and birdsnap_dir["corrupt"] in warning


def test_birdsnap_synthetic_folders_match_common_names(birdsnap_dir, birdsnap_synthetic):
  _, _, names = birdsnap.load(birdsnap_dir["root"], image_size=8)
  syn = data.load_synthetic(birdsnap_synthetic, names, image_size=8)
  by_folder = {f.split("/")[0]: int(c) for f, c in zip(syn.files, syn.labels, strict=True)}
  assert by_folder == {"black_footed_albatross": 0, "LAYSAN-albatross": 1, "blue  jay": 2}


def test_birdsnap_synthetic_folder_matching_no_species_is_named(birdsnap_dir, tmp_path):
  _, _, names = birdsnap.load(birdsnap_dir["root"], image_size=8)
  _jpeg(tmp_path / "Blue Jay" / "0.jpg", np.zeros((8, 8, 3), np.uint8))
  _jpeg(tmp_path / "Blue Jays" / "0.jpg", np.zeros((8, 8, 3), np.uint8))
  with pytest.raises(DataError, match="'Blue Jays'.*nearest class names 'Blue Jay'"):
    data.load_synthetic(str(tmp_path), names, image_size=8)


def test_birdsnap_errors_say_where_and_how(birdsnap_dir, tmp_path):
  with pytest.raises(ConfigError, match="get_birdsnap.py"):
    birdsnap.load(None, image_size=8)
  with pytest.raises(DataError) as e:
    birdsnap.load(str(tmp_path), image_size=8)
  assert "species.txt" in str(e.value) and "birdsnap.tgz" in str(e.value)
  bad = tmp_path / "bad"
  bad.mkdir()
  for f in ("species.txt", "test_images.txt"):
    (bad / f).write_text(open(os.path.join(birdsnap_dir["root"], f)).read())
  (bad / "images.txt").write_text("url\tmd5\tpath\nx\ty\tz\n")
  with pytest.raises(DataError, match=r"images.txt lacks the column\(s\) \['species_id'\]"):
    birdsnap.load(str(bad), image_size=8)
  # Metadata present, images folder absent.
  (bad / "images.txt").write_text(open(os.path.join(birdsnap_dir["root"], "images.txt")).read())
  with pytest.raises(DataError, match="download/images"):
    birdsnap.load(str(bad), image_size=8)


# ----------------------------------------------------------------------------- FGVC-Aircraft

AIRCRAFT = [  # (variant, family, manufacturer): a '/' in a name, spaces in others
  ("F-16A/B", "F-16", "General Dynamics"),
  ("737-700", "Boeing 737", "Boeing"),
  ("A320", "A320", "Airbus"),
]


@pytest.fixture(scope="module")
def aircraft_dir(tmp_path_factory) -> dict:
  """fgvc-aircraft-2013b in miniature: 3 variants, 2 train + 2 val + 2 test images each, every
  image with a white 20-px banner at the bottom."""
  parent = tmp_path_factory.mktemp("aircraft")
  data_dir = parent / "fgvc-aircraft-2013b" / "data"
  rng = np.random.default_rng(2)
  lists = {s: [] for s in ("train", "val", "test")}
  for c, names in enumerate(AIRCRAFT):
    for s in lists:
      for _ in range(2):
        image_id = f"{rng.integers(10**6, 10**7):07d}"
        arr = _image(rng, 22, 18 + aircraft.BANNER_PX, c)
        arr[-aircraft.BANNER_PX :] = 255
        _jpeg(data_dir / "images" / f"{image_id}.jpg", arr)
        lists[s].append((image_id, names))
  lists["trainval"] = lists["train"] + lists["val"]
  for level_index, (level, classes_file) in enumerate(aircraft.LEVELS.items()):
    with open(data_dir / classes_file, "w") as f:
      f.write("".join(n[level_index] + "\n" for n in AIRCRAFT))
    for s, pairs in lists.items():
      with open(data_dir / f"images_{level}_{s}.txt", "w") as f:
        f.write("".join(f"{i} {n[level_index]}\n" for i, n in pairs))
  return {"parent": str(parent), "data": str(data_dir), "lists": lists}


@pytest.mark.parametrize("level", ["variant", "family", "manufacturer"])
def test_aircraft_reads_levels_and_cuts_the_banner(aircraft_dir, level):
  train, test, names = data.load_real(
    _cfg(name="aircraft", manual_dir=aircraft_dir["parent"], image_size=12, label_level=level)
  )
  li = list(aircraft.LEVELS).index(level)
  assert names == [n[li] for n in AIRCRAFT]
  for split, s in ((train, "trainval"), (test, "test")):
    pairs = aircraft_dir["lists"][s]
    np.testing.assert_array_equal(split.labels, [names.index(n[li]) for _, n in pairs])
    paths = [os.path.join(aircraft_dir["data"], "images", f"{i}.jpg") for i, _ in pairs]
    ref = np.stack([_ref(p, 12, crop_bottom=aircraft.BANNER_PX) for p in paths])
    np.testing.assert_array_equal(split.images, ref)
    # No white banner rows left: every image's bottom row is the dark content.
    assert split.images[:, -1].max() < 250


def test_aircraft_root_may_be_the_archive_folder_and_splits_are_configurable(aircraft_dir):
  inner = os.path.join(aircraft_dir["parent"], "fgvc-aircraft-2013b")
  train, test, _ = aircraft.load(inner, image_size=8, train_split="train", test_split="val")
  assert len(train.labels) == len(test.labels) == 2 * len(AIRCRAFT)
  with pytest.raises(ConfigError, match="label_level"):
    aircraft.load(inner, image_size=8, label_level="model")


def test_aircraft_corrupt_or_missing_data_is_named(aircraft_dir, tmp_path):
  with pytest.raises(DataError, match="fgvc-aircraft-2013b.tar.gz"):
    aircraft.load(str(tmp_path), image_size=8)
  copy = tmp_path / "copy"
  shutil.copytree(aircraft_dir["parent"], copy)
  image_id = aircraft_dir["lists"]["test"][0][0]
  victim = copy / "fgvc-aircraft-2013b" / "data" / "images" / f"{image_id}.jpg"
  victim.write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
  with pytest.raises(DataError, match=f"Cannot read image .*{image_id}.jpg"):
    aircraft.load(str(copy), image_size=8)
  victim.unlink()
  with pytest.raises(DataError, match=f"missing.*{image_id}.jpg"):
    aircraft.load(str(copy), image_size=8)


# ----------------------------------------------------------------------------- CIFAKE


def _cifake_name(n: int, c: int) -> str:
  return f"{n}.jpg" if c == 0 else f"{n} ({c + 1}).jpg"


@pytest.fixture(scope="module")
def cifake_dir(tmp_path_factory) -> dict:
  """CIFAKE in miniature (32x32 JPEGs): per split and source, n_per_class of each class, named
  by the rule: '<n>.jpg' for airplane, '<n> (k).jpg' for class k."""
  root = tmp_path_factory.mktemp("cifake_download") / "cifake"
  rng = np.random.default_rng(3)
  files = {}
  for split, n_per_class in (("train", 4), ("test", 2)):
    for source in cifake.SOURCES:
      entries = []
      for c in range(10):
        for n in range(n_per_class):
          name = _cifake_name(1000 + n, c)
          _jpeg(root / split / source / name, _image(rng, 32, 32, c))
          entries.append((name, c))
      files[(split, source)] = sorted(entries)
  return {"root": str(root), "parent": os.path.dirname(root), "files": files}


@pytest.mark.parametrize(
  "file_name, label",
  [("12.jpg", 0), ("12 (1).jpg", 0), ("12 (2).jpg", 1), ("4999 (10).jpg", 9), ("7 (6).jpg", 5)],
)
def test_cifake_class_from_file_name(file_name, label):
  assert cifake.cifar10_label(f"/x/train/FAKE/{file_name}") == label
  # CIFAR-10's class order, on which the rule's k counts.
  assert cifake.CIFAR10_CLASSES == (
    "airplane automobile bird cat deer dog frog horse ship truck".split()
  )


@pytest.mark.parametrize("file_name", ["12 (11).jpg", "12 (0).jpg", "12(2).jpg", "cat.jpg"])
def test_cifake_bad_file_name_is_named(file_name):
  with pytest.raises(DataError, match=re.escape(file_name)):
    cifake.cifar10_label(file_name)


def test_cifake_tasks_and_sources(cifake_dir):
  # manual_dir may be the folder holding cifake/ (the seed's `unzip -d cifake`).
  train, test, names = data.load_real(
    _cfg(
      name="cifake",
      manual_dir=cifake_dir["parent"],
      image_size=32,
      task="cifar10",
      train_sources=("FAKE",),
      test_sources=("REAL",),
    )
  )
  assert names == cifake.CIFAR10_CLASSES
  for split, key in ((train, ("train", "FAKE")), (test, ("test", "REAL"))):
    entries = cifake_dir["files"][key]
    np.testing.assert_array_equal(split.labels, [c for _, c in entries])
    paths = [os.path.join(cifake_dir["root"], *key, n) for n, _ in entries]
    np.testing.assert_array_equal(split.images, np.stack([_ref(p, 32) for p in paths]))
  train, test, names = cifake.load(
    cifake_dir["root"], image_size=8, task="real_fake", train_sources=("REAL", "FAKE")
  )
  assert names == ["REAL", "FAKE"]
  np.testing.assert_array_equal(np.bincount(train.labels), [40, 40])
  assert train.labels[0] == 0 and train.labels[-1] == 1 and set(test.labels) == {0}
  with pytest.raises(ConfigError, match="train_sources"):
    cifake.load(cifake_dir["root"], image_size=8, train_sources=("SYNTH",))
  with pytest.raises(DataError, match="kaggle datasets download"):
    cifake.load(os.path.dirname(cifake_dir["parent"]), image_size=8)


def test_cifake_fake_images_export_as_a_synthetic_folder(cifake_dir, tmp_path):
  out = str(tmp_path / "syn")
  assert cifake.export_class_folders(cifake_dir["root"], out) == 40
  syn = data.load_synthetic(out, cifake.CIFAR10_CLASSES, image_size=32)
  entries = cifake_dir["files"][("train", "FAKE")]
  got = [(os.path.basename(f), int(c)) for f, c in zip(syn.files, syn.labels, strict=True)]
  assert sorted(got) == sorted(entries)
  assert syn.missing_classes == []


# ----------------------------------------------------------------------------- lazy decoding


def test_lazy_images_index_like_an_array(tmp_path):
  rng = np.random.default_rng(4)
  paths = []
  for i in range(7):
    paths.append(str(tmp_path / f"{i}.png"))
    Image.fromarray(_image(rng, 9 + i, 11, i)).save(paths[-1])
  lazy = folders.LazyImages(paths, 6, num_threads=2)
  eager = np.stack([_ref(p, 6) for p in paths])
  assert lazy.shape == eager.shape and lazy.dtype == eager.dtype and len(lazy) == 7
  for index in (np.array([3, 0, 3, 6]), slice(1, 5), slice(None, None, -2), eager[:, 0, 0, 0] > 60):
    np.testing.assert_array_equal(lazy[index], eager[index])
  np.testing.assert_array_equal(lazy[-1], eager[-1])
  np.testing.assert_array_equal(lazy[:0], eager[:0])
  np.testing.assert_array_equal(lazy.reshape(7, -1), eager.reshape(7, -1))
  sub = lazy.subset(np.array([5, 1]))  # still undecoded, the same rows when decoded
  assert isinstance(sub, folders.LazyImages) and sub.num_threads == 2 and len(sub) == 2
  np.testing.assert_array_equal(sub[::-1], eager[[1, 5]])
  with pytest.raises(IndexError):
    lazy[np.array([7])]


def test_lazy_images_name_a_file_truncated_after_its_header(tmp_path):
  buf = io.BytesIO()
  Image.fromarray(_image(np.random.default_rng(5), 64, 64, 0)).save(buf, format="JPEG")
  path = tmp_path / "cut.jpg"
  path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 3])
  lazy = folders.LazyImages([str(path)], 8)
  with pytest.raises(DataError, match="cut.jpg"):
    lazy[[0]]


def test_large_jpeg_decoded_at_reduced_scale_matches_full_decode(tmp_path):
  # A smooth 256 px photo-like image to 16 px: the DCT-domain downscale (draft) must agree with
  # a full decode and bilinear resize up to rounding and JPEG noise.
  y, x = np.mgrid[0:256, 0:256]
  arr = np.stack([x, y, (x + y) // 2], -1).astype(np.uint8)
  _jpeg(tmp_path / "big.jpg", arr)
  got = folders.read_image(str(tmp_path / "big.jpg"), 16).astype(float)
  assert np.abs(got - _ref(str(tmp_path / "big.jpg"), 16)).max() <= 6


# ----------------------------------------------------------------------------- stored size, resize


def _margins_image() -> np.ndarray:
  """30 wide, 20 high: a blue centred 20 px square between 5 px red margins."""
  arr = np.zeros((20, 30, 3), np.uint8)
  arr[:, :5, 0] = arr[:, 25:, 0] = 255
  arr[:, 5:25, 2] = 255
  return arr


def test_resize_crop_keeps_the_centred_square_and_squash_keeps_the_margins(tmp_path):
  path = str(tmp_path / "wide.png")
  Image.fromarray(_margins_image()).save(path)
  crop = folders.read_image(path, 20)  # the default: shorter side to 20, the centred square
  expected = np.zeros((20, 20, 3), np.uint8)
  expected[..., 2] = 255
  np.testing.assert_array_equal(crop, expected)  # nothing stretched, no red margin left
  squash = folders.read_image(path, 20, resize="squash")
  assert squash[:, 0, 0].min() > 200 and squash[:, -1, 0].min() > 200  # the margins, squeezed
  assert squash[:, 10, 2].min() == 255
  # Taller than wide: the centred square is cut from the middle rows.
  Image.fromarray(_margins_image().transpose(1, 0, 2)).save(path)
  np.testing.assert_array_equal(folders.read_image(path, 20), expected)
  lazy = folders.LazyImages([path, path], 10, resize="squash")
  assert lazy.subset(np.array([1])).resize == "squash"
  np.testing.assert_array_equal(lazy[[1]][0], _ref(path, 10, resize="squash"))
  with pytest.raises(ConfigError, match="data.resize"):
    folders.LazyImages([path], 10, resize="stretch")


def test_decode_options_store_at_decode_size():
  opts = folders.decode_options(_cfg(image_size=16, decode_size=None, decode_threads=3))
  assert opts == {"image_size": 16, "resize": "crop", "num_threads": 3}
  opts = folders.decode_options(_cfg(image_size=16, decode_size=18, resize="squash"))
  assert opts == {"image_size": 18, "resize": "squash", "num_threads": None}
  with pytest.raises(ConfigError, match="data.decode_size=12 is below data.image_size=16"):
    folders.decode_options(_cfg(image_size=16, decode_size=12))
  with pytest.raises(ConfigError, match="data.resize must be one of"):
    folders.decode_options(_cfg(image_size=16, resize="stretch"))


def test_center_crop_matches_torchvision_offsets():
  from syncon_jax.augment import ops

  x = np.arange(2 * 19 * 18 * 3).reshape(2, 19, 18, 3)
  # torchvision CenterCrop: top = int(round((19 - 16) / 2)) = 2, left = int(round(2 / 2)) = 1.
  np.testing.assert_array_equal(ops.center_crop(x, 16), x[:, 2:18, 1:17])
  np.testing.assert_array_equal(ops.center_crop(x[:, :16, :16], 16), x[:, :16, :16])
  with pytest.raises(ValueError, match="16 px from images of 15x18"):
    ops.center_crop(x[:, :15], 16)


def test_features_of_images_stored_larger_are_those_of_the_centre(tmp_path):
  import jax.numpy as jnp
  from flax import nnx

  from syncon_jax import linear_eval

  class Pixels(nnx.Module):  # features = the preprocessed pixels the encoder is shown
    def encode(self, x, train):
      return jnp.reshape(x, (x.shape[0], -1))

  config = _cfg(
    data=_cfg(image_size=16, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25)),
    eval=_cfg(batch_size=4),
  )
  stored = np.random.default_rng(0).integers(0, 256, (5, 18, 18, 3)).astype(np.uint8)
  got = linear_eval.extract_features(Pixels(), stored, config)
  centre = stored[:, 1:17, 1:17].astype(np.float64) / 255.0
  np.testing.assert_allclose(got, ((centre - 0.5) / 0.25).reshape(5, -1), rtol=0, atol=1e-6)


def test_image_folder_source(tmp_path):
  rng = np.random.default_rng(6)
  for split, n in (("train", 3), ("test", 2)):
    for c, cls in enumerate(["cat", "dog"]):
      for k in range(n):
        _jpeg(tmp_path / split / (cls.upper() if split == "test" else cls) / f"{k}.jpg",
              _image(rng, 10, 10, c))  # fmt: skip
  train, test, names = data.load_real(
    _cfg(name="image_folder", manual_dir=str(tmp_path), image_size=5, lazy=True)
  )
  assert names == ["cat", "dog"]  # test folders "CAT"/"DOG" matched by normalised name
  np.testing.assert_array_equal(train.labels, [0, 0, 0, 1, 1, 1])
  np.testing.assert_array_equal(test.labels, [0, 0, 1, 1])
  assert np.asarray(test.images).shape == (4, 5, 5, 3)


# ----------------------------------------------------------------------------- paper configs

PAPER_CONFIGS = ["cifar10", "cifar100", "flowers102", "birdsnap", "aircraft", "cifake"]
# Training images per epoch (facts of the data sets; Birdsnap: 49,829 listed - 2,443 test).
EPOCH_SIZES = {
  "cifar10": 50_000,
  "cifar100": 50_000,
  "flowers102": 2_040,
  "birdsnap": 47_386,
  "aircraft": 6_667,
  "cifake": 50_000,
}
TFDS_CONFIGS = {"cifar10": "cifar10", "cifar100": "cifar100", "flowers102": "oxford_flowers102"}


@pytest.mark.parametrize("name", PAPER_CONFIGS)
def test_paper_config_defaults(name):
  module = importlib.import_module(f"configs.{name}")
  c = module.get_config()
  assert c.batch_size == 1024 and c.optimizer.name == "lars"
  assert c.optimizer.schedule == "cosine" and 0 < c.optimizer.warmup_steps < c.total_steps
  assert c.model.name == "resnet50"
  small = name in ("cifar10", "cifar100", "cifake")
  assert (c.model.stem, c.data.image_size) == (("cifar", 32) if small else ("imagenet", 224))
  assert c.total_steps == math.ceil(c.epochs * EPOCH_SIZES[name] / 1024) and c.epochs >= 100
  assert "synthetic_dir" in c.data and c.eval.labels_per_class == 0
  assert name in (module.__doc__ or "") and "python -m syncon_jax.main" in module.__doc__
  assert "runlocal" in module.__doc__
  local = module.get_config("runlocal")
  assert local.runlocal and local.model.name == "resnet_tiny" and local.total_steps <= 50


@pytest.mark.parametrize(
  "name, number", [("cifar10", "96.0"), ("cifar10", "94.0"), ("cifar100", "76.5"),
                   ("flowers102", "96.1"), ("aircraft", "60.6"), ("birdsnap", "57.2")]
)  # fmt: skip
def test_paper_config_docstrings_carry_published_numbers(name, number):
  assert number in importlib.import_module(f"configs.{name}").__doc__


@pytest.fixture(scope="module")
def paper_data(birdsnap_dir, birdsnap_synthetic, aircraft_dir, cifake_dir) -> dict:
  """Per config: (manual_dir, synthetic_dir, classes, train images, test images)."""
  n = MOCK_CLASSES
  return {
    "cifar10": (None, None, 10, n * MOCK_PER_CLASS["train"], n * MOCK_PER_CLASS["test"]),
    "cifar100": (None, None, 100, n * MOCK_PER_CLASS["train"], n * MOCK_PER_CLASS["test"]),
    "flowers102": (None, None, 102, n * MOCK_PER_CLASS["train"], n * MOCK_PER_CLASS["test"]),
    "birdsnap": (birdsnap_dir["root"], birdsnap_synthetic, 3, 16, 6),
    "aircraft": (aircraft_dir["parent"], None, 3, 12, 6),
    "cifake": (cifake_dir["root"], None, 10, 40, 20),
  }


# Each training run compiles its own step (~10 s of a CI core). A TFDS set (real-only SupCon) and a manual folder set with its synthetic folder (SynCon) train;
# the rest load (every loader has its own tests above), which is what differs between them.
TRAINED_CONFIGS = ["cifar10", "birdsnap"]
PHOTO_CONFIGS = {"flowers102", "birdsnap", "aircraft"}  # the ImageNet stem's 224 px photos


@pytest.mark.parametrize("name", sorted(set(PAPER_CONFIGS) - set(TRAINED_CONFIGS)))
def test_paper_config_loads_its_data(name, paper_data, tfds_mock):
  from syncon_jax import train

  manual_dir, _, num_classes, num_train, _ = paper_data[name]
  config = importlib.import_module(f"configs.{name}").get_config("runlocal,objective=supcon")
  config.data.image_size = 16
  config.data.manual_dir = manual_dir
  with tfds_mock() if name in TFDS_CONFIGS else contextlib.nullcontext():
    real, class_names, synthetic = train.load_data(config, uses_synthetic=False)
  assert len(class_names) == num_classes and synthetic is None
  # Photos are stored at 8/7 of the view (resize 256, crop 224), following the overridden
  # image_size; small images as they are.
  stored = 16 * 8 // 7 if name in PHOTO_CONFIGS else 16
  assert config.data.decode_size == stored
  assert real.images.shape[1:] == (stored, stored, 3) and len(real.labels) == num_train


@pytest.mark.parametrize("name", TRAINED_CONFIGS)
def test_paper_config_trains_two_steps_and_probes(name, paper_data, tfds_mock, tmp_path):
  from syncon_jax import linear_eval, train

  manual_dir, synthetic_dir, num_classes, num_train, num_test = paper_data[name]
  # Birdsnap trains SynCon on its synthetic folder; the others the real-only SupCon.
  variant = "runlocal" + (",objective=syncon" if synthetic_dir else ",objective=supcon")
  config = importlib.import_module(f"configs.{name}").get_config(variant)
  config.total_steps = 2
  config.batch_size = 16
  config.log_every_steps = 1
  config.checkpoint_every_steps = 2
  config.data.image_size = 16
  config.data.manual_dir = manual_dir
  config.data.synthetic_dir = synthetic_dir
  config.eval.batch_size = 32
  workdir = str(tmp_path / name)
  mock = tfds_mock() if name in TFDS_CONFIGS else contextlib.nullcontext()
  with mock:
    train.train_and_evaluate(config, workdir)
    out = linear_eval.evaluate(config, workdir)

  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    rows = [json.loads(line) for line in f]
  assert [r["step"] for r in rows] == [1, 2] and all(math.isfinite(r["loss"]) for r in rows)
  assert out["step"] == 2 and out["num_classes"] == num_classes
  # Every loaded train image is labelled (runlocal: 10 per class >= what the miniature holds).
  assert out["num_labelled"] == num_train and out["num_test"] == num_test
  for key in ("top1", "raw_pixels_top1", "random_encoder_top1"):
    assert 0.0 <= out[key] <= 1.0
  with open(os.path.join(workdir, "linear_eval.json")) as f:
    assert json.load(f) == out
  if synthetic_dir:
    with open(os.path.join(workdir, "synthetic_weights.json")) as f:
      assert list(json.load(f)) == BIRDSNAP_NAMES
