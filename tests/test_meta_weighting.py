"""The meta weighting: its meta-gradient against finite differences of an independent float64
numpy computation on a tiny encoder, the centred and clipped update, the hypernetwork form, and
a runlocal SynCon run that writes its weights and resumes exactly."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import StepInputs, stopped_after

from configs import digits
from syncon_jax import meta_weighting, objectives, train, weighting
from syncon_jax.errors import ConfigError

B, C, V = 6, 3, 2  # real images, classes, views
H, W, CH = 2, 2, 1  # image shape of the toy "encoder"
FEAT, DIM = 3, 3


def _config(scheme="meta", **overrides):
  cfg = objectives.settings(digits.get_config(f"weighting={scheme}").objective)
  if "synthetic_denominator" in cfg:
    cfg.synthetic_denominator = "all"  # the reference below is the proposal's literal form
  for key, value in overrides.items():
    cfg[key] = value
  return cfg


# ----------------------------------------------------------------------------------------------
# Independent numpy float64 reference: a tanh-linear encoder and linear head, SynCon and SupCon
# written from their definitions (DESIGN.md, loss contract) with explicit loops.


def np_forward(theta, x):
  """theta (W1 [p, F], W2 [F, D]), x [n, H, W, C] -> unit projections [n, D]."""
  w1, w2 = theta
  z = np.tanh(x.reshape(len(x), -1) @ w1) @ w2
  return z / np.linalg.norm(z, axis=1, keepdims=True)


def np_syncon(z, labels, is_syn, weight, t):
  """Real anchors; A(i) every other row; P real same-class rows; U synthetic same-class rows."""
  total, n_anchors = 0.0, 0
  for i in range(len(z)):
    if is_syn[i]:
      continue
    others = [j for j in range(len(z)) if j != i]
    logits = np.array([z[i] @ z[j] / t for j in others])
    log_den = np.log(np.sum(np.exp(logits - logits.max()))) + logits.max()
    logp = {j: z[i] @ z[j] / t - log_den for j in others}
    pos = [j for j in others if labels[j] == labels[i] and not is_syn[j]]
    syn = [j for j in others if labels[j] == labels[i] and is_syn[j]]
    li = 0.0
    if pos:
      li -= np.mean([logp[j] for j in pos])
    if syn:
      li -= np.mean([weight[j] * logp[j] for j in syn])
    total += li
    n_anchors += 1
  return total / n_anchors


def np_supcon(z, labels, t):
  """Every row an anchor; positives: other rows with the same label; mean over anchors."""
  return np_syncon(z, labels, np.zeros(len(z), bool), np.zeros(len(z)), t)


def _central(f, x, eps):
  """Five-point central differences (error O(eps^4)), so that a difference of differences stays
  accurate to ~1e-9."""
  g = np.zeros_like(x)
  for idx in np.ndindex(x.shape):
    vals = []
    for step in (2, 1, -1, -2):
      xs = x.copy()
      xs[idx] += step * eps
      vals.append(f(xs))
    g[idx] = (-vals[0] + 8 * vals[1] - 8 * vals[2] + vals[3]) / (12 * eps)
  return g


def np_meta_gradient(theta, w, views, meta_views, labels, t, eta, unroll):
  """d/dw of SupCon(meta views) at theta after `unroll` SGD steps on SynCon(views; w), every
  derivative a central difference."""
  b, k = views.shape[:2]
  x = views.reshape(b * k * V, H, W, CH)
  row_labels = np.repeat(labels, k * V)
  is_syn = np.tile(np.repeat(np.arange(k) > 0, V), b)
  meta_x = meta_views.reshape(b * V, H, W, CH)
  meta_labels = np.repeat(labels, V)
  shapes = [p.shape for p in theta]
  sizes = [p.size for p in theta]

  def unflat(v):
    parts = np.split(v, np.cumsum(sizes)[:-1])
    return [p.reshape(s) for p, s in zip(parts, shapes, strict=True)]

  def syn_loss(flat, w):
    return np_syncon(np_forward(unflat(flat), x), row_labels, is_syn, w[row_labels], t)

  def outer(w):
    flat = np.concatenate([p.ravel() for p in theta])
    for _ in range(unroll):
      flat = flat - eta * _central(lambda f: syn_loss(f, w), flat, 1e-4)
    return np_supcon(np_forward(unflat(flat), meta_x), meta_labels, t)

  return _central(outer, w, 1e-3)


# ----------------------------------------------------------------------------------------------
# The same model as StepInputs sees it.


def _apply(params, images):
  h = jnp.tanh(images.reshape(images.shape[0], -1) @ params["encoder"]["kernel"])
  return h, h @ params["head"]["kernel"]


def _toy(seed=0, s=1, dtype=np.float64):
  rng = np.random.default_rng(seed)
  labels = np.arange(B) % C
  theta = [rng.normal(size=(H * W * CH, FEAT)), rng.normal(size=(FEAT, DIM))]
  views = rng.normal(size=(B, 1 + s, V, H, W, CH))
  meta_views = rng.normal(size=(B, 1, V, H, W, CH))
  params = {
    "encoder": {"kernel": jnp.asarray(theta[0], dtype)},
    "head": {"kernel": jnp.asarray(theta[1], dtype)},
  }
  h, z = _apply(params, jnp.asarray(views.reshape(-1, H, W, CH), dtype))
  z = z / jnp.linalg.norm(z, axis=-1, keepdims=True)

  def augment(key, images):
    del key
    assert images.shape == (B, 1, 1, 1, 1)  # the meta batch re-augments the real slot only
    return jnp.asarray(meta_views, dtype)

  inputs = StepInputs(
    None,
    z.reshape(B, 1 + s, V, DIM),
    labels,
    jnp.ones((B, s), bool),
    features=h.reshape(B, 1 + s, V, FEAT),
    views=jnp.asarray(views, dtype),
    apply=jax.tree_util.Partial(_apply),
    key=jax.random.key(0),
    real_images=jnp.zeros((B, 1, 1, 1), jnp.uint8),
    augment=jax.tree_util.Partial(augment),
    params=params,
  )
  return inputs, theta, views, meta_views, labels


def _update(scheme, state, inputs, cfg, new_params=None):
  """scheme.update under cfg; new_params (the step's updated parameters) default to ctx.params."""
  inputs = inputs.replace(config=cfg)
  new_params = inputs.ctx.params if new_params is None else new_params
  return inputs.scheme_update(scheme, state, new_params=new_params)


def _meta_gradient(w, params, inputs, cfg):
  ctx = inputs.replace(config=cfg).update_context()
  return meta_weighting.meta_gradient(w, params, inputs.outputs, inputs.batch, ctx)


@pytest.mark.parametrize("unroll", [1, 2])
def test_meta_gradient_matches_finite_differences_of_a_numpy_lookahead(unroll):
  cfg = _config(meta_inner_lr=0.5, meta_unroll=unroll, temperature=0.5, base_temperature=0.5)
  with jax.enable_x64(True):
    inputs, theta, views, meta_views, labels = _toy()
    w = jnp.asarray([0.2, 0.5, 0.9], jnp.float64)
    g, aux = jax.jit(lambda w, p: _meta_gradient(w, p, inputs, cfg))(w, inputs.ctx.params)
    g = np.asarray(g)
    inner = float(aux["meta_inner_loss"])
  want = np_meta_gradient(theta, np.asarray(w), views, meta_views, labels, 0.5, 0.5, unroll)
  assert np.abs(want).min() > 1e-4  # every class has a signal to compare
  np.testing.assert_allclose(g, want, rtol=1e-5, atol=1e-9)
  # The inner loss at the start is the step's SynCon loss under w.
  b, k = views.shape[:2]
  z = np_forward(theta, views.reshape(-1, H, W, CH))
  is_syn = np.tile(np.repeat(np.arange(k) > 0, V), b)
  row_labels = np.repeat(labels, k * V)
  want_inner = np_syncon(z, row_labels, is_syn, np.asarray(w)[row_labels], 0.5)
  np.testing.assert_allclose(inner, want_inner, rtol=1e-10)


def test_centred_step_is_normalised_centred_and_zero_on_absent_classes():
  rng = np.random.default_rng(0)
  for scale in (1e-6, 1.0, 1e4):  # the raw meta-gradient grows 100-1000x over training
    g = scale * rng.normal(size=6)
    present = np.array([True, True, False, True, True, False])
    d = np.asarray(meta_weighting.centred_step(jnp.asarray(g), jnp.asarray(present)))
    gp = g[present]
    want = gp / np.sqrt(np.mean(gp**2))
    np.testing.assert_allclose(d[present], want - want.mean(), rtol=1e-5, atol=1e-6)
    assert np.all(d[~present] == 0)
  zero = meta_weighting.centred_step(jnp.zeros(4), jnp.ones(4, bool))
  assert np.all(np.asarray(zero) == 0)


def test_update_is_a_centred_clipped_step_and_skips_off_steps():
  cfg = _config(meta_learning_rate=0.1, meta_every=2, meta_inner_lr=0.5)
  s = weighting.get_scheme("meta")
  inputs, *_ = _toy(dtype=np.float32)
  state = {"w": jnp.asarray([0.5, 0.5, 0.5], jnp.float32)}
  new, m = _update(s, state, inputs, cfg)
  d = np.asarray(m["meta_direction"])
  assert float(m["meta_step"]) == 1.0 and np.abs(d).max() > 0.1
  np.testing.assert_allclose(np.asarray(new["w"]), 0.5 - 0.1 * d, rtol=1e-6)
  np.testing.assert_allclose(np.asarray(new["w"]).mean(), 0.5, atol=1e-6)  # centred
  # Step 1 is not a meta step (meta_every = 2): the weights stay.
  off, m = _update(s, new, inputs._replace(step=1), cfg)
  assert float(m["meta_step"]) == 0.0
  np.testing.assert_array_equal(np.asarray(off["w"]), np.asarray(new["w"]))
  # A huge step still leaves every weight in [0, 1].
  big, _ = _update(s, state, inputs, _config(meta_learning_rate=1e3, meta_inner_lr=0.5))
  w = np.asarray(big["w"])
  assert np.all((w >= 0) & (w <= 1)) and np.isin(w, [0.0, 1.0]).sum() >= 2, w


def test_hypernet_form_moves_its_weights_along_the_centred_step():
  cfg = _config("meta_hypernet", meta_hypernet_learning_rate=0.05, meta_inner_lr=0.5)
  s = weighting.get_scheme("meta_hypernet")
  inputs, *_ = _toy(dtype=np.float32)
  state = s.init(C, FEAT, cfg)
  # Two updates: the first fills the statistics the MLP reads (its inputs start at zero).
  state, _ = _update(s, state, inputs, cfg)
  new, m = _update(s, state, inputs, cfg)
  d = np.asarray(m["meta_direction"])
  dw = np.asarray(new["w"]) - np.asarray(state["w"])
  # phi -= lr J^T d changes w by about -lr J J^T d: a descent direction for the centred step.
  assert np.abs(dw).max() > 0 and float(dw @ d) < 0, (dw, d)
  np.testing.assert_allclose(
    np.asarray(new["w"]), np.asarray(weighting._hypernet_weights(new, cfg)), rtol=1e-6
  )
  assert np.all((np.asarray(new["w"]) >= 0) & (np.asarray(new["w"]) <= 1))


def test_ema_start_parameters_follow_the_online_ones():
  cfg = _config(meta_params="ema", meta_ema_decay=0.9, meta_inner_lr=0.5)
  s = weighting.get_scheme("meta")
  inputs, *_ = _toy(dtype=np.float32)
  params = inputs.ctx.params
  state = s.init_target(s.init(C, FEAT, cfg), params, cfg)
  online = jax.tree.map(lambda p: p + 1.0, params)
  new, _ = _update(s, state, inputs, cfg, new_params=online)
  for e, p in zip(jax.tree.leaves(new["ema"]), jax.tree.leaves(params), strict=True):
    np.testing.assert_allclose(np.asarray(e), np.asarray(p) + 0.1, rtol=1e-6)
  # The lookahead starts from the EMA: parameters far from it give another meta-gradient.
  far = inputs._replace(params=jax.tree.map(lambda p: 0.3 * p, params))
  _, m_ema = _update(s, state, far, cfg)
  _, m_online = _update(s, state, far, _config(meta_inner_lr=0.5))
  _, m_same = _update(s, state, inputs, _config(meta_inner_lr=0.5))
  np.testing.assert_allclose(m_ema["meta_direction"], m_same["meta_direction"], rtol=1e-5)
  assert not np.allclose(m_online["meta_direction"], m_ema["meta_direction"], atol=1e-3)


@pytest.mark.parametrize(
  "key,value",
  [("meta_every", 0), ("meta_unroll", -1), ("meta_params", "snapshot"), ("meta_ema_decay", 1.5)],
)
def test_bad_meta_keys_are_config_errors(key, value):
  with pytest.raises(ConfigError, match=f"objective.syncon.{key}"):
    weighting.get_scheme("meta").init(C, FEAT, _config(**{key: value}))


def test_runlocal_meta_run_writes_weights_and_resumes_exactly(synthetic_dir, tmp_path):
  """configs/digits.py:runlocal,weighting=meta with a meta step every 3 steps
  (the cond's both branches): weights move and are written; the lookahead's first loss is the
  step's loss (apply under the step's params reproduces its projections); the run resumed from
  its checkpoint at step 6 ends in the same state."""
  config = digits.get_config("runlocal,weighting=meta")
  config.data.synthetic_dir = synthetic_dir
  config.objective.syncon.meta_every = (
    3  # logged steps 4, 8, 12 run inputs.step 3 (meta), 7, 11 (not)
  )
  config.objective.syncon.meta_learning_rate = 0.1
  straight = train.train_and_evaluate(config, str(tmp_path / "straight"))
  with open(tmp_path / "straight" / "synthetic_weights.json") as f:
    weights = json.load(f)
  assert sorted(weights) == [str(c) for c in range(10)]
  assert np.std(list(weights.values())) > 0.01, weights
  with open(tmp_path / "straight" / "metrics.jsonl") as f:
    rows = [json.loads(line) for line in f]
  assert [row["meta_step"] for row in rows] == [1.0, 0.0, 0.0]
  np.testing.assert_allclose(rows[0]["meta_inner_loss"], rows[0]["syncon_loss"], rtol=1e-5)

  resumed = train.train_and_evaluate(
    config, stopped_after(str(tmp_path / "straight"), str(tmp_path / "resumed"), 6)
  )
  leaves = lambda s: jax.tree.leaves(
    (s.params, s.model_state, s.opt_state, s.objective_params, s.objective)
  )
  for a, b in zip(leaves(straight), leaves(resumed), strict=True):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert os.path.exists(tmp_path / "resumed" / "synthetic_weights.json")


def test_meta_gradient_through_the_blockwise_loss_equals_dense():
  """The paper configs stream the similarity matrix (custom_vjp, no forward mode): there the
  meta-gradient differentiates the lookahead's backward pass again, and must equal the dense
  path's forward-over-reverse one."""
  with jax.enable_x64(True):
    inputs, *_ = _toy(s=2)
    w = jnp.asarray([0.2, 0.5, 0.9], jnp.float64)
    g = {
      bs: np.asarray(_meta_gradient(w, inputs.ctx.params, inputs, _config(block_size=bs))[0])
      for bs in (None, 5)
    }
  assert np.abs(g[None]).min() > 1e-6
  np.testing.assert_allclose(g[5], g[None], rtol=1e-9, atol=1e-12)
