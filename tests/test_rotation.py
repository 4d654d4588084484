"""Rotation prediction (syncon_jax/objectives/rotation.py): the four rotations, the loss against
an independent numpy cross-entropy, gradients into the model, and a digits run that learns."""

import json

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from conftest import StepInputs, run_cli

from syncon_jax import objectives
from syncon_jax.errors import ConfigError
from syncon_jax.objectives import rotation


def _quarter_turn(a: np.ndarray) -> np.ndarray:
  """One counter-clockwise quarter turn of [n, S, S, C], written out: out[i, j] = in[j, S-1-i]."""
  s = a.shape[1]
  out = np.empty_like(a)
  for i in range(s):
    for j in range(s):
      out[:, i, j] = a[:, j, s - 1 - i]
  return out


def test_rotations_are_the_four_quarter_turns():
  x = np.random.default_rng(0).normal(size=(3, 5, 5, 2)).astype(np.float32)
  rotated, labels = rotation.rotations(jnp.asarray(x))
  assert rotated.shape == (12, 5, 5, 2)
  np.testing.assert_array_equal(labels, np.repeat(np.arange(4), 3))
  for k in range(4):
    block = np.asarray(rotated[3 * k : 3 * k + 3])
    want = x
    for _ in range(k):
      want = _quarter_turn(want)
    np.testing.assert_array_equal(block, want)
  # Distinct images: an asymmetric input is changed by every non-zero rotation.
  for k in range(1, 4):
    assert not np.allclose(rotated[3 * k : 3 * k + 3], x)
  with pytest.raises(ConfigError, match="square"):
    rotation.rotations(jnp.zeros((1, 4, 6, 3)))


def _inputs(seed=0, b=3, v=2, size=4, c=3, feat=5):
  rng = np.random.default_rng(seed)
  views = rng.normal(size=(b, 2, v, size, size, c)).astype(np.float32)  # slot 1: synthetic
  w = rng.normal(size=(size * size * c, feat)).astype(np.float32)
  seen = []

  def apply(params, images):
    seen.append(np.asarray(images))
    h = jnp.tanh(images.reshape(images.shape[0], -1) @ params["w"])
    return h, h

  config = ml_collections.ConfigDict({"learning_rate": 0.1})
  inputs = StepInputs(
    config,
    jnp.zeros((b, 2, v, 1)),
    jnp.zeros((b,), jnp.int32),
    jnp.ones((b, 1), bool),
    views=jnp.asarray(views),
    apply=jax.tree_util.Partial(apply),
    params={"w": jnp.asarray(w)},
  )
  classifier = {
    "kernel": jnp.asarray(rng.normal(size=(feat, 4)).astype(np.float32)),
    "bias": jnp.asarray(rng.normal(size=(4,)).astype(np.float32)),
  }
  state = objectives.ObjectiveState(params={"classifier": classifier}, buffers={})
  return inputs, state, views, w, seen


def test_loss_equals_numpy_cross_entropy_of_the_four_way_logits():
  inputs, state, views, w, seen = _inputs()
  loss, metrics, _ = inputs.loss(rotation.OBJECTIVE, state)

  # Independent float64 reference: every view of the real slot, in each of np.rot90's rotations.
  x = views[:, 0].reshape(-1, *views.shape[3:]).astype(np.float64)
  kernel = np.asarray(state.params["classifier"]["kernel"], np.float64)
  bias = np.asarray(state.params["classifier"]["bias"], np.float64)
  losses, hits = [], []
  for k in range(4):
    r = np.rot90(x, k, axes=(1, 2))
    h = np.tanh(r.reshape(len(r), -1) @ w.astype(np.float64))
    logits = h @ kernel + bias
    log_p = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    losses.append(-log_p[:, k])
    hits.append(logits.argmax(axis=1) == k)
  np.testing.assert_allclose(float(loss), np.mean(np.concatenate(losses)), rtol=1e-5)
  np.testing.assert_allclose(float(metrics["rotation_accuracy"]), np.mean(np.concatenate(hits)))
  # The model saw exactly the four rotations of the real views (never the synthetic slot).
  assert len(seen) == 1
  want = np.concatenate([np.rot90(x, k, axes=(1, 2)) for k in range(4)]).astype(np.float32)
  np.testing.assert_array_equal(seen[0], want)


def test_gradients_reach_the_model_and_the_classifier():
  inputs, state, *_ = _inputs(seed=1)
  model_params = inputs.ctx.params

  def f(params, classifier):
    state = objectives.ObjectiveState(params=classifier, buffers={})
    return inputs._replace(params=params).loss(rotation.OBJECTIVE, state).value

  g_params, g_state = jax.grad(f, argnums=(0, 1))(model_params, state.params)
  assert float(jnp.abs(g_params["w"]).max()) > 0
  assert float(jnp.abs(g_state["classifier"]["kernel"]).max()) > 0
  # The classifier's step: the objective's optimiser (plain SGD at its learning_rate).
  tx = rotation.OBJECTIVE.optimizer(inputs.ctx.config)
  new = optax.apply_updates(state.params, tx.update(g_state, tx.init(state.params))[0])
  np.testing.assert_allclose(
    new["classifier"]["kernel"],
    state.params["classifier"]["kernel"] - 0.1 * g_state["classifier"]["kernel"],
    rtol=1e-6,
  )
  assert float(optax.tree.norm(g_state)) > 0
  # A small SGD step lowers the loss.
  assert f(model_params, new) < f(model_params, state.params)


def test_initial_state_gives_log4():
  state = rotation.init(10, 5, None, None)
  inputs, *_ = _inputs(feat=5)
  loss = inputs.loss(rotation.OBJECTIVE, state).value
  np.testing.assert_allclose(float(loss), np.log(4), rtol=1e-6)


def test_runlocal_rotation_run_learns(tmp_path):
  """The digits runlocal command with objective=rotation: the 4-way loss falls from log 4."""
  workdir = tmp_path / "rot"
  r = run_cli(
    "syncon_jax.main",
    "--config=configs/digits.py:runlocal,objective=rotation",
    f"--workdir={workdir}",
    "--config.total_steps=24",
    "--config.checkpoint_every_steps=24",
    "--config.objective.rotation.learning_rate=0.5",
  )
  assert r.returncode == 0, r.stderr[-3000:]
  rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
  assert [row["step"] for row in rows] == list(range(4, 25, 4))
  losses = [row["loss"] for row in rows]
  assert np.mean(losses[-2:]) < np.mean(losses[:2]) and losses[-1] < np.log(4) - 0.1, losses
  assert rows[-1]["rotation_accuracy"] > 0.25
