"""Few-label linear probe: multinomial logistic regression on frozen features.

Pure numpy / scikit-learn on the host: the probe's cost is negligible next to feature
extraction, and sklearn's L-BFGS solver is exact and well tested.
"""

import numpy as np


def few_label_indices(labels: np.ndarray, per_class: int, seed: int) -> np.ndarray:
  """Indices of `per_class` images of each class, drawn with `seed` (all images if per_class <= 0).

  labels: [N] int -> [num_classes * per_class] int, sorted.
  """
  if per_class <= 0:
    return np.arange(len(labels))
  rng = np.random.default_rng(seed)
  picks = []
  for c in np.unique(labels):
    idx = np.flatnonzero(labels == c)
    picks.append(rng.choice(idx, size=min(per_class, len(idx)), replace=False))
  return np.sort(np.concatenate(picks))


def _fit(x, y, l2: float, seed: int):
  # sklearn is imported where it is used: it takes ~1 s to import, which every command that only
  # imports this module (a --dry_run, say) would pay.
  from sklearn.linear_model import LogisticRegression
  from sklearn.preprocessing import StandardScaler

  scaler = StandardScaler().fit(x)
  # sklearn's C is the inverse of the L2 strength, scaled by the number of samples.
  clf = LogisticRegression(C=1.0 / (l2 * len(y)), max_iter=2000, random_state=seed)
  clf.fit(scaler.transform(x), y)
  return lambda z: clf.predict(scaler.transform(z))


def linear_probe(
  train_x: np.ndarray,
  train_y: np.ndarray,
  test_x: np.ndarray,
  test_y: np.ndarray,
  *,
  l2_grid,
  heldout_fraction: float,
  seed: int,
  n_splits: int = 3,
  num_classes: int | None = None,
  extra_sets: dict | None = None,
) -> dict:
  """Chooses the L2 strength on held-out parts of train, refits on all of train, scores test.

  train_x: [N, F], train_y: [N], test_x: [M, F], test_y: [M]. With few labels one held-out split
  is noisy, so the choice averages `n_splits` stratified shuffles of `heldout_fraction`.
  Returns {"top1", "l2", "heldout_top1", "per_class_top1"}; accuracies are fractions in [0, 1],
  per_class_top1 is [num_classes] (default: the largest label + 1), each class's recall on test,
  None for a class that test lacks. extra_sets {name: (x [M', F], y [M'])}: the same fitted
  probe also scores these (the few-shot regime's validation pool), as out[name] = {"top1",
  "per_class_top1"}.
  """
  from sklearn.model_selection import StratifiedShuffleSplit

  splits = StratifiedShuffleSplit(n_splits=n_splits, test_size=heldout_fraction, random_state=seed)
  scores = []
  for l2 in l2_grid:
    accs = [
      np.mean(_fit(train_x[a], train_y[a], l2, seed)(train_x[b]) == train_y[b])
      for a, b in splits.split(train_x, train_y)
    ]
    scores.append(float(np.mean(accs)))
  best = int(np.argmax(scores))
  predict = _fit(train_x, train_y, l2_grid[best], seed)
  if num_classes is None:
    num_classes = int(max(train_y.max(), test_y.max())) + 1

  def score(x, y) -> dict:
    hit = predict(x) == y
    count = np.bincount(y, minlength=num_classes)
    per_class = np.bincount(y, weights=hit, minlength=num_classes) / np.maximum(count, 1)
    return {
      "top1": float(np.mean(hit)) if len(y) else None,
      "per_class_top1": [float(a) if n else None for a, n in zip(per_class, count, strict=True)],
    }

  out = {**score(test_x, test_y), "l2": float(l2_grid[best]), "heldout_top1": scores[best]}
  for name, (x, y) in (extra_sets or {}).items():
    out[name] = score(x, y)
  return out
