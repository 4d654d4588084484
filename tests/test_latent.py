"""syncon_jax/latent: the three latent models train, the auto-decoder's prior acts, the VAE's
latent is its posterior mean, and the CLI writes latents.npz in train-split order."""

import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from conftest import run_cli
from flax import nnx

from configs import latent as latent_configs
from syncon_jax import data
from syncon_jax.errors import ConfigError
from syncon_jax.latent import models
from syncon_jax.latent import train as latent_train

N_TINY = 32


@pytest.fixture(scope="module")
def tiny_images() -> np.ndarray:
  """The first 32 digits train images, uint8 [32, 16, 16, 3]."""
  config = latent_configs.get_config("runlocal")
  train, _, _ = data.load_real(config.data)
  return np.asarray(train.images[:N_TINY])


def tiny_config(model: str, **model_overrides) -> ml_collections.ConfigDict:
  config = latent_configs.get_config(f"model={model},runlocal")
  config.batch_size = N_TINY
  config.optimizer.learning_rate = 1e-2
  config.optimizer.code_learning_rate = 5e-2
  config.model.update(model_overrides)
  return config


def train_steps(config, images: np.ndarray, steps: int):
  """-> (graphdef, initial params, final params, loss before, loss after) on the whole tiny set;
  the losses use one fixed key, so the VAE's are comparable."""
  graphdef, params = latent_train.init_model(config, len(images))
  initial = jax.tree.map(jnp.copy, params)
  tx = latent_train.make_optimizer(config, params)
  opt_state = tx.init(params)
  step_fn = latent_train.make_train_step(graphdef, tx, config.seed)
  ids = np.arange(len(images))
  x = jnp.asarray(images, jnp.float32) / 255.0
  key = jax.random.key(0)
  loss = lambda p: float(nnx.merge(graphdef, p).loss(x, ids, key)[0])
  before = loss(params)
  for step in range(steps):
    params, opt_state, _ = step_fn(params, opt_state, images, ids, step)
  return graphdef, initial, params, before, loss(params)


@pytest.mark.parametrize("model", sorted(models.MODELS))
def test_each_model_lowers_its_loss(tiny_images, model):
  *_, before, after = train_steps(tiny_config(model), tiny_images, steps=25)
  assert np.isfinite(after)
  assert after < 0.7 * before, (before, after)


def test_autodecoder_prior_shrinks_codes(tiny_images):
  # Codes start far from the prior's mode; only a weighted prior pulls them in.
  norms = {}
  for weight in (0.0, 100.0):
    config = tiny_config("autodecoder", prior_weight=weight, code_init_std=1.0)
    _, initial, params, _, _ = train_steps(config, tiny_images, steps=25)
    norms[weight] = float(jnp.linalg.norm(params["codes"][...], axis=1).mean())
    start = float(jnp.linalg.norm(initial["codes"][...], axis=1).mean())
  assert norms[100.0] < 0.5 * start, (norms, start)
  assert norms[100.0] < 0.5 * norms[0.0], norms


def test_vae_latent_is_the_posterior_mean(tiny_images):
  config = tiny_config("vae")
  graphdef, params = latent_train.init_model(config, len(tiny_images))
  # Batch 12 over 32 images: the last batch is padded.
  first = latent_train.compute_latents(graphdef, params, tiny_images, batch_size=12)
  second = latent_train.compute_latents(graphdef, params, tiny_images, batch_size=12)
  np.testing.assert_array_equal(first, second)
  assert first.shape == (N_TINY, config.model.latent_dim) and first.dtype == np.float32
  vae = nnx.merge(graphdef, params)
  mean, logvar = vae.posterior(jnp.asarray(tiny_images, jnp.float32) / 255.0)
  np.testing.assert_allclose(first, np.asarray(mean), rtol=1e-5, atol=1e-6)
  assert float(jnp.exp(0.5 * logvar).min()) > 0.1  # a sample would differ from the mean


def test_compute_latents_keeps_image_order(tiny_images):
  config = tiny_config("ae")
  graphdef, params = latent_train.init_model(config, len(tiny_images))
  perm = np.random.default_rng(0).permutation(len(tiny_images))
  whole = latent_train.compute_latents(graphdef, params, tiny_images, batch_size=len(perm))
  blocked = latent_train.compute_latents(graphdef, params, tiny_images[perm], batch_size=12)
  np.testing.assert_allclose(blocked, whole[perm], rtol=1e-5, atol=1e-6)


def test_bad_configs_raise_config_error():
  with pytest.raises(ConfigError, match="valid: \\['ae', 'autodecoder', 'vae'\\]"):
    latent_train.check_config(latent_configs.get_config("model=gan,runlocal"))
  config = latent_configs.get_config("runlocal")
  config.model.num_stages = 5
  with pytest.raises(ConfigError, match="divisible"):
    latent_train.check_config(config)
  config = latent_configs.get_config("model=vae,runlocal")
  config.model.kl_weight = None
  with pytest.raises(ConfigError, match="kl_weight"):
    latent_train.check_config(config)
  config = latent_configs.get_config("runlocal")
  config.optimizer.name = "rmsprop"
  with pytest.raises(ConfigError, match="adam"):
    latent_train.check_config(config)
  with pytest.raises(ValueError, match="cifar10"):
    latent_configs.get_config("dataset=mnist")


def test_cli_writes_latents_in_train_split_order(tmp_path):
  workdir = str(tmp_path / "run")
  r = run_cli(
    "syncon_jax.latent.train",
    "--config=configs/latent.py:model=autodecoder,runlocal",
    "--config.total_steps=4",
    "--config.log_every_steps=2",
    f"--workdir={workdir}",
  )
  assert r.returncode == 0, r.stderr[-3000:]
  # The trainer's throughput log (syncon_jax/loop.py Throughput), the same as the main trainer's.
  for fragment in ("img/s", "GFLOP (XLA cost analysis)", "% of peak", "ETA"):
    assert fragment in r.stderr, r.stderr[-3000:]
  config = latent_configs.get_config("runlocal")
  train, _, _ = data.load_real(config.data)
  with np.load(os.path.join(workdir, "latents.npz"), allow_pickle=False) as f:
    assert sorted(f.files) == ["ids", "labels", "latents"]
    assert f["ids"].dtype == np.int64 and f["latents"].dtype == np.float32
    np.testing.assert_array_equal(f["ids"], np.arange(len(train.labels)))
    np.testing.assert_array_equal(f["labels"], train.labels)
    assert f["latents"].shape == (len(train.labels), config.model.latent_dim)
    assert np.all(np.isfinite(f["latents"]))
  with open(os.path.join(workdir, "config.json")) as f:
    assert json.load(f)["model"]["name"] == "autodecoder"
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    rows = [json.loads(line) for line in f]
  assert [row["step"] for row in rows] == [2, 4]
  # Throughput is logged: the keys only, their values are the clock's (tests/test_throughput.py
  # checks them against a fake clock).
  assert all({"images_per_sec", "gflops_per_sec"} <= row.keys() for row in rows), rows

  bad = run_cli(
    "syncon_jax.latent.train", "--config=configs/latent.py:model=gan", f"--workdir={workdir}2"
  )
  assert bad.returncode == 2 and "valid: ['ae', 'autodecoder', 'vae']" in bad.stderr
