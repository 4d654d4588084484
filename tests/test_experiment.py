"""tools/experiment: the AUC of clean over corrupted classes, method names, the report."""

import copy
import itertools
import json
import os
import re

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from configs import digits
from syncon_jax.errors import ConfigError
from syncon_jax.tools import experiment, experiment_plan, experiment_report


@pytest.mark.parametrize("seed", range(5))
def test_ranking_auc_equals_the_roc_auc_of_clean_against_corrupted(seed):
  rng = np.random.default_rng(seed)
  # Rounded weights make ties, which both count as half.
  w = {str(c): float(v) for c, v in enumerate(np.round(rng.uniform(size=10), 1))}
  corrupted = ["3", "8", "6"]
  want = roc_auc_score([c not in corrupted for c in w], list(w.values()))
  assert experiment_report.ranking_auc(w, corrupted) == pytest.approx(want)


def test_ranking_auc_extremes():
  w = {"a": 0.9, "b": 0.8, "c": 0.1}
  assert experiment_report.ranking_auc(w, ["c"]) == 1.0
  assert experiment_report.ranking_auc(w, ["a"]) == 0.0
  assert experiment_report.ranking_auc({"a": 0.5, "b": 0.5}, ["b"]) == 0.5


def test_method_names():
  assert experiment_plan.parse_method("supcon") == ("supcon", None)
  assert experiment_plan.parse_method("syncon-auto") == ("syncon", "auto")
  with pytest.raises(ConfigError, match="name the weighting"):
    experiment_plan.parse_method("syncon")
  with pytest.raises(ConfigError, match="only syncon"):
    experiment_plan.parse_method("byol-auto")


def test_builder_applies_the_variant_and_the_overrides():
  make = experiment_plan.config_builder(
    "configs/digits.py:runlocal", {"model.width": 2, "objective.syncon.meta_every": 3}
  )
  c = make("byol", None)
  assert c.objective.name == "byol" and c.model.predictor_hidden_dim > 0  # decided by the file
  assert c.runlocal and c.model.width == 2 and "syncon" not in c.objective
  c = make("syncon", "learned")
  assert c.objective.syncon.weighting == "learned" and c.model.predictor_hidden_dim == 0
  assert c.objective.syncon.meta_every == 3


def test_summary_reads_every_run(tmp_path):
  config = digits.get_config()
  config.experiment.methods = ("supcon", "syncon-auto")
  config.experiment.baselines = ("simclr",)
  config.experiment.seeds = (0, 1)
  config.experiment.baseline_seeds = (0,)
  weights = [{str(c): 1.0 for c in range(10)}, {str(c): float(c) / 10 for c in range(10)}]
  for method, seeds in experiment_plan.schedule(config):
    for seed in seeds:
      run = tmp_path / "runs" / method / f"seed{seed}"
      os.makedirs(run)
      recall = {str(c): 1.0 - seed * (c == 3) for c in range(10)}  # seed 1 misses every 3
      recall["9"] = None if seed == 0 else 0.75  # seed 0's test split lacks 9s
      probe = {"top1": 0.9 + seed / 100, "per_class_top1": recall}
      (run / "linear_eval.json").write_text(json.dumps(probe))
      (run / "synthetic_weights.json").write_text(json.dumps(weights[seed]))
  s = experiment_report.summarise(config, str(tmp_path))
  auto = s["methods"]["syncon-auto"]
  assert auto["top1_summary"]["mean"] == pytest.approx(0.905)
  assert auto["top1_summary"]["std"] == pytest.approx(np.std([0.9, 0.91], ddof=1))
  # Seed 0: all tied (0.5); seed 1: w_c = c / 10 with 3, 6 and 8 corrupted.
  clean = [0, 1, 2, 4, 5, 7, 9]
  by_hand = np.mean([(a > b) for a in clean for b in (3, 6, 8)])
  assert auto["auc"] == pytest.approx([0.5, by_hand])
  assert "auc" not in s["methods"]["supcon"] and s["methods"]["simclr"]["seeds"] == [0]
  md = experiment_report.markdown(s)
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
  audit = experiment_report.render_audit(digits.get_config().data, out)
  assert audit["real_test_top1"] > 0.95
  # Swaps file renders of (c + 5) % 10 under c: the critic must see 7 in folder 2, 2 in folder 7.
  assert audit["classes"]["2"]["recognised"] < 0.2 and audit["classes"]["2"]["seen_as"] == "7"
  assert audit["classes"]["7"]["recognised"] < 0.2 and audit["classes"]["7"]["seen_as"] == "2"
  assert audit["classes"]["0"]["recognised"] > 0.8


def test_run_experiment_writes_the_report_and_does_not_retrain(tmp_path, monkeypatch):
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

  # Read back, not trained or probed again: either would now fail the call.
  def retrained(*args, **kwargs):
    raise AssertionError(f"trained or probed again: {args}")

  monkeypatch.setattr(experiment.train, "train_and_evaluate", retrained)
  monkeypatch.setattr(experiment.linear_eval, "evaluate", retrained)
  again = experiment.run_experiment(config, str(tmp_path))
  assert again["methods"] == summary["methods"]


# ----------------------------------------------------------------------------- few-shot additions


def test_synthetic_sets_and_denominators_in_method_names():
  assert experiment_plan.split_method("supcon_syn@clean") == ("supcon_syn", "clean")
  assert experiment_plan.split_method("syncon-auto") == ("syncon-auto", "corrupted")
  assert experiment_plan.parse_method("supcon_syn@without-3") == ("supcon_syn", None)
  assert experiment_plan.parse_method("syncon-fixed+weighted@oracle") == ("syncon", "fixed")
  assert experiment_plan.method_denominator("syncon-fixed+weighted") == "weighted"
  assert experiment_plan.method_denominator("syncon-fixed") is None
  with pytest.raises(ConfigError, match="after '@'"):
    experiment_plan.split_method("supcon_syn@dirty")
  with pytest.raises(ConfigError, match="denominator form"):
    experiment_plan.method_denominator("syncon-fixed+own")
  config = digits.get_config("fewshot")
  make = experiment_plan._edit_config(config)
  c = experiment_plan.method_config(make, config, "syncon-fixed+weighted@oracle", 2, "/s/syn")
  assert c.objective.syncon.synthetic_denominator == "weighted" and c.seed == 2
  assert c.data.synthetic_dir == "/s/syn@oracle"
  assert list(c.data.removed_classes) == [str(x) for x in config.experiment.corrupt_classes]
  c = experiment_plan.method_config(make, config, "supcon_syn@clean", 0, "/s/syn")
  assert c.data.corrupt_classes == () and c.data.removed_classes == ()


def test_removal_sets_hold_the_corrupted_renders_minus_the_removed_folders(tmp_path):
  from syncon_jax.data import folders

  config = digits.get_config("fewshot")
  ec = config.experiment
  ec.render_per_class, ec.render_prompts_per_class, ec.render_image_size = 3, 1, 8
  out = str(tmp_path / "syn")
  experiment.make_synthetic_sets(config, out, ["corrupted", "oracle", "without-2", "clean"])
  names = [str(c) for c in range(10)]
  full = folders.load_synthetic(out, names, image_size=8)
  oracle = folders.load_synthetic(out + "@oracle", names, image_size=8)
  bad = {names.index(c) for c in ec.corrupt_classes}
  keep = ~np.isin(full.labels, list(bad))
  np.testing.assert_array_equal(oracle.labels, full.labels[keep])
  np.testing.assert_array_equal(oracle.images, full.images[keep])
  without2 = folders.load_synthetic(out + "@without-2", names, image_size=8)
  assert 2 not in without2.labels and len(without2.labels) == len(full.labels) - 3
  clean = folders.load_synthetic(out + "@clean", names, image_size=8)
  swapped = names.index(ec.corrupt_classes[0])
  differs = lambda a, b, c: not np.array_equal(a.images[a.labels == c], b.images[b.labels == c])
  assert differs(clean, full, swapped) and not differs(clean, full, 0)


def test_t_interval_paired_difference_and_spearman():
  from scipy import stats

  v = [0.70, 0.74, 0.71, 0.78, 0.73]
  ci = experiment_report.t_interval(v)
  lo, hi = stats.t.interval(0.95, 4, loc=np.mean(v), scale=stats.sem(v))
  assert ci["lo"] == pytest.approx(lo) and ci["hi"] == pytest.approx(hi) and ci["n"] == 5
  assert experiment_report.t_interval([0.5])["half"] is None
  d = experiment_report.paired_difference(
    {0: 0.8, 1: 0.9, 2: 0.7}, {0: 0.7, 1: 0.85, 2: 0.7, 3: 0.1}
  )
  assert d["seeds"] == [0, 1, 2] and d["mean"] == pytest.approx(0.05)
  assert experiment_report.spearman([1, 2, 3, 4], [10, 30, 20, 40]) == pytest.approx(0.8)
  assert experiment_report.spearman([1, 1, 1], [1, 2, 3]) is None


def test_fewshot_summary_utility_paired_and_rho(tmp_path):
  """Fake runs: class c's removal changes pool top-1 by a known amount on every seed."""
  config = digits.get_config("fewshot")
  ec = config.experiment
  ec.methods = ("supcon", "supcon_syn", "syncon-fixed")
  ec.seeds = (0, 1, 2)
  names = list(ec.class_names)
  # U_c = +2 points for 0..4, -3 points for 5..7, ~0 (noise) for 8, 9.
  true_u = {n: (0.02 if int(n) < 5 else -0.03 if int(n) < 8 else 0.0) for n in names}
  jitter = {0: -0.004, 1: 0.0, 2: 0.004}
  base_pool = {0: 0.80, 1: 0.82, 2: 0.78}
  pools = {"supcon": {s: base_pool[s] - 0.05 for s in ec.seeds},
           "supcon_syn": base_pool, "syncon-fixed": {s: base_pool[s] + 0.01 for s in ec.seeds}}  # fmt: skip
  for n in names:
    pools[f"supcon_syn@without-{n}"] = {
      s: base_pool[s] - true_u[n] + (jitter[s] if int(n) >= 8 else 0.0) for s in ec.seeds
    }
  weights = {n: 1.0 - 0.1 * int(n) for n in names}  # ranks 0..9 as U does, ties aside
  for method, seeds in experiment_plan.schedule(config):
    for s in seeds:
      run = tmp_path / "runs" / method / f"seed{s}"
      os.makedirs(run)
      recall = {n: 1.0 for n in names}
      probe = {"top1": pools[method][s] - 0.01, "pool_top1": pools[method][s],
               "per_class_top1": recall}  # fmt: skip
      (run / "linear_eval.json").write_text(json.dumps(probe))
      (run / "synthetic_weights.json").write_text(json.dumps(weights))
  summary = experiment_report.summarise(config, str(tmp_path))
  u = summary["utility"]
  assert u["0"]["verdict"] == "helpful" and u["0"]["mean"] == pytest.approx(0.02)
  assert u["6"]["verdict"] == "harmful" and u["6"]["mean"] == pytest.approx(-0.03)
  assert u["9"]["verdict"] == "neutral"
  fixed = summary["methods"]["syncon-fixed"]
  assert fixed["separates_u"] == [True] * 3 and fixed["auc_u"] == [1.0] * 3
  rho = experiment_report.spearman([weights[n] for n in names], [true_u[n] for n in names])
  assert fixed["spearman_w_u"][0] == pytest.approx(rho)
  paired = fixed["paired"]["supcon"]
  assert paired["pool"]["mean"] == pytest.approx(0.06) and paired["pool"]["half"] < 1e-9
  assert paired["test"]["mean"] == pytest.approx(0.06)
  md = experiment_report.markdown(summary)
  assert f"| 6 | {config.experiment.corruption} | -3.0 ± 0.0 | harmful |" in md
  assert "@without-" not in md
  assert "| syncon-fixed | 80.0 ± " in md
  # Every table keeps one column count, also with no paired references (a lone method).
  lone = copy.deepcopy(summary)
  for e in lone["methods"].values():
    e.pop("paired", None)
  for text in (md, "\n".join(experiment_report.markdown_fewshot(lone))):
    for block in re.split(r"\n(?!\|)", text):
      rows = [r for r in block.split("\n") if r.startswith("|")]
      assert len({r.count("|") for r in rows}) <= 1, rows


def test_finished_runs_are_keyed_by_their_settings(tmp_path, monkeypatch):
  """A finished run is read back only for the config it was trained with."""
  calls = []

  def fake_train(config, workdir):
    os.makedirs(workdir, exist_ok=True)
    (tmp_path / "x").write_text("")
    with open(os.path.join(workdir, "config.json"), "w") as f:
      f.write(config.to_json())
    calls.append(tuple(config.data.corrupt_classes))

  def fake_eval(config, workdir, step=None):
    out = {"top1": 0.5, "step": config.total_steps, "per_class_top1": {}, "pool_top1": 0.5}
    with open(os.path.join(workdir, "linear_eval.json"), "w") as f:
      json.dump(out, f)
    return out

  monkeypatch.setattr(experiment.train, "train_and_evaluate", fake_train)
  monkeypatch.setattr(experiment.linear_eval, "evaluate", fake_eval)
  config = digits.get_config("fewshot")
  make = experiment_plan._edit_config(config)
  workdir = str(tmp_path / "run")
  experiment.run_one(experiment_plan.method_config(make, config, "syncon-fixed", 0, "/s"), workdir)
  experiment.run_one(experiment_plan.method_config(make, config, "syncon-fixed", 0, "/s"), workdir)
  assert len(calls) == 1  # the same settings: read back
  config.experiment.corrupt_classes = ("2",)
  experiment.run_one(experiment_plan.method_config(make, config, "syncon-fixed", 0, "/s"), workdir)
  assert calls == [digits.FEWSHOT_CORRUPT, ("2",)]  # new labels: trained again
  config.experiment.seeds = (7, 8)  # the experiment section is not a run setting
  experiment.run_one(experiment_plan.method_config(make, config, "syncon-fixed", 0, "/s"), workdir)
  assert len(calls) == 2


def test_the_denominator_form_is_a_setting_of_syncon_runs_only():
  config = digits.get_config("fewshot")
  make = experiment_plan._edit_config(config)
  # A baseline's config has no SynCon block, so SynCon's settings never retrain it.
  a = json.loads(experiment_plan.method_config(make, config, "supcon_syn", 0, "/s").to_json())
  assert sorted(a["objective"]) == [
    "base_temperature",
    "block_size",
    "n_views",
    "name",
    "temperature",
  ]
  c = json.loads(experiment_plan.method_config(make, config, "syncon-auto+all", 0, "/s").to_json())
  d = json.loads(
    experiment_plan.method_config(make, config, "syncon-auto+weighted", 0, "/s").to_json()
  )
  assert c["objective"]["syncon"]["synthetic_denominator"] == "all"
  assert experiment_plan._run_settings(c) != experiment_plan._run_settings(d)


def test_a_run_written_before_the_objective_blocks_is_trained_again(tmp_path):
  config = digits.get_config("weighting=meta")
  old = json.loads(config.to_json())
  old["objective"].update(old["objective"].pop("syncon"))  # the flat layout
  (tmp_path / "config.json").write_text(json.dumps(old))
  assert not experiment_plan.is_same_run(config, str(tmp_path))
  (tmp_path / "config.json").write_text(config.to_json())
  assert experiment_plan.is_same_run(config, str(tmp_path))
  # A baseline has no block either way: its older runs still count.
  supcon = digits.get_config("objective=supcon")
  old = json.loads(supcon.to_json())
  old["objective"]["weighting"] = "auto"  # the flat layout's unread SynCon keys
  (tmp_path / "config.json").write_text(json.dumps(old))
  assert experiment_plan.is_same_run(supcon, str(tmp_path))


def test_keys_added_by_later_code_do_not_retrain():
  old = {"seed": 0, "objective": {"name": "syncon", "temperature": 0.1}}
  new = {"seed": 0, "objective": {"name": "syncon", "temperature": 0.1, "meta_every": 5}}
  assert experiment_plan._same_settings(old, new)
  new["objective"]["temperature"] = 0.2
  assert not experiment_plan._same_settings(old, new)


def test_progress_formats_given_durations_with_the_trainers_eta():
  """Pure formatting of durations passed in (no clock is read): the experiment's progress, the
  trainers' log and the generation tool share syncon_jax.progress."""
  from syncon_jax import progress

  assert experiment.run_progress(30.0, 0, 10) == "elapsed 30s, ETA ?"
  # 3 runs in 6 min: 2 min a run, 7 runs left.
  assert experiment.run_progress(360.0, 3, 10) == "elapsed 6.0 min, ETA 14.0 min"
  assert experiment.run_progress(600.0, 10, 10) == "elapsed 10.0 min, ETA 0s"
  assert [progress.duration(s) for s in (99.0, 100.0, 5999.0, 9000.0)] == [
    "99s",
    "1.7 min",
    "100.0 min",
    "2.5 h",
  ]
  assert (progress.eta(6, 2.0), progress.eta(6, 0.0)) == ("3s", "?")


def _ranks(x):
  return np.argsort(np.argsort(x)).astype(np.float64)


def _np_spearman(x, y):
  """Spearman's rho for data without ties: Pearson's r of the ranks."""
  return float(np.corrcoef(_ranks(x), _ranks(y))[0, 1])


def test_utility_reliability_is_the_split_half_agreement_of_u():
  rng = np.random.default_rng(3)
  names = [str(c) for c in range(6)]
  effect = np.array([0.0, 1.0, 2.0, 3.0, -4.0, -5.0])
  u = effect[:, None] + 2.0 * rng.normal(size=(6, 6))  # [class, seed]
  utility = {n: {"per_seed": dict(enumerate(u[i]))} for i, n in enumerate(names)}
  got = experiment_report.utility_reliability(utility, ["4", "5"])
  # Every split of the 6 seeds into 3 + 3, both orders, by brute force.
  rhos = []
  clean_rhos = []
  for a in itertools.combinations(range(6), 3):
    b = [s for s in range(6) if s not in a]
    rhos.append(_np_spearman(u[:, list(a)].mean(1), u[:, b].mean(1)))
    clean_rhos.append(_np_spearman(u[:4, list(a)].mean(1), u[:4, b].mean(1)))
  assert got["split_half"] == pytest.approx(np.mean(rhos))
  assert got["clean_split_half"] == pytest.approx(np.mean(clean_rhos))
  r = np.mean(rhos)
  assert got["reliability"] == pytest.approx(2 * r / (1 + r))
  # rho with ties (the nominal labels 1, 1, 1, 1, 0, 0): Pearson's r of their average ranks.
  tied = np.array([3.5, 3.5, 3.5, 3.5, 1.5, 1.5])
  assert got["nominal_rho"] == pytest.approx(np.corrcoef(tied, _ranks(u.mean(1)))[0, 1])
  # Noise-free class effects: U agrees with itself exactly.
  exact = {n: {"per_seed": dict.fromkeys(range(4), effect[i])} for i, n in enumerate(names)}
  assert experiment_report.utility_reliability(exact, ["4", "5"])["split_half"] == pytest.approx(1)
  short = {n: {"per_seed": {0: 1.0, 1: 2.0, 2: 0.0}} for n in names}
  assert experiment_report.utility_reliability(short, ["4"])["split_half"] is None
