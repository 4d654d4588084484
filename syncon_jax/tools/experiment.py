r"""The headline experiment: can the synthetic weights find the bad synthetic classes?

  python -m syncon_jax.tools.experiment --config=configs/digits.py --workdir=runs/experiment

(what `make experiment` runs). It
1. renders the synthetic digits into <workdir>/synthetic_digits, corrupting
   config.experiment.corrupt_classes with config.experiment.corruption (swap, noise or both);
2. trains every method of config.experiment.methods ("objective" or "syncon-<weighting>") for
   every seed of config.experiment.seeds, and the other baselines (config.experiment.baselines)
   for config.experiment.baseline_seeds, each in <workdir>/runs/<method>/seed<k> (a finished run
   is not trained again; an interrupted one resumes), and runs the few-label linear probe;
3. writes <workdir>/report/: results.json and results.md (probe top-1 mean ± std per method; per
   weighting scheme the AUC of clean classes ranked above corrupted ones by the final weights;
   the probe's recall on each real test class; and a render audit, what an independent critic
   trained on the real pixels takes each synthetic class for) and weights.png (every class's
   weight over training, corrupted classes highlighted).

The few-shot experiment (`--config=configs/digits.py:fewshot`, README "Few-shot: does SynCon
pay?") adds, by the same tool:
- synthetic sets per method, named after '@': "supcon_syn@clean" (renders without corruption),
  "supcon_syn@oracle" (the corrupted classes' folders removed), "supcon_syn@without-3" (class 3's
  folder removed); no '@' is the corrupted set;
- utility, the ground truth of which synthetic classes are bad (config.experiment.utility): for
  every class c, U_c = pool top-1 of `utility_method` minus that of `utility_method@without-c`,
  paired over seeds with a 95% t-interval; c is harmful when the interval lies below 0;
- per method: test and pool top-1 as mean ± 95% t-interval, the paired per-seed difference
  against each of config.experiment.paired_references, and for the weighting schemes the AUC
  against the nominal labels and against U, and Spearman's rho between the weights and U.
A finished run is reused only if its config.json matches the run's config now (other settings,
such as another corrupted-class list, retrain it).
"""

import copy
import importlib.util
import json
import os
import shutil
from collections.abc import Callable, Sequence

import numpy as np
from absl import app, flags, logging
from ml_collections import config_flags

from syncon_jax import data, linear_eval, losses, metrics, train
from syncon_jax.data import folders
from syncon_jax.errors import ConfigError, exit_on_user_error
from syncon_jax.tools import render_digits


def split_method(method: str) -> tuple[str, str]:
  """'supcon_syn@clean' -> ('supcon_syn', 'clean'); no '@' -> (method, 'corrupted'). A
  '+<form>' suffix on the base ('syncon-fixed+weighted') sets objective.synthetic_denominator.

  The synthetic sets: 'corrupted' (the experiment's renders), 'clean' (rendered without
  corruption), 'oracle' (the corrupted classes' folders removed), 'without-<class>' (that class's
  folder removed).
  """
  base, at, synthetic_set = method.partition("@")
  if not at:
    return method, "corrupted"
  if synthetic_set not in ("clean", "oracle", "corrupted") and not (
    synthetic_set.startswith("without-") and len(synthetic_set) > len("without-")
  ):
    raise ConfigError(
      f"experiment method {method!r}: the synthetic set after '@' must be clean, oracle, "
      "corrupted or without-<class>"
    )
  return base, synthetic_set


def method_denominator(method: str) -> str | None:
  """'syncon-fixed+weighted' -> 'weighted'; None without a '+' (the config's form)."""
  base, plus, form = split_method(method)[0].partition("+")
  if not plus:
    return None
  if parse_method(method)[0] != "syncon" or form not in losses.SYNTHETIC_DENOMINATORS:
    raise ConfigError(
      f"experiment method {method!r}: '+' takes a denominator form of syncon, one of "
      f"{list(losses.SYNTHETIC_DENOMINATORS)}"
    )
  return form


def parse_method(method: str) -> tuple[str, str | None]:
  """'supcon' -> ('supcon', None); 'syncon-auto' -> ('syncon', 'auto'); '@<set>' and
  '+<denominator>' are ignored."""
  objective, _, weighting = split_method(method)[0].partition("+")[0].partition("-")
  if objective == "syncon" and not weighting:
    raise ConfigError(f"experiment method {method!r}: name the weighting, e.g. 'syncon-auto'")
  if weighting and objective != "syncon":
    raise ConfigError(f"experiment method {method!r}: only syncon takes a weighting")
  return objective, weighting or None


def config_builder(config_file: str, overrides: dict) -> Callable:
  """-> make(objective, weighting): the config file's get_config with those variants, then the
  command line's --config.* overrides.

  Built from the file rather than by editing one ConfigDict, because a config decides some keys
  from the objective (BYOL's predictor, MoCo's temperature).
  """
  path, _, arg = config_file.partition(":")
  spec = importlib.util.spec_from_file_location("experiment_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)

  def make(objective: str, weighting: str | None):
    variant = ",".join(filter(None, [arg, f"objective={objective}"]))
    if weighting is not None:
      variant += f",weighting={weighting}"
    c = module.get_config(variant)
    for key, value in overrides.items():
      *sections, name = key.split(".")
      node = c
      for section in sections:
        node = node[section]
      node[name] = value
    return c

  return make


def _edit_config(config) -> Callable:
  """make(objective, weighting) that edits a copy of `config` (for configs built in code)."""

  def make(objective: str, weighting: str | None):
    c = copy.deepcopy(config)
    c.objective.name = objective
    if weighting is not None:
      c.objective.weighting = weighting
    return c

  return make


def method_config(make, config, method: str, seed: int, synthetic_dir: str):
  """The run config of one (method, seed), with the experiment's synthetic set and seed.

  synthetic_dir: the corrupted renders' folder; a method's '@<set>' picks a sibling set
  (synthetic_set_dir). The config records the set (data.corrupt_classes, data.removed_classes),
  so a finished run is reused only for the data it was trained on (run_one).
  """
  c = make(*parse_method(method))
  c.seed = int(seed)
  if method_denominator(method) is not None:
    c.objective.synthetic_denominator = method_denominator(method)
  synthetic_set = split_method(method)[1]
  c.data.synthetic_dir = synthetic_set_dir(synthetic_dir, synthetic_set)
  clean = synthetic_set == "clean"
  c.data.corrupt_classes = () if clean else tuple(config.experiment.corrupt_classes)
  c.data.corruption = config.experiment.corruption
  c.data.removed_classes = tuple(removed_classes(config, synthetic_set))
  return c


def removed_classes(config, synthetic_set: str) -> list[str]:
  """The class folders a synthetic set leaves out."""
  if synthetic_set == "oracle":
    return [str(c) for c in config.experiment.corrupt_classes]
  if synthetic_set.startswith("without-"):
    return [synthetic_set[len("without-") :]]
  return []


def synthetic_set_dir(synthetic_dir: str, synthetic_set: str) -> str:
  """Where a synthetic set lives: the corrupted renders at synthetic_dir, the others beside it."""
  if synthetic_set == "corrupted":
    return synthetic_dir
  return f"{synthetic_dir}@{synthetic_set}"


RENDER_STAMP = ".experiment_set.json"  # what a synthetic set was made from (a dot: not a class)


def _stamped(out: str, stamp: dict) -> bool:
  path = os.path.join(out, RENDER_STAMP)
  if not os.path.exists(path):
    return False
  with open(path) as f:
    return json.load(f) == stamp


def _write_stamp(out: str, stamp: dict) -> None:
  with open(os.path.join(out, RENDER_STAMP), "w") as f:
    json.dump(stamp, f)


def make_synthetic_sets(config, synthetic_dir: str, sets: Sequence[str]) -> None:
  """Renders the corrupted set into synthetic_dir and builds the other sets `sets` beside it:
  'clean' is rendered (same seed, no corruption); a removal set links every other class folder
  of the corrupted set (and its metadata.jsonl), so it holds the same images minus the removed
  folders. A set already made from the same settings is kept as it is (so that a second
  experiment process on the same root never rewrites a set a run is reading)."""
  ec = config.experiment

  def render(out, corrupt):
    stamp = {
      "per_class": ec.render_per_class,
      "seed": ec.render_seed,
      "image_size": ec.render_image_size,
      "prompts_per_class": ec.render_prompts_per_class,
      "corrupt_classes": [str(c) for c in corrupt],
      "corruption": ec.corruption,
    }
    if _stamped(out, stamp):
      return stamp
    render_digits.render_dataset(
      out,
      per_class=ec.render_per_class,
      seed=ec.render_seed,
      image_size=ec.render_image_size,
      prompts_per_class=ec.render_prompts_per_class,
      corrupt_classes=tuple(corrupt),
      corruption=ec.corruption,
    )
    _write_stamp(out, stamp)
    return stamp

  source = render(synthetic_dir, ec.corrupt_classes)
  names = sorted(
    e.name for e in os.scandir(synthetic_dir) if e.is_dir() and not e.name.startswith(".")
  )
  for synthetic_set in sorted(set(sets) - {"corrupted"}):
    out = synthetic_set_dir(synthetic_dir, synthetic_set)
    if synthetic_set == "clean":
      render(out, ())
      continue
    removed = removed_classes(config, synthetic_set)
    unknown = sorted(set(removed) - set(names))
    if unknown:
      raise ConfigError(f"experiment: no synthetic class folder {unknown} to remove ({names})")
    stamp = {"source": source, "removed": removed}
    if _stamped(out, stamp):
      continue
    if os.path.lexists(out):
      shutil.rmtree(out)
    os.makedirs(out)
    for entry in [*(n for n in names if n not in removed), folders.METADATA_FILE]:
      os.symlink(os.path.abspath(os.path.join(synthetic_dir, entry)), os.path.join(out, entry))
    _write_stamp(out, stamp)


def ranking_auc(weights: dict[str, float], corrupted: Sequence[str]) -> float:
  """P(a clean class's weight > a corrupted class's weight), ties counting half.

  1.0: every corrupted class below every clean one; 0.5: no better than chance.
  """
  bad = [weights[c] for c in corrupted]
  clean = [w for c, w in weights.items() if c not in set(corrupted)]
  if not bad or not clean:
    raise ValueError("the AUC needs at least one clean and one corrupted class")
  pairs = [(a > b) + 0.5 * (a == b) for a in clean for b in bad]
  return float(np.mean(pairs))


def weight_history(workdir: str) -> tuple[list[int], dict[str, list[float]]]:
  """Steps and per-class weights logged in <workdir>/metrics.jsonl."""
  steps, history = [], {}
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    for line in f:
      row = json.loads(line)
      weights = {k.split("/", 1)[1]: v for k, v in row.items() if k.startswith("synthetic_weight/")}
      if not weights:
        continue
      steps.append(row["step"])
      for name, w in weights.items():
        history.setdefault(name, []).append(w)
  return steps, history


def schedule(config) -> list[tuple[str, tuple[int, ...]]]:
  """[(method, seeds)]: the weighting study's methods over experiment.seeds, the utility runs
  (utility_method@without-<class> for every class) over experiment.utility_seeds (empty: the
  same seeds), then the other baselines over experiment.baseline_seeds."""
  ec = config.experiment
  plan = [(m, tuple(ec.seeds)) for m in ec.methods]
  utility_seeds = ec.get("utility_seeds") or ec.seeds
  plan += [(m, tuple(utility_seeds)) for m in utility_methods(config)]
  return plan + [(m, tuple(ec.baseline_seeds)) for m in ec.baselines]


def utility_methods(config) -> list[str]:
  """The runs that measure utility: utility_method without each class's synthetic folder."""
  ec = config.experiment
  if not ec.get("utility"):
    return []
  if ec.utility_method not in ec.methods:
    raise ConfigError(
      f"experiment.utility_method {ec.utility_method!r} must be one of experiment.methods"
    )
  return [f"{ec.utility_method}@without-{name}" for name in ec.class_names]


def _run_settings(config_dict: dict) -> dict:
  """The settings that make a run what it is: the whole config but the experiment section
  (which lists the other runs), the intervals of logs and checkpoints, and keys that the run's
  objective does not read."""
  out = {k: v for k, v in config_dict.items() if k != "experiment"}
  for key in ("log_every_steps", "checkpoint_every_steps", "keep_checkpoints"):
    out.pop(key, None)
  objective = dict(out.get("objective", {}))
  if objective.get("name") != "syncon":
    # Only SynCon reads the denominator form: another objective's run is the same run under
    # either (so changing the default does not retrain the baselines).
    objective.pop("synthetic_denominator", None)
  out["objective"] = objective
  return out


def _same_settings(old, new) -> bool:
  """old == new, but a key only one side has is skipped: a config written by an older version of
  the code lacks the keys added since (which that code could not read)."""
  if isinstance(old, dict) and isinstance(new, dict):
    return all(_same_settings(old[k], new[k]) for k in set(old) & set(new))
  return old == new


def is_same_run(config, workdir: str) -> bool:
  """Whether <workdir>/config.json was written for this config (settings that matter)."""
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    return False
  with open(path) as f:
    old = json.load(f)
  return _same_settings(_run_settings(old), _run_settings(json.loads(config.to_json())))


def run_one(config, workdir: str) -> dict:
  """Trains (or resumes) one run and probes it. A finished, probed run is read back as it is; a
  finished run whose probe predates a field of linear_eval.json is probed again, not retrained.
  A workdir written for other settings (another corrupted-class list, say) is deleted and the
  run trained afresh: its weights would otherwise be scored against the new labels."""
  if os.path.isdir(workdir) and not is_same_run(config, workdir):
    logging.info("%s: written for other settings; training it again.", workdir)
    shutil.rmtree(workdir)
  path = os.path.join(workdir, "linear_eval.json")
  if os.path.exists(path):
    with open(path) as f:
      done = json.load(f)
    if done.get("step") == config.total_steps:
      pool_wanted = bool(config.data.get("real_per_class"))
      if "per_class_top1" in done and (not pool_wanted or "pool_top1" in done):
        logging.info("%s: already trained and probed.", workdir)
        return done
      return linear_eval.evaluate(config, workdir, step=config.total_steps)
  train.train_and_evaluate(config, workdir)
  return linear_eval.evaluate(config, workdir)


def _mean_std(values: Sequence[float]) -> dict:
  v = np.asarray(values, np.float64)
  return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0}


def t_interval(values: Sequence[float], level: float = 0.95) -> dict:
  """Mean and Student-t confidence interval of the mean (half-width t_{n-1} * s / sqrt(n)).

  -> {"mean", "half", "lo", "hi", "n"}; half is None (no interval) for fewer than 2 values.
  """
  from scipy import stats

  v = np.asarray(values, np.float64)
  mean = float(v.mean())
  if len(v) < 2:
    return {"mean": mean, "half": None, "lo": None, "hi": None, "n": int(len(v))}
  half = float(stats.t.ppf(0.5 + level / 2, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v)))
  return {"mean": mean, "half": half, "lo": mean - half, "hi": mean + half, "n": int(len(v))}


def paired_difference(a: dict[int, float], b: dict[int, float]) -> dict | None:
  """t_interval of a[s] - b[s] over the seeds both have ({seed: value} each); None if none."""
  seeds = sorted(set(a) & set(b))
  if not seeds:
    return None
  return {**t_interval([a[s] - b[s] for s in seeds]), "seeds": seeds}


def spearman(x: Sequence[float], y: Sequence[float]) -> float | None:
  """Spearman's rank correlation (ties get average ranks); None when either side is constant."""
  from scipy import stats

  x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
  if np.ptp(x) == 0 or np.ptp(y) == 0:
    return None
  return float(stats.spearmanr(x, y).statistic)


def utility_table(config, pool: dict[str, dict[int, float]]) -> dict:
  """U_c = pool top-1 of utility_method minus utility_method@without-c, paired over seeds.

  pool: {method: {seed: pool top-1}}. -> {class: {**t_interval, "per_seed", "verdict"}},
  verdict 'harmful' when the 95% interval lies below 0, 'helpful' above 0, else 'neutral'.
  """
  ec = config.experiment
  base = pool[ec.utility_method]
  out = {}
  for name in ec.class_names:
    without = pool[f"{ec.utility_method}@without-{name}"]
    seeds = sorted(set(base) & set(without))
    per_seed = {s: base[s] - without[s] for s in seeds}
    ci = t_interval(list(per_seed.values()))
    verdict = "neutral"
    if ci["hi"] is not None and ci["hi"] < 0:
      verdict = "harmful"
    elif ci["lo"] is not None and ci["lo"] > 0:
      verdict = "helpful"
    out[name] = {**ci, "per_seed": per_seed, "verdict": verdict}
  return out


def render_audit(data_config, synthetic_dir: str) -> dict:
  """How an independent critic sees each synthetic class, for reading the weights against.

  The critic is an RBF SVM on the real train digits' pixels, no part of any method. A clean class
  that it calls another digit (the typeface 9, which the handwritten 9s of sklearn do not
  resemble) is one no agreement with the real images can tell from a swap.
  -> {"critic", "real_test_top1", "classes": {name: {"recognised", "seen_as", "seen_as_share"}}}
  """
  from sklearn.svm import SVC

  train_split, test_split, class_names = data.load_real(data_config)
  synthetic = folders.load_synthetic(synthetic_dir, class_names, image_size=data_config.image_size)
  pixels = linear_eval.raw_pixels
  critic = SVC(gamma="scale").fit(pixels(train_split.images), train_split.labels)
  real_top1 = float(np.mean(critic.predict(pixels(test_split.images)) == test_split.labels))
  seen = critic.predict(pixels(synthetic.images))
  classes = {}
  for c, name in enumerate(class_names):
    mine = seen[synthetic.labels == c]
    if not len(mine):
      continue
    other = np.bincount(mine[mine != c], minlength=len(class_names))
    classes[name] = {
      "recognised": float(np.mean(mine == c)),
      "seen_as": class_names[int(np.argmax(other))] if other.sum() else "-",
      "seen_as_share": float(other.max() / len(mine)),
    }
  return {"critic": "RBF SVM on real pixels", "real_test_top1": real_top1, "classes": classes}


def summarise(config, root: str) -> dict:
  """Collects every run under <root>/runs into the report's numbers."""
  corrupted = [str(c) for c in config.experiment.corrupt_classes]
  out = {"corrupt_classes": corrupted, "corruption": config.experiment.corruption, "methods": {}}
  test, pool = {}, {}  # {method: {seed: top-1}}
  for method, seeds in schedule(config):
    rows = {"top1": [], "auc": [], "final_weights": [], "per_class": [], "pool_top1": []}
    for seed in seeds:
      workdir = os.path.join(root, "runs", method, f"seed{seed}")
      with open(os.path.join(workdir, "linear_eval.json")) as f:
        probe = json.load(f)
      rows["top1"].append(probe["top1"])
      rows["per_class"].append(probe["per_class_top1"])
      if probe.get("pool_top1") is not None:
        rows["pool_top1"].append(probe["pool_top1"])
      if parse_method(method)[1] is not None:
        with open(os.path.join(workdir, "synthetic_weights.json")) as f:
          weights = json.load(f)
        rows["final_weights"].append(weights)
        rows["auc"].append(ranking_auc(weights, corrupted))
    test[method] = dict(zip(seeds, rows["top1"], strict=True))
    entry = {"seeds": list(seeds), "top1": rows["top1"]}
    entry["top1_summary"] = _mean_std(rows["top1"])
    entry["top1_ci"] = t_interval(rows["top1"])
    if rows["pool_top1"]:
      pool[method] = dict(zip(seeds, rows["pool_top1"], strict=True))
      entry["pool_top1"] = rows["pool_top1"]
      entry["pool_top1_ci"] = t_interval(rows["pool_top1"])
    # The mean over the seeds whose test split has the class (None where none has).
    recalls = {name: [p[name] for p in rows["per_class"] if p[name] is not None]
               for name in rows["per_class"][0]}  # fmt: skip
    entry["per_class_top1"] = {n: float(np.mean(v)) if v else None for n, v in recalls.items()}
    if rows["auc"]:
      entry["auc"] = rows["auc"]
      entry["auc_summary"] = _mean_std(rows["auc"])
      entry["final_weights"] = rows["final_weights"]
    out["methods"][method] = entry
  # Paired per-seed differences against the references (the same seeds' runs share the real
  # subset, the synthetic draws and the initialisation).
  for method, entry in out["methods"].items():
    for ref in config.experiment.get("paired_references", ()):
      if ref in test and ref != method:
        entry.setdefault("paired", {})[ref] = {
          "test": paired_difference(test[method], test[ref]),
          "pool": paired_difference(pool[method], pool[ref])
          if method in pool and ref in pool
          else None,
        }
  if config.experiment.get("utility") and pool:
    utility = utility_table(config, pool)
    out["utility"] = utility
    u_mean = [utility[n]["mean"] for n in config.experiment.class_names]
    harmful = [n for n in config.experiment.class_names if utility[n]["verdict"] == "harmful"]
    helpful = [n for n in config.experiment.class_names if utility[n]["verdict"] == "helpful"]
    for entry in out["methods"].values():
      if "final_weights" not in entry:
        continue
      ws = [[w[n] for n in config.experiment.class_names] for w in entry["final_weights"]]
      entry["spearman_w_u"] = [spearman(w, u_mean) for w in ws]
      rhos = [r for r in entry["spearman_w_u"] if r is not None]
      entry["spearman_w_u_ci"] = t_interval(rhos) if rhos else None
      if harmful and helpful:
        # Every harmful class below every helpful one (by U), per seed; and the AUC of that.
        entry["separates_u"] = [
          max(w[n] for n in harmful) < min(w[n] for n in helpful) for w in entry["final_weights"]
        ]
        entry["auc_u"] = [
          ranking_auc({n: w[n] for n in harmful + helpful}, harmful) for w in entry["final_weights"]
        ]
  return out


def _pct(ci: dict | None) -> str:
  """A t_interval of fractions as 'mean ± half' in points (percent)."""
  if ci is None:
    return "–"
  if ci["half"] is None:
    return f"{100 * ci['mean']:.1f}"
  return f"{100 * ci['mean']:.1f} ± {100 * ci['half']:.1f}"


def markdown_fewshot(summary: dict) -> list[str]:
  """The few-shot tables: 95% t-intervals, paired differences, utility, rho(w, U)."""
  methods = {m: e for m, e in summary["methods"].items() if "@without-" not in m}
  refs = sorted({r for e in methods.values() for r in e.get("paired", {})})
  n = max(len(e["seeds"]) for e in methods.values())
  lines = [
    "",
    f"Few-shot regime: probe top-1 in points, mean ± 95% t-interval over {n} seeds; test = the "
    "test split, pool = the validation pool; Δ = paired per-seed difference (test, then pool).",
    "",
    "| method | test top-1 | pool top-1 | "
    + " | ".join(f"Δ vs {r} (test / pool)" for r in refs)
    + " | AUC nominal | ρ(w, U) |",
    "|---|---|---|" + "---|" * len(refs) + "---|---|",
  ]
  for method, e in methods.items():
    row = f"| {method} | {_pct(e['top1_ci'])} | {_pct(e.get('pool_top1_ci'))} |"
    for r in refs:
      p = e.get("paired", {}).get(r)
      row += " – |" if p is None else f" {_pct(p['test'])} / {_pct(p['pool'])} |"
    if "auc" in e:
      rho = e.get("spearman_w_u_ci")
      rho_s = "–" if rho is None else f"{rho['mean']:.2f} ± {rho['half'] or 0:.2f}"
      row += f" {np.mean(e['auc']):.2f} | {rho_s} |"
    else:
      row += " – | – |"
    lines.append(row)
  if "utility" in summary:
    schemes = [m for m, e in methods.items() if "final_weights" in e]
    lines += [
      "",
      "Utility U_c: pool top-1 with class c's synthetic folder minus without it (points, paired "
      "over seeds, 95% t-interval); harmful when the interval lies below 0. Beside it the nominal "
      "label and each scheme's mean final weight:",
      "",
      "| class | nominal | U_c | verdict | " + " | ".join(schemes) + " |",
      "|---|---|---|---|" + "---|" * len(schemes),
    ]
    corrupted = set(summary["corrupt_classes"])
    for name, u in summary["utility"].items():
      ws = [f"{np.mean([w[name] for w in methods[m]['final_weights']]):.2f}" for m in schemes]
      nominal = summary["corruption"] if name in corrupted else "clean"
      lines.append(f"| {name} | {nominal} | {_pct(u)} | {u['verdict']} | " + " | ".join(ws) + " |")
  return lines


def markdown(summary: dict) -> str:
  corrupted = summary["corrupt_classes"]
  lines = [
    f"Corrupted classes {', '.join(corrupted)} ({summary['corruption']}); "
    f"few-label linear probe on the real test digits; mean ± std over seeds.",
    "",
    "| method | probe top-1 | AUC clean > corrupted | weights of corrupted classes | "
    "lowest clean weight |",
    "|---|---|---|---|---|",
  ]
  shown = {m: e for m, e in summary["methods"].items() if "@without-" not in m}
  for method, e in shown.items():
    t = e["top1_summary"]
    spread = f" ± {t['std']:.4f}" if len(e["seeds"]) > 1 else f" (seed {e['seeds'][0]})"
    row = f"| {method} | {t['mean']:.4f}{spread} |"
    if "auc" in e:
      a = e["auc_summary"]
      fw = e["final_weights"]
      bad = " ".join(f"{c}: {np.mean([w[c] for w in fw]):.2f}" for c in corrupted)
      low = np.mean([min(v for k, v in w.items() if k not in corrupted) for w in fw])
      row += f" {a['mean']:.2f} ± {a['std']:.2f} | {bad} | {low:.2f} |"
    else:
      row += " – | – | – |"
    lines.append(row)
  names = list(next(iter(summary["methods"].values()))["per_class_top1"])
  lines += [
    "",
    "Probe recall on each real test class (mean over seeds; corrupted classes marked *):",
    "",
    "| method | " + " | ".join(n + ("*" if n in corrupted else "") for n in names) + " |",
    "|---|" + "---|" * len(names),
  ]
  for method, e in shown.items():
    lines.append(
      f"| {method} | "
      + " | ".join("–" if v is None else f"{v:.3f}" for v in e["per_class_top1"].values())
      + " |"
    )
  if any("pool_top1_ci" in e for e in shown.values()):
    lines += markdown_fewshot(summary)
  if "render_audit" in summary:
    audit = summary["render_audit"]
    lines += [
      "",
      f"An independent critic, {audit['critic']} (real test top-1 {audit['real_test_top1']:.4f}), "
      "on each synthetic class: the share it recognises as the class, and what it takes the "
      "rest for most often:",
      "",
      "| class | recognised | most often seen as |",
      "|---|---|---|",
    ]
    for name, a in audit["classes"].items():
      mark = "*" if name in corrupted else ""
      lines.append(
        f"| {name}{mark} | {a['recognised']:.2f} | {a['seen_as']} ({a['seen_as_share']:.2f}) |"
      )
  return "\n".join(lines) + "\n"


def _spread(values: Sequence[float], gap: float) -> list[float]:
  """Label heights near `values` (same order), at least `gap` apart, order kept."""
  order = np.argsort(values, kind="stable")
  out = np.asarray(values, float).copy()
  for prev, cur in zip(order[:-1], order[1:], strict=True):
    out[cur] = max(out[cur], out[prev] + gap)
  return out.tolist()


def plot_weights(config, root: str, path: str) -> None:
  """One panel per weighting scheme: each class's weight over training in its own colour (the
  mean over seeds, each seed faint behind it), corrupted classes dashed, and every line named at
  its end, so that lines ending at the same weight (several at 0 under auto) stay readable."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  corrupted = {str(c) for c in config.experiment.corrupt_classes}
  kind = experiment_corruptions(config)
  schemes = [m for m in config.experiment.methods if parse_method(m)[1] is not None]
  if not schemes:
    return
  seeds = list(config.experiment.seeds)
  fig, axes = plt.subplots(1, len(schemes), figsize=(3.6 * len(schemes), 3.8), sharey=True)
  colours = plt.get_cmap("tab10")
  for ax, method in zip(np.atleast_1d(axes), schemes, strict=True):
    runs = [weight_history(os.path.join(root, "runs", method, f"seed{seed}")) for seed in seeds]
    steps = runs[0][0]
    names = sorted(runs[0][1], key=lambda n: (len(n), n))
    ends = {}
    for i, name in enumerate(names):
      colour = colours(i % 10)
      style = "--" if name in corrupted else "-"
      curves = np.array([history[name][: len(steps)] for _, history in runs])
      for curve in curves:
        ax.plot(steps, curve, color=colour, linestyle=style, linewidth=0.6, alpha=0.25)
      ax.plot(steps, curves.mean(0), color=colour, linestyle=style, linewidth=1.8)
      ends[name] = float(curves.mean(0)[-1])
    heights = _spread([ends[n] for n in names], gap=0.055)
    for i, (name, y) in enumerate(zip(names, heights, strict=True)):
      label = f"{name} ({kind[name]})" if name in corrupted else name
      ax.annotate(
        label,
        xy=(steps[-1], ends[name]),
        xytext=(steps[-1] * 1.03, y),
        color=colours(i % 10),
        fontsize=7,
        fontweight="bold" if name in corrupted else "normal",
        va="center",
        arrowprops={"arrowstyle": "-", "color": colours(i % 10), "linewidth": 0.4},
        annotation_clip=False,
      )
    ax.set_title(method, fontsize=9)
    ax.set_xlabel("step")
    ax.set_xlim(0, steps[-1] * 1.22)
    ax.set_ylim(-0.05, 1.12)
    ax.grid(alpha=0.2)
  np.atleast_1d(axes)[0].set_ylabel("synthetic weight (mean over seeds)")
  fig.suptitle(
    f"Per-class synthetic weights over training, {len(seeds)} seed(s); dashed: corrupted "
    f"folders ({', '.join(f'{c} {kind[c]}' for c in sorted(corrupted))})",
    fontsize=9,
  )
  fig.tight_layout()
  fig.savefig(path, dpi=130)
  plt.close(fig)


def experiment_corruptions(config) -> dict[str, str]:
  """Class name -> what its synthetic folder holds ('swap' or 'noise'), as render_digits draws it."""
  classes = [int(c) for c in config.experiment.corrupt_classes]
  kinds = render_digits.CORRUPTIONS[config.experiment.corruption](classes)
  return {str(c): kind for c, kind in kinds.items()}


def dry_run(config, root: str, make: Callable) -> str:
  """Builds every run's config and checks its names (objective, weighting, data, model,
  optimiser); -> the schedule, one line per method. The synthetic folder is not rendered yet, so
  its path is not checked."""
  from syncon_jax import validate

  lines = []
  for method, seeds in schedule(config):
    c = method_config(make, config, method, seeds[0], os.path.join(root, "synthetic_digits"))
    c.data.synthetic_dir = os.path.dirname(os.path.abspath(__file__))  # any existing folder
    validate.check_config(c)
    lines.append(f"{method}: seeds {list(seeds)}, {c.total_steps} steps each")
  return "\n".join(lines)


def run_experiment(config, root: str, make: Callable | None = None) -> dict:
  """Renders, trains every (method, seed), writes <root>/report/; returns the summary.

  make(objective, weighting) -> the base config of a method (config_builder); None edits `config`.
  """
  make = make or _edit_config(config)
  plan = schedule(config)
  for method, _ in plan:
    parse_method(method)
    method_denominator(method)
  synthetic_dir = os.path.join(root, "synthetic_digits")
  make_synthetic_sets(config, synthetic_dir, [split_method(m)[1] for m, _ in plan])
  runs = [(m, s) for m, seeds in plan for s in seeds]
  for i, (method, seed) in enumerate(runs):
    logging.info("Experiment run %d/%d: %s, seed %d.", i + 1, len(runs), method, seed)
    result = run_one(
      method_config(make, config, method, seed, synthetic_dir),
      os.path.join(root, "runs", method, f"seed{seed}"),
    )
    logging.info("%s seed %d: probe top-1 %.4f.", method, seed, result["top1"])
  report = os.path.join(root, "report")
  os.makedirs(report, exist_ok=True)
  summary = summarise(config, root)
  summary["render_audit"] = render_audit(config.data, synthetic_dir)
  with open(os.path.join(report, "results.json"), "w") as f:
    json.dump(summary, f, indent=2)
  with open(os.path.join(report, "results.md"), "w") as f:
    f.write(markdown(summary))
  plot_weights(config, root, os.path.join(report, "weights.png"))
  return summary


if __name__ == "__main__":
  from syncon_jax import cli

  def define_flags() -> None:
    config_flags.DEFINE_config_file("config", "configs/digits.py", "Base config file.")
    flags.DEFINE_string("workdir", "runs/experiment", "Root of the experiment's runs.")
    flags.DEFINE_bool(
      "dry_run", False, "Build and check every run's config, print the schedule, train nothing."
    )

  def main(argv) -> None:
    if len(argv) > 1:
      raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    metrics.quiet_library_logs()
    with exit_on_user_error():
      flag = flags.FLAGS["config"]
      make = config_builder(
        config_flags.get_config_filename(flag), config_flags.get_override_values(flag)
      )
      if flags.FLAGS.dry_run:
        print(dry_run(flags.FLAGS.config, flags.FLAGS.workdir, make))
        return
      summary = run_experiment(flags.FLAGS.config, flags.FLAGS.workdir, make)
    print(markdown(summary))
    print(f"Report: {os.path.join(flags.FLAGS.workdir, 'report')}")

  cli.run(main, define_flags)
