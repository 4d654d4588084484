"""The evaluation protocols of linear_eval, one function each, in an explicit registry.

Each protocol receives the `Features` of every representation (the pretrained encoder, raw
pixels, a random encoder of the same architecture) and returns {eval.json key: entry}, an entry
being {"encoder": top1, "raw_pixels": top1, "random_encoder": top1, ...details}, accuracies as
fractions in [0, 1]. Details that differ per representation are dicts keyed the same way.
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

from syncon_jax.evaluators import fewshot, knn, linear_probe

REPRESENTATIONS = ("encoder", "raw_pixels", "random_encoder")


class Features(NamedTuple):
  """Frozen features of one representation: train [N, F], test [M, F] float32."""

  train: np.ndarray
  test: np.ndarray


class Context(NamedTuple):
  """What every protocol may read. features: {representation: Features}; labels [N] / [M] int;
  finetune: a callable(representation) -> result dict (the whole-network protocol needs the
  models and images, which linear_eval holds)."""

  config: Any
  features: dict
  train_labels: np.ndarray
  test_labels: np.ndarray
  class_names: list
  finetune: Callable[[str], dict] | None = None


def _entry(results: dict, **details) -> dict:
  """{rep: result} -> {rep: top1, ...details}."""
  return {**{rep: results[rep]["top1"] for rep in REPRESENTATIONS}, **details}


def _per_rep(results: dict, key: str) -> dict:
  return {rep: results[rep][key] for rep in REPRESENTATIONS}


def _named(class_names, values) -> dict:
  return dict(zip(class_names, values, strict=True))


def _probe(ctx: Context, idx: np.ndarray) -> dict:
  ec = ctx.config.eval
  return {
    rep: linear_probe.linear_probe(
      f.train[idx],
      ctx.train_labels[idx],
      f.test,
      ctx.test_labels,
      l2_grid=tuple(ec.l2_grid),
      heldout_fraction=ec.heldout_fraction,
      seed=ec.probe_seed,
      n_splits=ec.linear_splits,
      num_classes=len(ctx.class_names),
    )
    for rep, f in ctx.features.items()
  }


def linear(ctx: Context) -> dict:
  """The paper protocol: logistic regression on every labelled train image, L2 chosen on held-out
  parts of them; beside top-1 the mean per-class accuracy (Flowers102's and Aircraft's papers
  report that one: eval.mean_per_class marks it as the headline)."""
  results = _probe(ctx, np.arange(len(ctx.train_labels)))
  return {
    "linear": _entry(
      results,
      mean_per_class={rep: knn.mean_per_class(r["per_class_top1"]) for rep, r in results.items()},
      headline="mean_per_class" if ctx.config.eval.mean_per_class else "top1",
      l2=_per_rep(results, "l2"),
      per_class_top1=_named(ctx.class_names, results["encoder"]["per_class_top1"]),
      num_labelled=len(ctx.train_labels),
    )
  }


def linear_few_label(ctx: Context) -> dict:
  """The same probe on eval.labels_per_class labelled train images per class."""
  ec = ctx.config.eval
  idx = linear_probe.few_label_indices(ctx.train_labels, ec.labels_per_class, ec.probe_seed)
  results = _probe(ctx, idx)
  return {
    "linear_few_label": _entry(
      results,
      labels_per_class=int(ec.labels_per_class),
      num_labelled=len(idx),
      l2=_per_rep(results, "l2"),
      per_class_top1=_named(ctx.class_names, results["encoder"]["per_class_top1"]),
      _results=results,  # for linear_eval.json; dropped before eval.json is written
    )
  }


def knn_protocol(ctx: Context) -> dict:
  """Weighted kNN (DINO, solo-learn): eval.knn_k neighbours, temperature eval.knn_temperature."""
  ec = ctx.config.eval
  results = {
    rep: knn.knn_classify(
      f.train,
      ctx.train_labels,
      f.test,
      ctx.test_labels,
      k=ec.knn_k,
      temperature=ec.knn_temperature,
      num_classes=len(ctx.class_names),
    )
    for rep, f in ctx.features.items()
  }
  return {
    "knn": _entry(
      results,
      top5=_per_rep(results, "top5"),
      k=int(ec.knn_k),
      temperature=float(ec.knn_temperature),
      per_class_top1=_named(ctx.class_names, results["encoder"]["per_class_top1"]),
    )
  }


def fewshot_protocol(ctx: Context) -> dict:
  """big_vision's fewshot_lsr: one entry fewshot_<shots> per eval.fewshot_shots."""
  ec = ctx.config.eval
  out = {}
  for shots in ec.fewshot_shots:
    results = {
      rep: fewshot.fewshot(
        f.train,
        ctx.train_labels,
        f.test,
        ctx.test_labels,
        shots=int(shots),
        draws=int(ec.fewshot_draws),
        l2=float(ec.fewshot_l2),
        seed=int(ec.fewshot_seed),
        num_classes=len(ctx.class_names),
      )
      for rep, f in ctx.features.items()
    }
    out[f"fewshot_{int(shots)}"] = _entry(
      results,
      interval=_per_rep(results, "interval"),
      draws=_per_rep(results, "draws"),
      shots=int(shots),
      l2=float(ec.fewshot_l2),
    )
  return out


def finetune_protocol(ctx: Context) -> dict:
  """The whole network trained on every labelled train image for eval.finetune_steps; the
  random encoder is thereby trained from scratch, raw pixels get a linear layer."""
  ec = ctx.config.eval
  results = {rep: ctx.finetune(rep) for rep in REPRESENTATIONS}
  return {
    "finetune": _entry(
      results,
      steps=int(ec.finetune_steps),
      learning_rate=float(ec.finetune_learning_rate),
      final_loss=_per_rep(results, "final_loss"),
      per_class_top1=_named(ctx.class_names, results["encoder"]["per_class_top1"]),
    )
  }


# eval.protocols names -> protocol. fewshot writes one key per shot count.
PROTOCOLS: dict[str, Callable[[Context], dict]] = {
  "linear": linear,
  "linear_few_label": linear_few_label,
  "knn": knn_protocol,
  "fewshot": fewshot_protocol,
  "finetune": finetune_protocol,
}
