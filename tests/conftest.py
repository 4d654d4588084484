"""Shared fixtures: a small rendered synthetic-digit folder and a CLI runner."""

import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="session")
def synthetic_dir(tmp_path_factory) -> str:
  from syncon_jax.tools import render_digits

  out = str(tmp_path_factory.mktemp("synthetic_digits"))
  render_digits.render_dataset(out, per_class=8, seed=0, image_size=32, prompts_per_class=2)
  return out


def run_cli(module: str, *args: str, devices: int = 1, timeout: int = 600):
  """Runs `python -m module args` in the repo root with `devices` faked CPU devices."""
  env = dict(os.environ)
  env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
  env["JAX_PLATFORMS"] = "cpu"
  return subprocess.run(
    [sys.executable, "-m", module, *args],
    cwd=REPO,
    env=env,
    capture_output=True,
    text=True,
    timeout=timeout,
  )
