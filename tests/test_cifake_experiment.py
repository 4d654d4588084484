"""The CIFAKE study (syncon_jax/tools/cifake_experiment.py): intervals, the finding rule, the
conditions' images, replicas that learn what their pool teaches, and the command on a
miniature CIFAKE layout."""

import json
import os

import ml_collections
import numpy as np
import pytest
from conftest import run_cli
from PIL import Image

from configs import cifake_study
from syncon_jax.data import cifake
from syncon_jax.data.folders import Split
from syncon_jax.tools import cifake_experiment as study

# Student-t 97.5% quantiles from a printed table (df = 1, 2, 4).
T975 = {1: 12.706, 2: 4.303, 4: 2.776}


def test_interval_is_the_student_t_interval_of_the_mean():
  for values in ([0.9, 0.8], [0.9, 0.8, 0.85], [0.5, 0.6, 0.55, 0.7, 0.65]):
    v = np.asarray(values)
    r = study.interval(values)
    assert r["mean"] == pytest.approx(v.mean()) and r["n"] == len(v)
    want = T975[len(v) - 1] * np.sqrt(np.sum((v - v.mean()) ** 2) / (len(v) - 1) / len(v))
    assert r["ci95"] == pytest.approx(want, rel=1e-3)
  assert study.interval([0.7])["ci95"] == 0.0


def test_finding_needs_disjoint_intervals():
  def rows(real, syn):
    return {"real": {"cnn": study.interval(real)}, "synthetic": {"cnn": study.interval(syn)}}

  assert study.finding(rows([0.9, 0.91, 0.92], [0.5, 0.52, 0.51]), "cnn") == "confirmed"
  assert study.finding(rows([0.5, 0.52, 0.51], [0.9, 0.91, 0.92]), "cnn") == "reversed"
  assert study.finding(rows([0.9, 0.5, 0.7], [0.8, 0.6, 0.7]), "cnn") == "not resolved"


def _split(n, value, label_offset=0):
  images = np.full((n, 4, 4, 3), value, np.uint8)
  return Split(images, (np.arange(n) % 3 + label_offset).astype(np.int32))


def test_conditions_and_detection_sets():
  d = study.StudyData(_split(6, 1), _split(3, 2), _split(4, 3), _split(2, 4), ["a", "b", "c"])
  x, y = d.condition("real")
  assert len(x) == 6 and (x == 1).all()
  x, y = d.condition("synthetic")
  assert len(x) == 4 and (x == 3).all()
  x, y = d.condition("real+synthetic")
  assert len(x) == 10 and (x[:6] == 1).all() and (x[6:] == 3).all()
  np.testing.assert_array_equal(y, np.r_[np.arange(6) % 3, np.arange(4) % 3])
  x, y = d.detection("test")
  np.testing.assert_array_equal(y, [0, 0, 0, 1, 1])
  assert (x[:3] == 2).all() and (x[3:] == 4).all()
  with pytest.raises(Exception, match="study.conditions"):
    d.condition("fake")


def _study_config(**study_keys) -> ml_collections.ConfigDict:
  c = cifake_study.get_config("runlocal")
  c.data.image_size = 8
  c.study.update(study_keys)
  return c


def test_replicas_learn_what_their_pool_teaches():
  """Pool 0's labels follow the image (which quadrant is bright), pool 1's are shuffled: every
  seed's classifier of pool 0 beats every seed's of pool 1 on clean test labels."""
  rng = np.random.default_rng(0)

  def draw(n):
    labels = rng.integers(0, 4, n).astype(np.int32)
    images = rng.integers(0, 40, (n, 8, 8, 3)).astype(np.uint8)
    for i, c in enumerate(labels):
      r, col = divmod(int(c), 2)
      images[i, 4 * r : 4 * r + 4, 4 * col : 4 * col + 4] = 255
    return images, labels

  train_x, train_y = draw(256)
  test = draw(128)
  shuffled = (train_x, rng.permutation(train_y))
  config = _study_config(steps=30, batch_size=32, learning_rate=3e-3)
  acc = study.train_replicas(
    config, config.study.cnn, [(train_x, train_y), shuffled], (0, 1), 4, test
  )
  assert acc.shape == (2, 2)
  assert acc[0].min() > 0.9 and acc[0].min() > acc[1].max() + 0.3, acc


def _cifake_name(n: int, c: int) -> str:
  return f"{n}.jpg" if c == 0 else f"{n} ({c + 1}).jpg"


@pytest.fixture(scope="module")
def mini_cifake(tmp_path_factory) -> str:
  """A CIFAKE layout in miniature: 32 px JPEGs, 4 train and 2 test images per class and source;
  a class is a colour, FAKE images carry a stripe (something for detection to find)."""
  root = tmp_path_factory.mktemp("mini_cifake")
  rng = np.random.default_rng(0)
  for split, per_class in (("train", 4), ("test", 2)):
    for source in cifake.SOURCES:
      folder = root / split / source
      folder.mkdir(parents=True)
      for c in range(10):
        for n in range(per_class):
          img = np.clip(rng.normal(25 * c, 20, (32, 32, 3)), 0, 255).astype(np.uint8)
          if source == "FAKE":
            img[:, 14:18] = 255
          Image.fromarray(img).save(folder / _cifake_name(100 + n, c), quality=95)
  return str(root)


def test_study_command_on_the_cifake_layout(mini_cifake, tmp_path):
  """What the README's CIFAKE command runs, at runlocal size on a miniature layout. The ViT
  alone (it compiles in a fraction of the CNN's time; the CNN trains in the test above), as
  classifier and as SynCon's encoder."""
  out = tmp_path / "study"
  r = run_cli(
    "syncon_jax.tools.cifake_experiment",
    "--config=configs/cifake_study.py:data=cifake,runlocal",
    f"--workdir={out}",
    f"--config.data.manual_dir={mini_cifake}",
    "--config.study.architectures=('vit',)",
    "--config.study.syncon_architectures=('vit',)",
  )
  assert r.returncode == 0, r.stderr[-3000:]
  summary = json.loads((out / "report" / "results.json").read_text())
  assert summary["data"] == "cifake"
  for cond in ("real", "synthetic", "real+synthetic"):
    for arch in ("vit",):
      cell = summary["rows"][cond][arch]
      assert cell["n"] == 2 and all(0.0 <= v <= 1.0 for v in cell["values"])
      assert cell["mean"] == pytest.approx(np.mean(cell["values"]))
  assert set(summary["detection"]) == {"vit"}
  assert 0.0 <= summary["rows"]["syncon_probe"]["vit"]["mean"] <= 1.0
  assert set(summary["finding"].values()) <= {"confirmed", "reversed", "not resolved"}
  # 40 real train images, 20 real test, and CIFAKE's FAKE train images as SynCon's support
  # set, linked into class folders.
  assert "40 real and 40 synthetic train images, 20 real test" in summary["sizes"]
  linked = out / "synthetic" / "train" / "bird"
  assert len(os.listdir(linked)) == 4
  assert os.path.isdir(out / "syncon" / "vit" / "seed0" / "checkpoints" / "4")
  table = (out / "report" / "results.md").read_text()
  assert "| real + synthetic |" in table and "| ViT |" in table
  assert "real-vs-synthetic detection" in table
