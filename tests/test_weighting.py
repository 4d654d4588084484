"""Synthetic-weight schemes: range, gradients, running statistics against numpy, and what the
auto scheme does with synthetic classes that agree, are swapped, or are noise."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import StepInputs

from configs import digits
from syncon_jax import objectives, weighting
from syncon_jax.errors import ConfigError

C, F, D = 4, 6, 5  # classes, feature width, projection width


def _config(scheme: str, **overrides):
  cfg = objectives.settings(digits.get_config(f"weighting={scheme}").objective)
  for key, value in overrides.items():
    cfg[key] = value
  return cfg


def _l2n(x):
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _inputs(real_feat, syn_feat, labels, valid=None, step=0, seed=0, cfg=None):
  """real_feat [b, V, F], syn_feat [b, S, V, F] -> StepInputs with random unit projections."""
  b, s, v, _ = syn_feat.shape
  rng = np.random.default_rng(seed)
  z = _l2n(rng.normal(size=(b, 1 + s, v, D)))
  valid = np.ones((b, s), bool) if valid is None else valid
  return StepInputs(
    cfg,
    jnp.asarray(z, jnp.float32),
    labels,
    valid,
    features=jnp.asarray(np.concatenate([real_feat[:, None], syn_feat], 1), jnp.float32),
    step=step,
  )


def _update(scheme, state, inputs, cfg):
  """The scheme's update on these inputs under cfg."""
  return inputs.replace(config=cfg).scheme_update(scheme, state)


def _sgd_step(scheme, state, grads, cfg):
  """The trainable keys of a scheme's state after its optimiser's step on grads."""
  if scheme.optimizer is None:
    return state
  params = {k: state[k] for k in scheme.trainable}
  tx = scheme.optimizer(cfg)
  updates, _ = tx.update({k: grads[k] for k in params}, tx.init(params), params)
  return {**state, **optax.apply_updates(params, updates)}


CENTRES = np.eye(C, F) * 4.0  # well separated class centres in feature space


def _batch(rng, b=32, s=1, v=2, syn_source=None, noise_classes=()):
  """Real features around their class centre; a synthetic image of class c is drawn around the
  centre of syn_source[c] (default c), or as wide noise for c in noise_classes."""
  labels = np.arange(b) % C
  real = CENTRES[labels][:, None] + rng.normal(scale=0.5, size=(b, v, F))
  src = np.array([(syn_source or {}).get(c, c) for c in range(C)])
  syn = CENTRES[src[labels]][:, None, None] + rng.normal(scale=0.5, size=(b, s, v, F))
  for c in noise_classes:
    syn[labels == c] = rng.normal(scale=4.0, size=syn[labels == c].shape)
  return real, syn, labels


def _run_scheme(scheme, cfg, steps, rng, **batch_kw):
  s = weighting.get_scheme(scheme)
  state = s.init(C, F, cfg)

  @jax.jit
  def update(state, outputs, batch, step):
    ctx = StepInputs(cfg, outputs.projections, batch["real_labels"], batch["synthetic_valid"])
    ctx = ctx.replace(step=step).update_context()
    return s.update(state, outputs, batch, ctx)

  for step in range(steps):
    real, syn, labels = _batch(rng, **batch_kw)
    inp = _inputs(real, syn, labels, step=step, seed=step)
    state, _ = update(state, inp.outputs, inp.batch, inp.ctx.step)
  return np.asarray(s.class_weights(state, cfg)), state


# The meta schemes run the model inside their update (tests/test_meta_weighting.py).
@pytest.mark.parametrize("scheme", sorted(s for s in weighting.SCHEMES if not s.startswith("meta")))
def test_weights_stay_in_unit_interval(scheme):
  cfg = _config(scheme, probation_steps=3)
  s = weighting.get_scheme(scheme)
  state = s.init(C, F, cfg)
  rng = np.random.default_rng(0)
  for step in range(6):
    real, syn, labels = _batch(rng, noise_classes=(1,))
    inputs = _inputs(real, syn, labels, step=step)
    # Huge gradients of either sign must not push a weight out of [0, 1].
    sign = (-1.0) ** step
    grads = jax.tree.map(lambda x, sign=sign: 1e3 * sign * jnp.ones_like(x), state)
    state, _ = _update(s, _sgd_step(s, state, grads, cfg), inputs, cfg)
    w = np.asarray(s.class_weights(state, cfg))
    assert w.shape == (C,) and np.all(w >= 0) and np.all(w <= 1), w


def test_learned_weights_receive_the_loss_gradient_plus_the_log_penalty():
  """d(loss)/d(theta_c) = (dL/dw_c - lambda / w_c) * w_c (1 - w_c), with dL/dw_c from autodiff
  of the SynCon loss alone and checked against a central difference."""
  cfg = _config("learned", synthetic_weight=0.3, weight_lambda=0.25)
  obj = objectives.get_objective("syncon")
  rng = np.random.default_rng(1)
  real, syn, labels = _batch(rng, b=8)
  inputs = _inputs(real, syn, labels, cfg=cfg)
  state = objectives.init(obj, C, F, None, cfg)
  grads = jax.grad(lambda p: inputs.loss(obj, state._replace(params=p)).value)(state.params)
  grads = grads["weighting"]["theta"]
  assert np.all(np.abs(np.asarray(grads)) > 0)

  def syncon_only(theta):
    st = state._replace(params={"weighting": {"theta": theta}})
    return inputs.loss(obj, st).metrics["syncon_loss"]

  theta = state.params["weighting"]["theta"]
  w = np.asarray(jax.nn.sigmoid(theta), np.float64)
  eps = 1e-3
  dl_dtheta = np.array(
    [
      (syncon_only(theta.at[c].add(eps)) - syncon_only(theta.at[c].add(-eps))) / (2 * eps)
      for c in range(C)
    ]
  )
  want = dl_dtheta - 0.25 / w * w * (1 - w)
  np.testing.assert_allclose(np.asarray(grads), want, rtol=2e-2, atol=2e-4)


def test_learned_and_hypernet_step_against_their_gradient():
  rng = np.random.default_rng(2)
  real, syn, labels = _batch(rng, b=8)
  obj = objectives.get_objective("syncon")
  for scheme, key in (("learned", "theta"), ("hypernet", "mlp")):
    cfg = _config(scheme, weight_learning_rate=0.1)
    inputs = _inputs(real, syn, labels, cfg=cfg)
    state = objectives.init(obj, C, F, None, cfg)
    # The hypernetwork reads statistics: fill them once so its inputs are not all zero.
    buffers, _ = obj.update(state, inputs.outputs, inputs.batch, inputs.update_context())
    state = state._replace(buffers=buffers)
    grads = jax.grad(lambda p, st=state, i=inputs: i.loss(obj, st._replace(params=p)).value)(
      state.params
    )
    # The objective's parameters under its own optimiser (plain SGD at weight_learning_rate).
    tx = obj.optimizer(cfg)
    new = optax.apply_updates(state.params, tx.update(grads, tx.init(state.params))[0])
    flat_g = jax.tree.leaves(grads["weighting"][key])
    assert any(np.abs(np.asarray(g)).max() > 0 for g in flat_g), scheme
    for before, after, g in zip(
      jax.tree.leaves(state.params["weighting"][key]),
      jax.tree.leaves(new["weighting"][key]),
      flat_g,
      strict=True,
    ):
      np.testing.assert_allclose(after, before - 0.1 * np.asarray(g), rtol=1e-6, atol=1e-7)


def test_running_statistics_match_a_numpy_ema():
  """Per-class debiased EMA over the batches in which the class appears; centred prototypes."""
  cfg = _config("proto_sim", stats_decay=0.8)
  s = weighting.get_scheme("proto_sim")
  state = s.init(C, F, cfg)
  rng = np.random.default_rng(3)
  acc = np.zeros((C, F))
  norm = np.zeros(C)
  for step in range(5):
    b = 6
    labels = rng.integers(0, C - 1, size=b)  # class C-1 never appears
    real = rng.normal(size=(b, 2, F))
    syn = rng.normal(size=(b, 1, 2, F))
    state, _ = _update(s, state, _inputs(real, syn, labels, step=step), cfg)
    for c in range(C):
      rows = real[labels == c].reshape(-1, F)
      if len(rows):
        acc[c] = 0.8 * acc[c] + 0.2 * rows.mean(0)
        norm[c] = 0.8 * norm[c] + 0.2
  want = np.where(norm[:, None] > 0, acc / np.maximum(norm, 1e-12)[:, None], 0.0)
  got = np.asarray(weighting._ema_value(state["stats"]["real_mean"]))
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  assert float(s.class_weights(state, cfg)[C - 1]) == 0.0  # never seen: no evidence, no weight


def test_synthetic_from_the_real_distribution_gets_high_equal_weights():
  rng = np.random.default_rng(4)
  cfg = _config("auto", probation_steps=20)
  w, _ = _run_scheme("auto", cfg, 20, rng)
  assert np.all(w > 0.9) and w.max() - w.min() < 0.1, w
  w, _ = _run_scheme("proto_sim", _config("proto_sim"), 20, rng)
  assert np.all(w > 0.9) and w.max() - w.min() < 0.1, w


def test_auto_zero_on_probation_then_frozen():
  rng = np.random.default_rng(5)
  cfg = _config("auto", probation_steps=10)
  s = weighting.get_scheme("auto")
  state = s.init(C, F, cfg)
  history = []
  for step in range(16):
    # After probation every synthetic image turns into noise: the weights must not follow.
    real, syn, labels = _batch(rng, noise_classes=range(C) if step >= 10 else ())
    state, _ = _update(s, state, _inputs(real, syn, labels, step=step), cfg)
    history.append(np.asarray(s.class_weights(state, cfg)))
  assert all(np.all(h == 0) for h in history[:9])
  assert np.all(history[9] > 0.9)
  for h in history[10:]:
    np.testing.assert_array_equal(h, history[9])


def test_auto_separates_a_swapped_and_a_noise_class():
  rng = np.random.default_rng(6)
  cfg = _config("auto", probation_steps=20)
  w, _ = _run_scheme("auto", cfg, 20, rng, syn_source={1: 2}, noise_classes=(3,))
  clean = w[[0, 2]]
  assert max(w[1], w[3]) < clean.min(), w


def test_a_class_without_synthetic_images_gets_no_weight_and_no_nan():
  rng = np.random.default_rng(7)
  cfg = _config("auto", probation_steps=5)
  s = weighting.get_scheme("auto")
  state = s.init(C, F, cfg)
  for step in range(5):
    real, syn, labels = _batch(rng)
    valid = (labels != 2)[:, None]  # class 2 has no synthetic images: placeholder slots
    state, _ = _update(s, state, _inputs(real, syn, labels, valid=valid, step=step), cfg)
  w = np.asarray(s.class_weights(state, cfg))
  assert np.all(np.isfinite(w)) and w[2] == 0.0 and np.all(w[[0, 1, 3]] > 0.9), w


def test_unknown_auto_score_is_a_config_error():
  with pytest.raises(ConfigError, match="auto_score.*'nearest'"):
    weighting.get_scheme("auto").init(C, F, _config("auto", auto_score="magic"))


# ----------------------------------------------------------------------------------------------
# End to end: the trainer with the auto scheme on tiny data.


def _write_synthetic(root, images_by_class):
  from PIL import Image

  for name, images in images_by_class.items():
    os.makedirs(os.path.join(root, name), exist_ok=True)
    for i, image in enumerate(images):
      Image.fromarray(image).save(os.path.join(root, name, f"{i:04d}.png"))
  return str(root)


CLASSES = ("0", "1", "2", "4", "7")  # a 5-class real data set cut from the digits


def _tiny_data(root, *, swap=None, noise=None, missing=(), per_class=40):
  """Writes <root>/real/{train,test}/<class> from the digits' own splits, and <root>/syn: class c
  holds held-out real test digits of swap[c] (default c), uniform noise when c == noise, nothing
  when c is in missing. -> (real root, synthetic root)."""
  from syncon_jax import data

  train, test, names = data.load_real(digits.get_config("runlocal").data)
  rng = np.random.default_rng(0)
  for split_name, split in (("train", train), ("test", test)):
    _write_synthetic(
      root / "real" / split_name,
      {c: np.asarray(split.images)[split.labels == names.index(c)] for c in CLASSES},
    )
  syn = {}
  for c in CLASSES:
    if c in missing:
      continue
    if c == noise:
      syn[c] = rng.integers(0, 256, size=(per_class, *train.images.shape[1:]), dtype=np.uint8)
    else:
      source = names.index((swap or {}).get(c, c))
      # The synthetic images come from the test split, so none is also a real train image.
      syn[c] = np.asarray(test.images)[test.labels == source][:per_class]
  return str(root / "real"), _write_synthetic(root / "syn", syn)


def _auto_run(tmp_path, **data_kw):
  from syncon_jax import train

  real, synthetic = _tiny_data(tmp_path, **data_kw)
  config = digits.get_config("runlocal,weighting=auto")
  config.data.name = "image_folder"
  config.data.manual_dir = real
  config.data.synthetic_dir = synthetic
  config.total_steps = 70
  config.batch_size = 32
  config.log_every_steps = 10
  config.checkpoint_every_steps = 70
  config.objective.syncon.probation_steps = 60
  workdir = str(tmp_path / "run")
  train.train_and_evaluate(config, workdir)
  with open(os.path.join(workdir, "synthetic_weights.json")) as f:
    return json.load(f)


def test_small_run_separates_a_swapped_and_a_noise_class(tmp_path):
  w = _auto_run(tmp_path, swap={"4": "7"}, noise="7")
  clean = [w[c] for c in ("0", "1", "2")]
  assert max(w["4"], w["7"]) < min(clean), w


def test_small_run_with_classes_missing_from_the_synthetic_folder(tmp_path):
  w = _auto_run(tmp_path, missing=("2", "7"))
  assert sorted(w) == list(CLASSES)
  assert w["2"] == 0.0 and w["7"] == 0.0  # no synthetic positives, no weight
  assert all(0.0 < w[c] <= 1.0 for c in ("0", "1", "4")), w


def test_fixed_weight_comes_from_the_config_not_the_checkpoint():
  """A resumed run restores the state written under synthetic_weight=0.5; the config now says
  0.2, and 0.2 is what the loss must use."""
  scheme = weighting.get_scheme("fixed")
  restored = scheme.init(C, F, _config("fixed", synthetic_weight=0.5))
  w = scheme.class_weights(restored, _config("fixed", synthetic_weight=0.2))
  np.testing.assert_allclose(np.asarray(w), np.full(C, 0.2))
