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
