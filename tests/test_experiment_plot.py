"""The weights figure of tools/experiment: every class named, labels that never overlap."""

import json
import os

import ml_collections
import numpy as np

from syncon_jax.tools import experiment_report


def test_spread_keeps_order_and_gap():
  values = [0.0, 0.0, 0.5, 0.0, 0.52]
  out = experiment_report._spread(values, gap=0.05)
  order = np.argsort(values, kind="stable")
  heights = np.asarray(out)[order]
  assert np.all(np.diff(heights) >= 0.05 - 1e-12)
  assert all(h >= v for h, v in zip(out, values, strict=True))  # labels only move up
  assert out[2] == 0.5  # a label with room stays at its value


def test_corruption_kinds_follow_render_digits():
  c = ml_collections.ConfigDict(
    {"experiment": {"corrupt_classes": ("3", "8", "6"), "corruption": "both"}}
  )
  assert experiment_report.experiment_corruptions(c) == {"3": "swap", "8": "swap", "6": "noise"}


def test_plot_names_every_class(tmp_path, monkeypatch):
  config = ml_collections.ConfigDict(
    {
      "experiment": {
        "corrupt_classes": ("3", "6"),
        "corruption": "both",
        "methods": ("supcon", "syncon-auto", "syncon-learned"),
        "seeds": (0, 1),
      }
    }
  )
  for method in ("syncon-auto", "syncon-learned"):
    for seed in (0, 1):
      run = tmp_path / "runs" / method / f"seed{seed}"
      run.mkdir(parents=True)
      with open(run / "metrics.jsonl", "w") as f:
        for step in (10, 20):
          row = {"step": step, **{f"synthetic_weight/{c}": 0.0 for c in "0123456789"}}
          f.write(json.dumps(row) + "\n")
  labels = []
  import matplotlib.axes

  real = matplotlib.axes.Axes.annotate
  monkeypatch.setattr(
    matplotlib.axes.Axes,
    "annotate",
    lambda self, text, *a, **k: labels.append((text, k["xytext"][1])) or real(self, text, *a, **k),
  )
  path = tmp_path / "w.png"
  experiment_report.plot_weights(config, str(tmp_path), str(path))
  assert os.path.getsize(path) > 0
  assert len(labels) == 20  # 10 classes x 2 schemes, all at weight 0
  names = [t for t, _ in labels[:10]]
  assert names == ["0", "1", "2", "3 (swap)", "4", "5", "6 (noise)", "7", "8", "9"]
  heights = sorted(y for _, y in labels[:10])
  assert min(np.diff(heights)) >= 0.05
