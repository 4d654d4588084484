"""The trainer: one step on 8 devices equals 1 device, exact resume, logs, bad-input errors."""

import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest
from conftest import REPO, TEST_XLA_FLAGS, run_cli, train_killed_and_resumed
from flax import nnx

from configs import digits
from syncon_jax import loop, models, train


def runlocal_config(synthetic_dir, **overrides):
  config = digits.get_config("runlocal")
  config.data.synthetic_dir = synthetic_dir
  for key, value in overrides.items():
    section, _, name = key.rpartition(".")
    (config[section] if section else config)[name] = value
  return config


def test_one_step_on_8_devices_equals_1_device(synthetic_dir, tmp_path):
  """Same global batch, same loss and parameters after one step, on a 1- and an 8-device mesh."""
  script = textwrap.dedent(f"""
      import jax, numpy as np
      from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
      from configs import digits
      from syncon_jax import train
      from syncon_jax.data import sampler
      assert jax.device_count() == 8
      config = digits.get_config("runlocal")
      config.data.synthetic_dir = {synthetic_dir!r}
      config.model.dtype = "float32"
      real, names, syn = train.load_data(config, True)
      tx, _ = train.make_optimizer(config)
      s = sampler.BatchSampler(real.labels, syn.labels, num_classes=10, batch_size=16,
                               synthetic_per_real=1, seed=0)
      host = s.host_batch(3, real.images, syn.images, process_index=0, process_count=1)
      out = {{}}
      for n in (1, 8):
        mesh = Mesh(np.array(jax.devices()[:n]), ("data",))
        graphdef, state = train.create_train_state(config, 10, tx)
        state = jax.device_put(state, NamedSharding(mesh, P()))
        batch = train.global_batch(host, NamedSharding(mesh, P("data")))
        step = jax.jit(train.make_train_step(graphdef, tx, config))
        state, m = step(state, batch)
        state, m = step(state, batch)
        leaves = [np.asarray(x) for x in jax.tree.leaves((state.params, state.model_state))]
        out[n] = (float(m["loss"]), leaves, len(batch["real_images"].sharding.device_set))
      assert out[1][2] == 1 and out[8][2] == 8
      print("LOSS", out[1][0], out[8][0])
      np.testing.assert_allclose(out[1][0], out[8][0], rtol=1e-5)
      for a, b in zip(out[1][1], out[8][1]):
        np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5)
      print("OK")
  """)
  env = dict(
    os.environ,
    XLA_FLAGS=f"--xla_force_host_platform_device_count=8 {TEST_XLA_FLAGS}",
    JAX_PLATFORMS="cpu",
  )
  r = subprocess.run(
    [sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True, timeout=600
  )
  assert r.returncode == 0 and "OK" in r.stdout, r.stdout + r.stderr[-4000:]


def _params(state):
  # The objective state holds the auto scheme's weights and every statistic they depend on.
  leaves = (state.params, state.model_state, state.opt_state, state.objective)
  return [np.asarray(x) for x in jax.tree.leaves(leaves)]


def test_killed_run_resumes_to_the_same_parameters(synthetic_dir, tmp_path, monkeypatch):
  # 12 steps, checkpoints at 6 and 12, logs every 4; the auto scheme's probation ends at step 8,
  # so the checkpoint at 6 holds statistics in the middle of their accumulation.
  # keep_checkpoints=1: the killed run still has its checkpoint at 6 (nothing newer was saved).
  config = runlocal_config(
    synthetic_dir, keep_checkpoints=1, **{"objective.syncon.probation_steps": 8}
  )
  assert config.objective.syncon.weighting == "auto"
  straight = train.train_and_evaluate(config, str(tmp_path / "straight"))
  straight_params = _params(straight)
  assert os.listdir(tmp_path / "straight" / "checkpoints") == ["12"]  # 6 was deleted

  resumed = train_killed_and_resumed(config, str(tmp_path / "killed"), monkeypatch)
  assert int(resumed.step) == 12
  for a, b in zip(straight_params, _params(resumed), strict=True):
    np.testing.assert_array_equal(a, b)


def test_runs_that_differ_in_their_seed_share_one_step_and_train_as_alone(synthetic_dir, tmp_path):
  """An experiment's seeds in one process: the second seed's run reuses the first's jitted step
  and initialiser (no retrace), and trains exactly as it does in a process of its own; had either
  kept the first run's seed as a constant, seed 1 here would repeat seed 0's run."""
  config = {
    s: runlocal_config(synthetic_dir, seed=s, total_steps=3, log_every_steps=1) for s in (0, 1)
  }
  for cache in (train._JITTED_STEPS, train._JITTED_INITS):
    cache.clear()
  alone = _params(train.train_and_evaluate(config[1], str(tmp_path / "alone")))
  for cache in (train._JITTED_STEPS, train._JITTED_INITS):
    cache.clear()
  seed0 = _params(train.train_and_evaluate(config[0], str(tmp_path / "seed0")))
  [step], [init] = train._JITTED_STEPS.values(), train._JITTED_INITS.values()
  after_seed0 = _params(train.train_and_evaluate(config[1], str(tmp_path / "seed1")))
  assert list(train._JITTED_STEPS.values()) == [step]
  assert list(train._JITTED_INITS.values()) == [init]
  for a, b in zip(alone, after_seed0, strict=True):
    np.testing.assert_array_equal(a, b)
  # Seeds 0 and 1 train differently, so the comparison above tells a seed kept as a constant.
  assert not all(np.array_equal(a, b) for a, b in zip(seed0, alone, strict=True))

  # The shared initialiser takes the seed as an argument and gives what nnx.Rngs(seed) gives
  # (the values every earlier checkpoint and result started from).
  create = lambda: models.create_model(config[1].model, rngs=nnx.Rngs(1))
  by_int = loop.init_in_jit(lambda: nnx.split(create(), nnx.Param, ...)[1:])
  by_arg = train.init_model(config[1])[1:]
  for a, b in zip(jax.tree.leaves(by_int), jax.tree.leaves(by_arg), strict=True):
    np.testing.assert_array_equal(a, b)

  # Any other key makes another program (graphdef and tx follow from the config).
  other = runlocal_config(synthetic_dir, **{"objective.temperature": 0.2})
  graphdef, _, _ = train.init_model(other)
  replicated = jax.sharding.NamedSharding(train.make_mesh(), jax.sharding.PartitionSpec())
  tx, _ = train.make_optimizer(other)
  assert train.jitted_train_step(graphdef, tx, other, replicated) is not step
  assert len(train._JITTED_STEPS) == 2


def _assert_user_error(r, *fragments):
  assert r.returncode != 0
  assert "Traceback" not in r.stderr, r.stderr[-3000:]
  for fragment in fragments:
    assert fragment in r.stderr, r.stderr[-3000:]


@pytest.mark.parametrize(
  "args, fragments",
  [
    (["--config.objective.name=simclrr"], ["simclrr", "'supcon'", "'syncon'"]),
    (["--config.data.synthetic_dir=/nonexistent/syn"], ["/nonexistent/syn"]),
    (["--config.batch_size=12"], ["batch_size=12", "8 devices"]),
  ],
  ids=["unknown-objective", "missing-synthetic-dir", "batch-not-divisible"],
)
def test_bad_input_is_a_clear_error(args, fragments, synthetic_dir, tmp_path):
  r = run_cli(
    "syncon_jax.main",
    "--config=configs/digits.py:runlocal",
    f"--workdir={tmp_path}",
    f"--config.data.synthetic_dir={synthetic_dir}",
    *args,
    devices=8,
  )
  _assert_user_error(r, *fragments)


def test_workdir_of_another_model_is_refused(synthetic_dir, tmp_path):
  config = runlocal_config(synthetic_dir, total_steps=2, checkpoint_every_steps=2)
  train.train_and_evaluate(config, str(tmp_path))
  r = run_cli(
    "syncon_jax.main",
    "--config=configs/digits.py:runlocal,objective=supcon",
    f"--workdir={tmp_path}",
  )
  _assert_user_error(r, "objective.name='syncon'", "objective.name='supcon'")
  r = run_cli(
    "syncon_jax.main",
    "--config=configs/digits.py:runlocal",
    f"--workdir={tmp_path}",
    f"--config.data.synthetic_dir={synthetic_dir}",
    "--config.model.width=8",
  )
  _assert_user_error(r, "model.width=4")
  # Same model and objective, another weighting scheme: its state does not fit the checkpoint.
  r = run_cli(
    "syncon_jax.main",
    "--config=configs/digits.py:runlocal,weighting=fixed",
    f"--workdir={tmp_path}",
    f"--config.data.synthetic_dir={synthetic_dir}",
  )
  _assert_user_error(r, "does not match this run's train state", "objective.weighting")
  # linear_eval reads only the encoder: another model is refused, another objective is not.
  r = run_cli(
    "syncon_jax.linear_eval",
    "--config=configs/digits.py:runlocal",
    f"--workdir={tmp_path}",
    "--config.model.width=8",
  )
  _assert_user_error(r, "model.width=4")
