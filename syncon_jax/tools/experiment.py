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

This module renders the sets and runs the plan; experiment_plan.py names the methods and builds
their configs, experiment_report.py turns the runs into the report.
"""

import json
import os
import shutil
import time
from collections.abc import Callable, Sequence

from absl import app, flags, logging
from ml_collections import config_flags

from syncon_jax import linear_eval, platform, progress, train
from syncon_jax.data import folders
from syncon_jax.errors import ConfigError, exit_on_user_error
from syncon_jax.tools import render_digits
from syncon_jax.tools.experiment_plan import (
  _edit_config,
  config_builder,
  is_same_run,
  method_config,
  method_denominator,
  parse_method,
  removed_classes,
  schedule,
  split_method,
  synthetic_set_dir,
)
from syncon_jax.tools.experiment_report import markdown, plot_weights, render_audit, summarise

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


def run_progress(elapsed: float, done: int, total: int) -> str:
  """'elapsed 3.0 min, ETA 12.0 min' from the mean time of the runs done so far (finished runs
  read back count too, so a resumed experiment's first ETAs are low); no ETA before the first."""
  rate = done / elapsed if elapsed > 0 else 0.0
  return f"elapsed {progress.duration(elapsed)}, ETA {progress.eta(total - done, rate)}"


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
  start = time.monotonic()
  for i, (method, seed) in enumerate(runs):
    logging.info(
      "Experiment run %d/%d: %s, seed %d (%s).",
      i + 1,
      len(runs),
      method,
      seed,
      run_progress(time.monotonic() - start, i, len(runs)),
    )
    result = run_one(
      method_config(make, config, method, seed, synthetic_dir),
      os.path.join(root, "runs", method, f"seed{seed}"),
    )
    logging.info("%s seed %d: probe top-1 %.4f.", method, seed, result["top1"])
  logging.info("Experiment: %d runs in %s.", len(runs), progress.duration(time.monotonic() - start))
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
    platform.start_jax_program()
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
