"""Objectives wire model outputs to losses/ as DESIGN.md says."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import StepInputs

from configs import digits
from syncon_jax import losses, objectives, weighting
from syncon_jax.errors import ConfigError


def _batch(b=6, s=2, v=2, d=5, seed=0):
  rng = np.random.default_rng(seed)
  z = rng.normal(size=(b, 1 + s, v, d))
  z /= np.linalg.norm(z, axis=-1, keepdims=True)
  labels = rng.integers(0, 3, size=b)
  return jnp.asarray(z, jnp.float32), jnp.asarray(labels), jnp.ones((b, s), bool)


def _config(name, weighting="fixed"):
  return objectives.settings(digits.get_config(f"objective={name},weighting={weighting}").objective)


def _init(obj, num_classes, feat_dim, cfg):
  return objectives.init(obj, num_classes, feat_dim, None, cfg)


def _loss(name, z, labels, valid, state=None):
  obj = objectives.get_objective(name)
  cfg = _config(name)
  state = _init(obj, 3, 5, cfg) if state is None else state
  return StepInputs(cfg, z, labels, valid).loss(obj, state)


def test_supcon_uses_only_the_real_slot():
  z, labels, valid = _batch()
  loss = _loss("supcon", z, labels, valid).value
  want = losses.supcon_loss(z[:, 0], labels, temperature=0.1, base_temperature=0.1)
  np.testing.assert_allclose(loss, want, rtol=1e-6)
  assert not objectives.get_objective("supcon").uses_synthetic(_config("supcon"))


def test_supcon_syn_counts_synthetic_images_as_real_samples():
  z, labels, valid = _batch()
  loss = _loss("supcon_syn", z, labels, valid).value
  b, k, v, d = z.shape
  want = losses.supcon_loss(
    z.reshape(b * k, v, d), jnp.repeat(labels, k), temperature=0.1, base_temperature=0.1
  )
  np.testing.assert_allclose(loss, want, rtol=1e-6)


def test_supcon_syn_drops_placeholder_slots():
  z, labels, valid = _batch(b=4, s=1)
  valid = valid.at[2, 0].set(False)  # sample 2's class has no synthetic image
  loss = _loss("supcon_syn", z, labels, valid).value
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
  loss, aux, _ = _loss("syncon", z, labels, valid)
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
  loss = _loss("syncon", z, labels, jnp.ones((6, 0), bool)).value
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
    _init(objectives.get_objective("syncon"), 3, 5, cfg)
  cfg.synthetic_weight = 0.25
  state = _init(objectives.get_objective("syncon"), 4, 5, cfg)
  w = jax.device_get(state.buffers["weighting"]["w"])
  np.testing.assert_array_equal(w, np.full(4, 0.25, np.float32))
