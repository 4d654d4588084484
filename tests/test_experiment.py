"""tools/experiment: the AUC of clean over corrupted classes, method names, the report."""

import json
import os

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from configs import digits
from syncon_jax.errors import ConfigError
from syncon_jax.tools import experiment


@pytest.mark.parametrize("seed", range(5))
def test_ranking_auc_equals_the_roc_auc_of_clean_against_corrupted(seed):
  rng = np.random.default_rng(seed)
  # Rounded weights make ties, which both count as half.
  w = {str(c): float(v) for c, v in enumerate(np.round(rng.uniform(size=10), 1))}
  corrupted = ["3", "8", "6"]
  want = roc_auc_score([c not in corrupted for c in w], list(w.values()))
  assert experiment.ranking_auc(w, corrupted) == pytest.approx(want)


def test_ranking_auc_extremes():
  w = {"a": 0.9, "b": 0.8, "c": 0.1}
  assert experiment.ranking_auc(w, ["c"]) == 1.0
  assert experiment.ranking_auc(w, ["a"]) == 0.0
  assert experiment.ranking_auc({"a": 0.5, "b": 0.5}, ["b"]) == 0.5


def test_method_names():
  assert experiment.parse_method("supcon") == ("supcon", None)
  assert experiment.parse_method("syncon-auto") == ("syncon", "auto")
  with pytest.raises(ConfigError, match="name the weighting"):
    experiment.parse_method("syncon")
  with pytest.raises(ConfigError, match="only syncon"):
    experiment.parse_method("byol-auto")


def test_builder_applies_the_variant_and_the_overrides():
  make = experiment.config_builder("configs/digits.py:runlocal", {"model.width": 2})
  c = make("byol", None)
  assert c.objective.name == "byol" and c.model.predictor_hidden_dim > 0  # decided by the file
  assert c.runlocal and c.model.width == 2
  c = make("syncon", "learned")
  assert c.objective.weighting == "learned" and c.model.predictor_hidden_dim == 0


def test_summary_reads_every_run(tmp_path):
  config = digits.get_config()
  config.experiment.methods = ("supcon", "syncon-auto")
  config.experiment.baselines = ("simclr",)
  config.experiment.seeds = (0, 1)
  config.experiment.baseline_seeds = (0,)
  weights = [{str(c): 1.0 for c in range(10)}, {str(c): float(c) / 10 for c in range(10)}]
  for method, seeds in experiment.schedule(config):
    for seed in seeds:
      run = tmp_path / "runs" / method / f"seed{seed}"
      os.makedirs(run)
      recall = {str(c): 1.0 - seed * (c == 3) for c in range(10)}  # seed 1 misses every 3
      recall["9"] = None if seed == 0 else 0.75  # seed 0's test split lacks 9s
      probe = {"top1": 0.9 + seed / 100, "per_class_top1": recall}
      (run / "linear_eval.json").write_text(json.dumps(probe))
      (run / "synthetic_weights.json").write_text(json.dumps(weights[seed]))
  s = experiment.summarise(config, str(tmp_path))
  auto = s["methods"]["syncon-auto"]
  assert auto["top1_summary"]["mean"] == pytest.approx(0.905)
  assert auto["top1_summary"]["std"] == pytest.approx(np.std([0.9, 0.91], ddof=1))
  # Seed 0: all tied (0.5); seed 1: w_c = c / 10 with 3, 6 and 8 corrupted.
  clean = [0, 1, 2, 4, 5, 7, 9]
  by_hand = np.mean([(a > b) for a in clean for b in (3, 6, 8)])
  assert auto["auc"] == pytest.approx([0.5, by_hand])
  assert "auc" not in s["methods"]["supcon"] and s["methods"]["simclr"]["seeds"] == [0]
  md = experiment.markdown(s)
  assert "| syncon-auto | 0.9050 ± 0.0071 |" in md and "| simclr | 0.9000 (seed 0) |" in md
  assert auto["per_class_top1"]["3"] == 0.5 and auto["per_class_top1"]["4"] == 1.0
  assert auto["per_class_top1"]["9"] == 0.75  # the mean over the seeds that have 9s
  assert s["methods"]["simclr"]["per_class_top1"]["3"] == 1.0
  assert "| 3* |" in md and "| 0.500 |" in md


def test_render_audit_sees_swaps_and_noise(tmp_path):
  """The independent critic reads a swap as the digit drawn and recognises clean renders."""
  from syncon_jax.tools import render_digits

  out = str(tmp_path / "syn")
  render_digits.render_dataset(
    out,
    per_class=20,
    seed=0,
    image_size=32,
    prompts_per_class=4,
    corrupt_classes=(2, 7),
    corruption="swap",
  )
  audit = experiment.render_audit(digits.get_config().data, out)
  assert audit["real_test_top1"] > 0.95
  # Swaps file renders of (c + 5) % 10 under c: the critic must see 7 in folder 2, 2 in folder 7.
  assert audit["classes"]["2"]["recognised"] < 0.2 and audit["classes"]["2"]["seen_as"] == "7"
  assert audit["classes"]["7"]["recognised"] < 0.2 and audit["classes"]["7"]["seen_as"] == "2"
  assert audit["classes"]["0"]["recognised"] > 0.8


def test_run_experiment_writes_the_report_and_does_not_retrain(tmp_path):
  """End to end on the runlocal config: render, train, probe, report; a second call reads back."""
  config = digits.get_config("runlocal")
  ec = config.experiment
  ec.methods, ec.seeds, ec.baselines = ("syncon-auto",), (0,), ()
  ec.render_per_class, ec.render_prompts_per_class = 8, 2
  summary = experiment.run_experiment(config, str(tmp_path))

  report = tmp_path / "report"
  assert json.loads((report / "results.json").read_text()) == summary
  auto = summary["methods"]["syncon-auto"]
  assert len(auto["auc"]) == 1 and 0.0 <= auto["auc"][0] <= 1.0
  assert sorted(auto["per_class_top1"]) == [str(c) for c in range(10)]
  assert sorted(summary["render_audit"]["classes"]) == [str(c) for c in range(10)]
  assert "| syncon-auto |" in (report / "results.md").read_text()
  assert (report / "weights.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

  metrics = tmp_path / "runs" / "syncon-auto" / "seed0" / "metrics.jsonl"
  before = metrics.stat().st_mtime_ns
  again = experiment.run_experiment(config, str(tmp_path))
  assert metrics.stat().st_mtime_ns == before  # read back, not trained again
  assert again["methods"] == summary["methods"]
