"""The few-label linear probe: label selection and per-class recall."""

import numpy as np

from syncon_jax.evaluators import linear_probe


def test_few_label_indices_draws_per_class_without_repeats():
  labels = np.repeat(np.arange(4), [5, 7, 2, 9])
  idx = linear_probe.few_label_indices(labels, per_class=3, seed=1)
  np.testing.assert_array_equal(np.bincount(labels[idx]), [3, 3, 2, 3])  # class 2 has only 2
  assert np.all(np.diff(idx) > 0)
  np.testing.assert_array_equal(idx, linear_probe.few_label_indices(labels, per_class=3, seed=1))
  np.testing.assert_array_equal(linear_probe.few_label_indices(labels, 0, 0), np.arange(23))


def test_per_class_recall_matches_numpy():
  """Three well-separated clusters; class 2's test points are moved onto class 0's cluster."""
  rng = np.random.default_rng(0)
  centres = np.array([[8.0, 0.0], [0.0, 8.0], [-8.0, -8.0]])
  train_y = np.repeat(np.arange(3), 10)
  train_x = centres[train_y] + rng.normal(size=(30, 2))
  test_y = np.array([0] * 6 + [1] * 4 + [2] * 5)
  test_x = centres[np.where(test_y == 2, 0, test_y)] + rng.normal(size=(15, 2))
  out = linear_probe.linear_probe(
    train_x, train_y, test_x, test_y, l2_grid=(1e-3, 1e-1), heldout_fraction=0.3, seed=0
  )
  np.testing.assert_allclose(out["per_class_top1"], [1.0, 1.0, 0.0])
  np.testing.assert_allclose(out["top1"], 10 / 15)
  # A class absent from test has no recall (None), and the vector still spans every train label.
  out = linear_probe.linear_probe(
    train_x, train_y, test_x[:10], test_y[:10], l2_grid=(1e-2,), heldout_fraction=0.3, seed=0
  )
  assert len(out["per_class_top1"]) == 3 and out["per_class_top1"][2] is None


def test_extra_sets_are_scored_by_the_same_probe():
  """The few-shot pool: the fitted probe scores it as it scores test."""
  rng = np.random.default_rng(1)
  centres = np.array([[8.0, 0.0], [0.0, 8.0]])
  train_y = np.repeat(np.arange(2), 6)
  train_x = centres[train_y] + rng.normal(size=(12, 2))
  pool_y = np.array([0, 0, 1, 1, 1])
  pool_x = centres[np.array([0, 1, 1, 1, 0])]  # one 0 and one 1 placed on the other cluster
  out = linear_probe.linear_probe(
    train_x, train_y, train_x, train_y, l2_grid=(1e-2,), heldout_fraction=0.5, seed=0,
    extra_sets={"pool": (pool_x, pool_y)},
  )  # fmt: skip
  assert out["top1"] == 1.0
  np.testing.assert_allclose(out["pool"]["top1"], 3 / 5)
  np.testing.assert_allclose(out["pool"]["per_class_top1"], [0.5, 2 / 3])
