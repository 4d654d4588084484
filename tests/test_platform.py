"""syncon_jax/platform.py: the XLA CPU defaults (loss curve unchanged) and the compilation cache."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from syncon_jax import platform

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

FLAG = "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution"


def test_defaults_are_added_to_the_users_flags_but_never_replace_them():
  assert platform.xla_flags_with_defaults("", (FLAG,)) == FLAG
  user = "--xla_force_host_platform_device_count=8"
  assert platform.xla_flags_with_defaults(user, (FLAG,)) == f"{user} {FLAG}"
  mine = "--xla_cpu_experimental_ynn_fusion_type=individual_dot"
  assert platform.xla_flags_with_defaults(mine, (FLAG,)) == mine


def test_configure_xla_cpu_sets_the_environment_unless_turned_off():
  env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
  platform.configure_xla_cpu(env)
  assert env["XLA_FLAGS"].split() == [
    "--xla_force_host_platform_device_count=2",
    *platform.CPU_XLA_FLAGS,
  ]
  off = {platform.DEFAULTS_ENV: "0"}
  platform.configure_xla_cpu(off)
  assert "XLA_FLAGS" not in off


def test_compilation_cache_dir_defaults_outside_the_workdir_and_yields_to_the_user():
  home = os.path.expanduser("~")
  assert platform.compilation_cache_dir({}) == os.path.join(
    home, ".cache", "syncon_jax", "jax_compilation"
  )
  assert platform.compilation_cache_dir({platform.CACHE_ENV: "/tmp/c"}) == "/tmp/c"
  assert platform.compilation_cache_dir({platform.CACHE_ENV: ""}) is None
  assert platform.compilation_cache_dir({"JAX_COMPILATION_CACHE_DIR": "/x"}) is None


# Five SGD steps of a tiny ResNet under SupCon, printed as JSON: the loss curve.
LOSS_CURVE = """
import json, sys
import jax, jax.numpy as jnp, ml_collections, numpy as np, optax
from flax import nnx
from syncon_jax import losses, models, platform
platform.configure_xla_cpu()
cfg = ml_collections.ConfigDict(dict(name='resnet_tiny', stem='cifar', width=4,
  proj_hidden_dim=16, proj_dim=8, dtype='float32', bn_momentum=0.9))
graphdef, params, rest = nnx.split(models.create_model(cfg, rngs=nnx.Rngs(0)), nnx.Param, ...)
tx = optax.sgd(0.1, momentum=0.9)
rng = np.random.default_rng(0)
x = jnp.asarray(rng.normal(size=(16, 16, 16, 3)).astype(np.float32))
y = jnp.asarray(rng.integers(0, 3, 8))
@jax.jit
def step(params, rest, opt):
  def loss_fn(p):
    _, z = nnx.merge(graphdef, p, rest, copy=True)(x, train=True)
    return losses.supcon_loss(losses.l2_normalize(z).reshape(8, 2, -1), y, temperature=0.1)
  loss, g = jax.value_and_grad(loss_fn)(params)
  u, opt = tx.update(g, opt, params)
  return optax.apply_updates(params, u), opt, loss
opt, curve = tx.init(params), []
for _ in range(5):
  params, opt, loss = step(params, rest, opt)
  curve.append(float(loss))
print(json.dumps({'xla_flags': __import__('os').environ.get('XLA_FLAGS', ''), 'curve': curve}))
"""


def _loss_curve(defaults_on: bool) -> dict:
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  env.pop("XLA_FLAGS", None)
  env[platform.DEFAULTS_ENV] = "1" if defaults_on else "0"
  out = subprocess.run(
    [sys.executable, "-c", LOSS_CURVE],
    cwd=REPO,
    env=env,
    capture_output=True,
    text=True,
    timeout=600,
  )
  assert out.returncode == 0, out.stderr[-2000:]
  return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not platform.CPU_XLA_FLAGS, reason="no CPU flags set by default")
def test_default_xla_cpu_flags_leave_the_loss_curve_unchanged():
  with_flags, without = _loss_curve(True), _loss_curve(False)
  assert with_flags["xla_flags"].split() == list(platform.CPU_XLA_FLAGS)
  assert without["xla_flags"] == ""
  # Another convolution kernel sums in another order: equal to float32 rounding, not bitwise.
  # The first two losses (the same parameters, then one step) agree to rounding; later steps
  # compound the rounding (SGD with momentum at lr 0.1 on 8 samples), measured up to 6e-5.
  np.testing.assert_allclose(with_flags["curve"][:2], without["curve"][:2], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(with_flags["curve"], without["curve"], rtol=1e-3)
  assert with_flags["curve"][-1] < with_flags["curve"][0]  # it trains


# Programs that never import jax (tools/generate runs beside PyTorch): nothing to configure.
JAX_FREE_PROGRAMS = {"syncon_jax/tools/render_digits.py", "syncon_jax/tools/generate/__main__.py"}


def test_every_jax_program_starts_with_the_platform_settings():
  """The experiment tools trained under XLA's default flags and recompiled each run's step,
  because only main and linear_eval configured the platform: every program (a module that runs
  cli.run) now starts with platform.start_jax_program, but the jax-free ones."""
  programs = set()
  for root, _, files in os.walk(os.path.join(REPO, "syncon_jax")):
    for name in files:
      path = os.path.join(root, name)
      with open(path, encoding="utf-8") as f:
        if name.endswith(".py") and "cli.run(" in f.read():
          programs.add(os.path.relpath(path, REPO))
  assert JAX_FREE_PROGRAMS < programs and len(programs) >= 8
  for path in sorted(programs - JAX_FREE_PROGRAMS):
    with open(os.path.join(REPO, path), encoding="utf-8") as f:
      assert "platform.start_jax_program()" in f.read(), path
  # The jax-free programs stay so: importing them loads no jax.
  for path in sorted(JAX_FREE_PROGRAMS):
    module = path[:-3].replace("/", ".").removesuffix(".__main__")
    code = (
      f"import sys, importlib; importlib.import_module({module!r}); print('jax' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert out.stdout.strip() == "False", (path, out.stderr[-500:])
