"""The evaluation's markdown page (<workdir>/eval_report.md) and its training-curve plot."""

import json
import os

from syncon_jax.evaluators.protocols import REPRESENTATIONS

# Keys of metrics.jsonl that the training plot shows, when the run logged them.
TRAINING_KEYS = (
  "loss",
  "online_probe/top1",
  "health/rankme",
  "health/feature_std",
  "health/alignment",
  "health/uniformity",
  "health/real_synthetic_cos",
  "health/real_real_cos",
)


def _pct(x) -> str:
  return "-" if x is None else f"{100 * x:.1f}"


def save_training_plot(metrics_path: str, path: str) -> list[str]:
  """Plots TRAINING_KEYS against the step from metrics.jsonl into `path` (PNG).
  -> the keys plotted (none: no file written)."""
  if not os.path.exists(metrics_path):
    return []
  with open(metrics_path) as f:
    rows = [json.loads(line) for line in f if line.strip()]
  keys = [k for k in TRAINING_KEYS if any(k in r for r in rows)]
  if not keys:
    return []
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  cols = min(4, len(keys))
  n_rows = -(-len(keys) // cols)
  fig, axes = plt.subplots(n_rows, cols, figsize=(3.2 * cols, 2.6 * n_rows), squeeze=False)
  for ax, key in zip(axes.flat, keys, strict=False):
    pts = [(r["step"], r[key]) for r in rows if key in r]
    ax.plot(*zip(*pts, strict=True), marker=".")
    ax.set_title(key, fontsize=9)
    ax.set_xlabel("step", fontsize=8)
  for ax in list(axes.flat)[len(keys) :]:
    ax.axis("off")
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return keys


def markdown(results: dict, *, workdir: str, images: dict[str, str]) -> str:
  """The report page. results: eval.json's contents; images: {caption: file name in workdir}."""
  meta = results["meta"]
  lines = [
    f"# Evaluation of {workdir} (step {meta['step']})",
    "",
    f"{meta['data']}: {meta['num_train']} train / {meta['num_test']} test real images, "
    f"{meta['num_classes']} classes; model {meta['model']}, objective {meta['objective']}.",
    "",
    "Top-1 accuracy (%) on the real test images; the encoder against raw pixels and a random",
    "encoder of the same architecture. Few-shot: mean over draws [95% interval].",
    "",
    "| protocol | encoder | raw pixels | random encoder | details |",
    "|---|---|---|---|---|",
  ]
  for name, entry in results.items():
    if name in ("health", "meta"):
      continue
    cells = []
    for rep in REPRESENTATIONS:
      cell = _pct(entry[rep])
      if "interval" in entry:
        lo, hi = entry["interval"][rep]
        cell += f" [{_pct(lo)}, {_pct(hi)}]"
      cells.append(cell)
    details = []
    if "top5" in entry:
      details.append("top-5 " + " / ".join(_pct(entry["top5"][r]) for r in REPRESENTATIONS))
      details.append(f"k={entry['k']}, T={entry['temperature']}")
    if "mean_per_class" in entry:
      mpc = " / ".join(_pct(entry["mean_per_class"][r]) for r in REPRESENTATIONS)
      details.append(
        f"mean per-class {mpc}"
        + (" (headline)" if entry.get("headline") == "mean_per_class" else "")
      )
    if "labels_per_class" in entry:
      details.append(f"{entry['labels_per_class']} labels per class")
    if "shots" in entry:
      details.append(f"{len(entry['draws']['encoder'])} draws, L2 {entry['l2']:g}")
    if "steps" in entry:
      details.append(f"{entry['steps']} steps, lr {entry['learning_rate']:g}")
    lines.append(f"| {name} | " + " | ".join(cells) + f" | {'; '.join(details)} |")
  health = results.get("health", {})
  if health:
    keys = [k for k in health["encoder"] if not isinstance(health["encoder"][k], list | dict)]
    lines += [
      "",
      "## Representation health (test features)",
      "",
      "RankMe: effective rank (up to min(N, D)); std: of L2-normalised features, about "
      "1/sqrt(D) when healthy, 0 when collapsed; alignment / uniformity (Wang & Isola 2020, "
      "lower is better): two augmented views of each test image / all pairs. The real-versus-"
      "synthetic rows compare synthetic features with the real train class prototypes.",
      "",
      "| metric | " + " | ".join(REPRESENTATIONS) + " |",
      "|---|---|---|---|",
    ]
    for key in keys:
      vals = [health[rep].get(key) for rep in REPRESENTATIONS]
      lines.append(
        f"| {key} | " + " | ".join("-" if v is None else f"{v:.4g}" for v in vals) + " |"
      )
  for caption, name in images.items():
    lines += ["", f"## {caption}", "", f"![{caption}]({name})"]
  lines.append("")
  return "\n".join(lines)
