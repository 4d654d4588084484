"""The experiment's report (tools/experiment.py): statistics over seeds, the summary of every run
under <root>/runs (results.json), its markdown (results.md) and the weights plot (weights.png).
"""

import itertools
import json
import os
from collections.abc import Sequence

import numpy as np

from syncon_jax import data, linear_eval
from syncon_jax.data import folders
from syncon_jax.tools import render_digits
from syncon_jax.tools.experiment_plan import parse_method, schedule


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


def utility_reliability(utility: dict, nominal_bad: Sequence[str], max_splits: int = 500) -> dict:
  """How far U's ranking of the classes can be trusted, and so how high any weights' Spearman rho
  against it can honestly go.

  split_half: the mean over splits of the seeds into two halves of rho(U of one half, U of the
    other) (every split when there are at most max_splits, else max_splits drawn with seed 0);
    clean_split_half: the same over the classes not in nominal_bad.
  reliability: the Spearman-Brown step-up of split_half to all seeds, 2 r / (1 + r).
  nominal_rho: rho(the nominal labels as weights, 1 clean and 0 bad, U's mean): what weights
    that separate the bad classes perfectly, and tie the others, score.
  None where fewer than 4 seeds (or 3 classes) leave nothing to split.
  """
  names = list(utility)
  seeds = sorted(set.intersection(*(set(utility[n]["per_seed"]) for n in names)))
  u = np.array([[utility[n]["per_seed"][s] for s in seeds] for n in names])  # [class, seed]
  if len(seeds) < 4 or len(names) < 3:
    return {"split_half": None, "clean_split_half": None, "reliability": None, "nominal_rho": None}
  half = len(seeds) // 2
  splits = list(itertools.combinations(range(len(seeds)), half))
  if len(splits) > max_splits:
    rng = np.random.default_rng(0)
    splits = [tuple(rng.choice(len(seeds), half, replace=False)) for _ in range(max_splits)]
  clean = [i for i, n in enumerate(names) if n not in nominal_bad]

  def split_rho(rows):
    rhos = []
    for a in splits:
      b = [s for s in range(len(seeds)) if s not in a]
      rho = spearman(u[rows][:, list(a)].mean(1), u[rows][:, b].mean(1))
      if rho is not None:
        rhos.append(rho)
    return float(np.mean(rhos)) if rhos else None

  r = split_rho(list(range(len(names))))
  nominal = [0.0 if n in nominal_bad else 1.0 for n in names]
  return {
    "split_half": r,
    "clean_split_half": split_rho(clean) if len(clean) >= 3 else None,
    "reliability": None if r is None else 2 * r / (1 + r),
    "nominal_rho": spearman(nominal, u.mean(1)),
  }


def render_audit(data_config, synthetic_dir: str) -> dict:
  """How an independent critic sees each synthetic class, for reading the weights against.

  The critic is an RBF SVM on the real train digits' pixels, no part of any method. A clean class
  that it calls another digit (the typeface 9, which the handwritten 9s of sklearn do not
  resemble) is one no agreement with the real images can tell from a swap.
  -> {"critic", "real_test_top1", "classes": {name: {"recognised", "seen_as", "seen_as_share"}}}
  """
  from sklearn.svm import SVC

  train_split, test_split, class_names = data.load_real(data_config)
  synthetic = folders.load_synthetic(
    synthetic_dir, class_names, **folders.decode_options(data_config)
  )
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
    out["utility_reliability"] = utility_reliability(
      utility, [str(c) for c in config.experiment.corrupt_classes]
    )
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
    "| "
    + " | ".join(
      ["method", "test top-1", "pool top-1"]
      + [f"Δ vs {r} (test / pool)" for r in refs]
      + ["AUC nominal", "ρ(w, U)"]
    )
    + " |",
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
    rel = summary.get("utility_reliability") or {}
    if rel.get("split_half") is not None:
      clean = rel["clean_split_half"]
      lines += [
        "",
        f"How far U's ranking can be trusted: split-half Spearman rho {rel['split_half']:.2f} "
        f"(among the clean classes {'–' if clean is None else f'{clean:.2f}'}), reliability "
        f"over all seeds {rel['reliability']:.2f}; the nominal labels as weights (1 clean, 0 "
        f"corrupted) score rho(w, U) = {rel['nominal_rho']:.2f}. No weights can agree with U "
        "much beyond what U agrees with itself.",
      ]
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
