"""The evaluation protocols and health metrics against independent numpy / sklearn versions, and
the online probe's promise: it never changes the pretraining."""

import logging

import jax
import numpy as np
import pytest
from scipy import stats
from sklearn.linear_model import RidgeClassifier

from syncon_jax.evaluators import fewshot, health, knn


def _blobs(rng, n_per_class, num_classes, dim, spread=1.0, seed=0):
  """Gaussian blobs around class centres fixed by `seed` (train and test share them)."""
  centres = np.random.default_rng(seed).normal(size=(num_classes, dim)) * 3
  y = np.repeat(np.arange(num_classes), n_per_class)
  return (centres[y] + spread * rng.normal(size=(len(y), dim))).astype(np.float32), y


# ------------------------------------------------------------------------------------------------
# kNN


def _knn_loop(train_x, train_y, test_x, k, t, num_classes):
  """DINO's weighted vote, one test row at a time, float64."""
  tr = train_x / np.linalg.norm(train_x, axis=1, keepdims=True)
  out = []
  for q in test_x.astype(np.float64):
    s = tr @ (q / np.linalg.norm(q))
    scores = np.zeros(num_classes)
    for i in np.argsort(-s)[:k]:
      scores[train_y[i]] += np.exp(s[i] / t)
    out.append(scores)
  return np.array(out)


@pytest.mark.parametrize("k", [1, 5, 20, 500])
def test_knn_scores_match_a_numpy_loop(k):
  rng = np.random.default_rng(0)
  train_x, train_y = _blobs(rng, 12, 6, 8, spread=3.0)
  test_x, test_y = _blobs(rng, 5, 6, 8, spread=3.0)
  got = knn.knn_scores(train_x, train_y, test_x, k=k, temperature=0.07, num_classes=6, block_size=7)
  want = _knn_loop(train_x, train_y, test_x, k, 0.07, 6)
  np.testing.assert_allclose(got, want, rtol=2e-4)
  out = knn.knn_classify(train_x, train_y, test_x, test_y, k=k, temperature=0.07, num_classes=6)
  top = np.argsort(-want, axis=1, kind="stable")  # classes without a vote tie at 0: by index
  assert out["top1"] == pytest.approx(np.mean(top[:, 0] == test_y))
  assert out["top5"] == pytest.approx(np.mean(np.any(top[:, :5] == test_y[:, None], axis=1)))
  assert out["top5"] >= out["top1"]
  # Per-class recall averages back to top-1 on a balanced test set.
  assert np.mean(out["per_class_top1"]) == pytest.approx(out["top1"])


def test_knn_separable_blobs_are_classified_and_absent_classes_are_none():
  rng = np.random.default_rng(1)
  train_x, train_y = _blobs(rng, 20, 4, 16, spread=0.1)
  test_x, test_y = _blobs(rng, 5, 4, 16, spread=0.1)
  keep = test_y != 3
  out = knn.knn_classify(
    train_x, train_y, test_x[keep], test_y[keep], k=20, temperature=0.07, num_classes=4
  )
  assert out["top1"] == 1.0 and out["per_class_top1"] == [1.0, 1.0, 1.0, None]
  assert knn.mean_per_class(out["per_class_top1"]) == 1.0


# ------------------------------------------------------------------------------------------------
# Few-shot ridge


@pytest.mark.parametrize("n_per_class", [2, 30])  # dual (N < D) and primal (N >= D) forms
def test_ridge_matches_sklearn_ridge_classifier_and_float64_closed_form(n_per_class):
  rng = np.random.default_rng(2)
  x, y = _blobs(rng, n_per_class, 5, 12, spread=4.0)
  test_x, _ = _blobs(rng, 10, 5, 12, spread=4.0)
  l2 = 3.0
  model = fewshot.ridge_fit(x, y, num_classes=5, l2=l2)
  # The same design (standardised, bias column of 100) fitted by sklearn, no intercept of its
  # own: RidgeClassifier regresses onto the same ±1 targets.
  x64 = x.astype(np.float64)
  design = lambda z: np.concatenate(
    [(z - x64.mean(0)) / (x64.std(0) + 1e-5), np.full((len(z), 1), 100.0)], axis=1
  )
  ref = RidgeClassifier(alpha=l2, fit_intercept=False, solver="cholesky").fit(design(x), y)
  np.testing.assert_allclose(model["weights"], ref.coef_.T, rtol=1e-6, atol=1e-9)
  np.testing.assert_array_equal(fewshot.ridge_predict(model, test_x), ref.predict(design(test_x)))
  # And the textbook primal form in float64.
  d = design(x64)
  targets = 2 * np.eye(5)[y] - 1
  w = np.linalg.inv(d.T @ d + l2 * np.eye(d.shape[1])) @ d.T @ targets
  np.testing.assert_allclose(model["weights"], w, rtol=1e-6, atol=1e-9)


def test_fewshot_draws_shots_and_interval():
  rng = np.random.default_rng(3)
  train_x, train_y = _blobs(rng, 30, 4, 6, spread=2.5)
  test_x, test_y = _blobs(rng, 20, 4, 6, spread=2.5)
  out = fewshot.fewshot(
    train_x, train_y, test_x, test_y, shots=5, draws=6, l2=1.0, seed=0, num_classes=4
  )
  accs = np.array(out["draws"])
  assert len(accs) == 6 and out["top1"] == pytest.approx(accs.mean())
  half = stats.t.ppf(0.975, 5) * accs.std(ddof=1) / np.sqrt(6)
  np.testing.assert_allclose(out["interval"], [accs.mean() - half, accs.mean() + half])
  # Each draw fits on exactly `shots` images of each class, different ones per draw.
  r = np.random.default_rng(0)
  first, second = fewshot.shot_indices(train_y, 5, r), fewshot.shot_indices(train_y, 5, r)
  np.testing.assert_array_equal(np.bincount(train_y[first]), [5] * 4)
  assert set(first) != set(second)
  # Same seed, same numbers.
  again = fewshot.fewshot(
    train_x, train_y, test_x, test_y, shots=5, draws=6, l2=1.0, seed=0, num_classes=4
  )
  assert again["draws"] == out["draws"]
  assert fewshot.mean_interval([0.5]) == (0.5, [0.5, 0.5])


# ------------------------------------------------------------------------------------------------
# Health


def test_rankme_std_alignment_uniformity_match_numpy():
  rng = np.random.default_rng(4)
  x = rng.normal(size=(40, 10)) * np.linspace(0.1, 3, 10)
  y = x + 0.3 * rng.normal(size=x.shape)
  s = np.linalg.svd(x, compute_uv=False)
  p = s / s.sum() + 1e-7
  assert float(health.rankme(x)) == pytest.approx(np.exp(-np.sum(p * np.log(p))), rel=1e-4)
  u = x / np.linalg.norm(x, axis=1, keepdims=True)
  v = y / np.linalg.norm(y, axis=1, keepdims=True)
  assert float(health.normalized_std(x)) == pytest.approx(u.std(0, ddof=1).mean(), rel=1e-5)
  align = np.mean([np.sum((a - b) ** 2) for a, b in zip(u, v, strict=True)])
  assert float(health.alignment(x, y)) == pytest.approx(align, rel=1e-4)
  pairs = [np.exp(-2 * np.sum((u[i] - u[j]) ** 2)) for i in range(40) for j in range(i + 1, 40)]
  assert float(health.uniformity(x)) == pytest.approx(np.log(np.mean(pairs)), rel=1e-4)


def test_health_tells_collapse_from_spread():
  rng = np.random.default_rng(5)
  spread = rng.normal(size=(500, 16))
  collapsed = np.ones((500, 16)) + 1e-4 * rng.normal(size=(500, 16))
  assert float(health.rankme(spread)) > 14 and float(health.rankme(collapsed)) < 2
  # About 1/sqrt(d) when the embeddings cover the sphere, about 0 when they collapse.
  assert float(health.normalized_std(spread)) == pytest.approx(1 / np.sqrt(16), rel=0.05)
  assert float(health.normalized_std(collapsed)) < 1e-3
  assert float(health.uniformity(spread)) < float(health.uniformity(collapsed))


def test_real_synthetic_similarity_matches_numpy():
  rng = np.random.default_rng(6)
  real, real_y = _blobs(rng, 10, 3, 5)
  syn, syn_y = _blobs(rng, 4, 3, 5)
  syn_y = syn_y.copy()
  syn, syn_y = syn[syn_y != 2], syn_y[syn_y != 2]  # class 2 has no synthetic image
  out = health.real_synthetic_similarity(real, real_y, syn, syn_y, 3)
  unit = lambda a: a / np.linalg.norm(a, axis=-1, keepdims=True)
  protos = unit(np.stack([unit(real)[real_y == c].mean(0) for c in range(3)]))
  cos = np.sum(unit(syn) * protos[syn_y], axis=1)
  assert out["synthetic_to_own_prototype"] == pytest.approx(cos.mean(), rel=1e-5)
  assert out["real_to_own_prototype"] == pytest.approx(
    np.sum(unit(real) * protos[real_y], axis=1).mean(), rel=1e-5
  )
  assert out["synthetic_nearest_prototype_top1"] == pytest.approx(
    np.mean(np.argmax(unit(syn) @ protos.T, axis=1) == syn_y)
  )
  assert out["per_class_synthetic_to_own_prototype"][2] is None
  assert out["per_class_synthetic_to_own_prototype"][0] == pytest.approx(
    cos[syn_y == 0].mean(), rel=1e-5
  )
  m = np.sum(unit(unit(real).mean(0)) * unit(unit(syn).mean(0)))
  assert out["domain_mean_cos"] == pytest.approx(m, rel=1e-5)


# ------------------------------------------------------------------------------------------------
# The online probe and health metrics in the train step


def test_online_probe_does_not_change_pretraining(synthetic_dir, tmp_path):
  """Three steps with the online probe and health metrics on, and with both off: the same losses
  and the same parameters, BatchNorm statistics, optimiser and objective states. The probe learns
  (its own state moves) and is checkpointed with the rest."""
  from configs import digits
  from syncon_jax import checkpoint, train
  from syncon_jax.data import sampler

  runs = {}
  for on in (True, False):
    config = digits.get_config("runlocal")
    config.data.synthetic_dir = synthetic_dir
    config.eval.online_probe = on
    config.eval.online_health = on
    real, names, syn = train.load_data(config, True)
    tx, _ = train.make_optimizer(config)
    s = sampler.BatchSampler(
      real.labels, syn.labels, num_classes=10, batch_size=16, synthetic_per_real=1, seed=0
    )
    graphdef, state = train.create_train_state(config, 10, tx)
    step = jax.jit(train.make_train_step(graphdef, tx, config))
    losses, logged = [], []
    for i in range(3):
      host = s.host_batch(i, real.images, syn.images, process_index=0, process_count=1)
      state, m = step(state, {k: np.asarray(v) for k, v in host.items()})
      losses.append(float(m["loss"]))
      logged.append(sorted(m))
    runs[on] = (losses, state, logged[-1])
  (loss_on, state_on, keys_on), (loss_off, state_off, keys_off) = runs[True], runs[False]
  # Equal to float32 rounding: the two programs fuse differently under the suite's XLA flags
  # (conftest.TEST_XLA_FLAGS; losses 3.6e-7 apart, every state array within 1e-5 of its largest
  # entry after three steps). What the probe could change is far larger: a
  # gradient into the encoder moves the next loss by O(lr * grad), a BatchNorm update or a drawn
  # key changes the batch's statistics or augmentation outright.
  np.testing.assert_allclose(loss_on, loss_off, rtol=1e-5)
  fields = ("params", "model_state", "opt_state", "objective")
  for a, b in zip(
    jax.tree.leaves([getattr(state_on, f) for f in fields]),
    jax.tree.leaves([getattr(state_off, f) for f in fields]),
    strict=True,
  ):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert np.abs(a - b).max() <= 1e-4 * max(np.abs(b).max(), 1e-6), np.abs(a - b).max()
  assert state_off.online == {} and "online_probe/top1" not in keys_off
  for key in (
    "online_probe/loss",
    "online_probe/top1",
    "health/rankme",
    "health/feature_std",
    "health/alignment",
    "health/uniformity",
    "health/real_synthetic_cos",
  ):
    assert key in keys_on
  assert np.abs(np.asarray(state_on.online["kernel"])).max() > 0

  # The probe's state survives a checkpoint round trip.
  ckpt = checkpoint.Checkpointer(str(tmp_path), keep=1, every_steps=1)
  ckpt.save(3, state_on, last=True)
  ckpt.wait()
  template = state_on._replace(online=jax.tree.map(np.zeros_like, state_on.online))
  restored = ckpt.restore(3, template)
  ckpt.close()
  np.testing.assert_array_equal(restored.online["kernel"], state_on.online["kernel"])


def test_finetune_trains_a_linear_layer_on_pixels_and_unknown_protocols_are_refused():
  """The fine-tuning loop on the cheapest network (a linear layer on pixels): two classes told
  apart by brightness are learned; an unknown protocol name is a ConfigError naming the valid."""
  from flax import nnx

  from configs import digits
  from syncon_jax import linear_eval
  from syncon_jax.errors import ConfigError
  from syncon_jax.evaluators import finetune
  from syncon_jax.train import init_model, preprocess

  config = digits.get_config("runlocal")
  config.data.image_size = 4
  config.eval.finetune_augment = False
  config.eval.finetune_steps = 30
  config.eval.finetune_learning_rate = 0.5
  config.eval.batch_size = 8
  rng = np.random.default_rng(0)
  labels = rng.integers(0, 2, size=40)
  images = (rng.integers(0, 60, size=(40, 4, 4, 3)) + 150 * labels[:, None, None, None]).astype(
    np.uint8
  )
  net = finetune.Classifier(finetune.PixelEncoder(48), 48, 2, rngs=nnx.Rngs(0))
  steps = finetune.make_steps(config, preprocess)
  out = finetune.finetune(net, steps, images[:30], labels[:30], images[30:], labels[30:], config, 2)
  assert out["top1"] == 1.0 and np.isfinite(out["final_loss"])

  # An encoder restored from a checkpoint (its arrays committed to a device) beside a new head:
  # its fine-tuning compiles the step once, not again at the second step.
  model = nnx.merge(*init_model(config))
  nnx.update(model, jax.device_put(nnx.state(model), jax.devices()[0]))
  net = finetune.Classifier(nnx.clone(model.encoder), model.feat_dim, 2, rngs=nnx.Rngs(0))
  config.eval.finetune_steps = 3
  compiled = []
  handler = logging.Handler()
  handler.emit = lambda record: compiled.append(
    record.getMessage().startswith("Compiling jit(train_step)")
  )
  logging.getLogger("jax").addHandler(handler)
  try:
    with jax.log_compiles(True):
      finetune.finetune(net, steps, images[:30], labels[:30], images[30:], labels[30:], config, 2)
  finally:
    logging.getLogger("jax").removeHandler(handler)
  assert sum(compiled) == 1

  config.eval.protocols = ("linear", "knn_typo")
  with pytest.raises(ConfigError, match="knn_typo.*valid"):
    linear_eval.evaluate_all(config, "/nonexistent")
