"""Shared fixtures: a small rendered synthetic-digit folder and a CLI runner."""

import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Every train_and_evaluate call (and every CLI subprocess) builds a fresh jitted step; XLA:CPU
# takes ~20 s to compile one here. A persistent compilation cache shared by the whole session,
# subprocesses included, compiles each distinct program once. Set before jax is imported.
os.environ.setdefault(
  "JAX_COMPILATION_CACHE_DIR", os.path.join(REPO, ".pytest_cache", "jax_compilation")
)
# XLA's backend optimisation level 0 cuts the compile time of a runlocal step by ~40% (measured:
# 44 -> 27 CPU s for a 10-step syncon run) and the suite is compile bound. It changes how the CPU
# code is emitted, not the math: losses agree to float32 rounding (1e-6 relative). Tests that
# compare numbers compare runs of this same setting; test_platform runs without it.
TEST_XLA_FLAGS = "--xla_backend_optimization_level=0"
os.environ["XLA_FLAGS"] = " ".join([os.environ.get("XLA_FLAGS", ""), TEST_XLA_FLAGS]).strip()


@pytest.fixture(scope="session")
def synthetic_dir(tmp_path_factory) -> str:
  from syncon_jax.tools import render_digits

  out = str(tmp_path_factory.mktemp("synthetic_digits"))
  render_digits.render_dataset(out, per_class=8, seed=0, image_size=32, prompts_per_class=2)
  return out


def run_cli(module: str, *args: str, devices: int = 1, timeout: int = 600):
  """Runs `python -m module args` in the repo root with `devices` faked CPU devices."""
  env = dict(os.environ)
  env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices} {TEST_XLA_FLAGS}"
  env["JAX_PLATFORMS"] = "cpu"
  return subprocess.run(
    [sys.executable, "-m", module, *args],
    cwd=REPO,
    env=env,
    capture_output=True,
    text=True,
    timeout=timeout,
  )


def train_killed_and_resumed(config, workdir: str, monkeypatch):
  """Trains `config` in workdir, killed when step 8 is logged (config must checkpoint at step 6
  and log at step 8), then resumed to the end; -> the resumed run's final TrainState."""
  from syncon_jax import train

  real_write = train.metrics.MetricWriter.write

  def die_at_step_8(self, step, row):
    if step == 8:
      raise KeyboardInterrupt("killed")
    return real_write(self, step, row)

  monkeypatch.setattr(train.metrics.MetricWriter, "write", die_at_step_8)
  with pytest.raises(KeyboardInterrupt):
    train.train_and_evaluate(config, workdir)
  monkeypatch.setattr(train.metrics.MetricWriter, "write", real_write)
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["6"]
  return train.train_and_evaluate(config, workdir)
