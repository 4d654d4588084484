"""Few-shot linear classification by closed-form ridge regression, as big_vision's fewshot_lsr.

For each draw, `shots` train images of every class are picked; their features are standardised
(the picked images' mean and std), a constant column is appended for the bias, and a ridge
regression onto ±1 one-hot targets is solved in closed form in float64; the test image's class is
the argmax of its regression outputs. Accuracy is averaged over several draws and given with a
95% Student-t interval. The bias column's constant is large so that the bias is almost
unregularised (big_vision uses 100 as well).
"""

import numpy as np
from scipy import stats

from syncon_jax.evaluators.knn import per_class_recall

BIAS_CONSTANT = 100.0


def _design(x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
  x = (np.asarray(x, np.float64) - mean) / std
  return np.concatenate([x, np.full((len(x), 1), BIAS_CONSTANT)], axis=1)


def ridge_fit(x: np.ndarray, y: np.ndarray, *, num_classes: int, l2: float) -> dict:
  """Ridge regression onto ±1 targets. x: [N, D], y: [N] int -> {"mean" [D], "std" [D],
  "weights" [D + 1, num_classes]} float64.

  Solves (XᵀX + l2·I) W = XᵀY when N >= D and W = Xᵀ(XXᵀ + l2·I)⁻¹Y otherwise (the same W; the
  smaller system), X the standardised features with the bias column, Y = 2·onehot(y) − 1.
  """
  x = np.asarray(x, np.float64)
  mean = x.mean(axis=0)
  std = x.std(axis=0) + 1e-5  # a constant feature must not divide by zero
  design = _design(x, mean, std)
  targets = 2.0 * np.eye(num_classes)[y] - 1.0
  n, d = design.shape
  if n >= d:
    weights = np.linalg.solve(design.T @ design + l2 * np.eye(d), design.T @ targets)
  else:
    weights = design.T @ np.linalg.solve(design @ design.T + l2 * np.eye(n), targets)
  return {"mean": mean, "std": std, "weights": weights}


def ridge_predict(model: dict, x: np.ndarray) -> np.ndarray:
  """x: [M, D] -> [M] predicted class."""
  return np.argmax(_design(x, model["mean"], model["std"]) @ model["weights"], axis=1)


def shot_indices(labels: np.ndarray, shots: int, rng: np.random.Generator) -> np.ndarray:
  """`shots` random indices of each class (all of a class that has fewer). labels: [N] -> [n]."""
  picks = [
    rng.choice(
      np.flatnonzero(labels == c), size=min(shots, int(np.sum(labels == c))), replace=False
    )
    for c in np.unique(labels)
  ]
  return np.sort(np.concatenate(picks))


def mean_interval(values, confidence: float = 0.95) -> tuple[float, list[float]]:
  """-> (mean, [low, high]) the Student-t interval of the mean (one value: a zero-width one)."""
  v = np.asarray(values, np.float64)
  mean = float(v.mean())
  if len(v) < 2:
    return mean, [mean, mean]
  half = float(stats.t.ppf(0.5 + confidence / 2, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v)))
  return mean, [mean - half, mean + half]


def fewshot(
  train_x: np.ndarray,
  train_y: np.ndarray,
  test_x: np.ndarray,
  test_y: np.ndarray,
  *,
  shots: int,
  draws: int,
  l2: float,
  seed: int,
  num_classes: int,
) -> dict:
  """Ridge few-shot accuracy over `draws` draws of `shots` images per class.

  -> {"top1": mean over draws, "interval": [low, high] (95%), "draws": [top1 of each],
      "per_class_top1": [num_classes] recall averaged over draws (None: absent from test)}.
  """
  rng = np.random.default_rng(seed)
  accs, hits = [], np.zeros(len(test_y))
  for _ in range(draws):
    idx = shot_indices(train_y, shots, rng)
    model = ridge_fit(train_x[idx], train_y[idx], num_classes=num_classes, l2=l2)
    hit = ridge_predict(model, test_x) == test_y
    accs.append(float(np.mean(hit)))
    hits += hit
  mean, interval = mean_interval(accs)
  return {
    "top1": mean,
    "interval": interval,
    "draws": accs,
    "per_class_top1": per_class_recall(hits / draws, test_y, num_classes),
  }
