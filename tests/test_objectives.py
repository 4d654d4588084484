"""Objectives wire model outputs to losses/ as DESIGN.md says."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import digits
from syncon_jax import losses, objectives, weighting
from syncon_jax.errors import ConfigError


def _batch(b=6, s=2, v=2, d=5, seed=0):
  rng = np.random.default_rng(seed)
  z = rng.normal(size=(b, 1 + s, v, d))
  z /= np.linalg.norm(z, axis=-1, keepdims=True)
  labels = rng.integers(0, 3, size=b)
  return jnp.asarray(z, jnp.float32), jnp.asarray(labels), jnp.ones((b, s), bool)


def _inputs(z, labels, valid, features=None):
  b, k, v, _ = z.shape
  return objectives.StepInputs(
    z=z,
    features=jnp.abs(z) if features is None else features,
    labels=labels,
    synthetic_valid=valid,
    synthetic_prompt=jnp.full((b, k - 1), -1, jnp.int32),
    step=jnp.zeros((), jnp.int32),
  )


def _config(name, weighting="fixed"):
  return digits.get_config(f"objective={name},weighting={weighting}").objective


def test_supcon_uses_only_the_real_slot():
  z, labels, valid = _batch()
  obj = objectives.get_objective("supcon")
  cfg = _config("supcon")
  loss, _ = obj.loss(_inputs(z, labels, valid), obj.init_state(3, 5, cfg), cfg)
  want = losses.supcon_loss(z[:, 0], labels, temperature=0.1, base_temperature=0.1)
  np.testing.assert_allclose(loss, want, rtol=1e-6)
  assert not obj.uses_synthetic


def test_supcon_syn_counts_synthetic_images_as_real_samples():
  z, labels, valid = _batch()
  obj = objectives.get_objective("supcon_syn")
  cfg = _config("supcon_syn")
  loss, _ = obj.loss(_inputs(z, labels, valid), {}, cfg)
  b, k, v, d = z.shape
  want = losses.supcon_loss(
    z.reshape(b * k, v, d), jnp.repeat(labels, k), temperature=0.1, base_temperature=0.1
  )
  np.testing.assert_allclose(loss, want, rtol=1e-6)


def test_supcon_syn_drops_placeholder_slots():
  z, labels, valid = _batch(b=4, s=1)
  valid = valid.at[2, 0].set(False)  # sample 2's class has no synthetic image
  obj = objectives.get_objective("supcon_syn")
  cfg = _config("supcon_syn")
  loss, _ = obj.loss(_inputs(z, labels, valid), {}, cfg)
  b, k, v, d = z.shape
  keep = np.array([True] * (b * k))
  keep[2 * k + 1] = False
  want = losses.supcon_loss(
    z.reshape(b * k, v, d)[keep],
    jnp.repeat(labels, k)[keep],
    temperature=0.1,
    base_temperature=0.1,
  )
  np.testing.assert_allclose(loss, want, rtol=1e-6)


def test_syncon_weights_synthetic_rows_with_the_class_weight():
  z, labels, valid = _batch()
  obj = objectives.get_objective("syncon")
  cfg = _config("syncon")
  state = obj.init_state(3, 5, cfg)
  loss, aux = obj.loss(_inputs(z, labels, valid), state, cfg)
  b, k, v, d = z.shape
  rows = z.reshape(b * k * v, d)
  row_labels = jnp.repeat(labels, k * v)
  is_syn = jnp.tile(jnp.repeat(jnp.arange(k) > 0, v), b)
  want = losses.syncon_loss(
    rows, row_labels, is_syn, jnp.full((b * k * v,), 0.5), temperature=0.1, base_temperature=0.1
  )
  np.testing.assert_allclose(loss, want, rtol=1e-6)
  assert float(aux["synthetic_weight_mean"]) == pytest.approx(0.5)


def test_syncon_without_synthetic_slots_is_supcon():
  z, labels, _ = _batch(s=0)
  cfg = _config("syncon")
  obj = objectives.get_objective("syncon")
  loss, _ = obj.loss(_inputs(z, labels, jnp.ones((6, 0), bool)), obj.init_state(3, 5, cfg), cfg)
  want = losses.supcon_loss(z[:, 0], labels, temperature=0.1, base_temperature=0.1)
  np.testing.assert_allclose(loss, want, rtol=1e-5)


def test_unknown_names_list_the_valid_ones():
  with pytest.raises(ConfigError, match="'supcon_syn'.*'syncon'"):
    objectives.get_objective("simclrr")
  with pytest.raises(ConfigError, match="'fixed'"):
    weighting.get_scheme("magic")


def test_fixed_weight_must_lie_in_unit_interval():
  cfg = _config("syncon")
  cfg.synthetic_weight = 1.5
  with pytest.raises(ConfigError, match="synthetic_weight"):
    objectives.get_objective("syncon").init_state(3, 5, cfg)
  cfg.synthetic_weight = 0.25
  w = jax.device_get(objectives.get_objective("syncon").init_state(4, 5, cfg)["weighting"]["w"])
  np.testing.assert_array_equal(w, np.full(4, 0.25, np.float32))
