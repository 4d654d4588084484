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
# The suite is compile bound, so it compiles for speed of compilation:
# - XLA's backend optimisation level 0 cut the compile time of a runlocal step by ~40%
#   (measured: 44 -> 27 CPU s for a 10-step syncon run);
# - the older loop emitters (fusion emitters off) halve XLA's compilation of the runlocal train
#   step again (6.0 -> 3.0 s; the run's first step 10.9 -> 6.4 s, linear_eval's finetune
#   protocol 22.5 -> 14.2 s; 2-core AMD EPYC, 2026-12-03), where a real step runs ~4% slower
#   with them (README "Performance on this CPU"), so training keeps the default.
# Both change how the CPU code is emitted, not the math: losses agree to float32 rounding.
# Tests that compare numbers compare runs of this same setting; test_platform runs without it.
TEST_XLA_FLAGS = "--xla_backend_optimization_level=0 --xla_cpu_use_fusion_emitters=false"
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


def stopped_after(src: str, dst: str, step: int) -> str:
  """Copies the finished run in src to dst as a run stopped after `step` leaves it (its
  checkpoints and metrics rows up to `step`); -> dst, to be resumed.

  What a resume test needs without training a third run: the uninterrupted run is the
  reference, and its own checkpoint is where the resumed run starts. A real kill is
  train_killed_and_resumed's (tests/test_train.py)."""
  import json
  import shutil

  shutil.copytree(src, dst)
  ckpts = os.path.join(dst, "checkpoints")
  for name in os.listdir(ckpts):
    if name.isdigit() and int(name) > step:
      shutil.rmtree(os.path.join(ckpts, name))
  assert str(step) in os.listdir(ckpts), f"{src} kept no checkpoint at step {step}"
  path = os.path.join(dst, "metrics.jsonl")
  with open(path) as f:
    rows = [line for line in f if json.loads(line)["step"] <= step]
  with open(path, "w") as f:
    f.writelines(rows)
  return dst


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


class StepInputs:
  """One step's (outputs, batch, ctx) of the objective contract, built by hand for unit tests.

  z [b, 1 + S, V, dim] unit projections; the batch holds real_labels, synthetic_valid,
  synthetic_prompt (and real_images when given); ctx fields not given are None.
  """

  def __init__(
    self,
    config,
    z,
    labels,
    synthetic_valid,
    *,
    features=None,
    synthetic_prompt=None,
    step=0,
    predictions=None,
    real_images=None,
    **ctx,
  ):
    import jax.numpy as jnp

    from syncon_jax import objectives

    b, k = z.shape[:2]
    self.outputs = objectives.Outputs(
      projections=z,
      features=jnp.abs(z) if features is None else features,
      predictions=predictions,
    )
    self.batch = {
      "real_labels": jnp.asarray(labels, jnp.int32),
      "synthetic_valid": jnp.asarray(synthetic_valid),
      "synthetic_prompt": (
        jnp.full((b, k - 1), -1, jnp.int32)
        if synthetic_prompt is None
        else jnp.asarray(synthetic_prompt, jnp.int32)
      ),
    }
    if real_images is not None:
      self.batch["real_images"] = real_images
    fields = dict.fromkeys(objectives.LossContext._fields)
    fields.update(config=config, step=jnp.asarray(step, jnp.int32), **ctx)
    self.ctx = objectives.LossContext(**fields)

  def replace(self, **fields):
    """A copy with outputs/batch/ctx fields replaced (z, features, labels, ... by their names)."""
    import copy

    new = copy.copy(self)
    names = {"z": "projections"}
    outputs = {
      names.get(k, k): v for k, v in fields.items() if names.get(k, k) in new.outputs._fields
    }
    new.outputs = new.outputs._replace(**outputs)
    batch_names = {"labels": "real_labels"}
    new.batch = {**new.batch}
    for k, v in fields.items():
      if batch_names.get(k, k) in new.batch:
        new.batch[batch_names.get(k, k)] = v
    ctx = {k: v for k, v in fields.items() if k in new.ctx._fields}
    if "step" in ctx:
      import jax.numpy as jnp

      ctx["step"] = jnp.asarray(ctx["step"], jnp.int32)
    new.ctx = new.ctx._replace(**ctx)
    return new

  _replace = replace  # as the NamedTuple it replaces

  @property
  def z(self):
    return self.outputs.projections

  @property
  def features(self):
    return self.outputs.features

  @property
  def labels(self):
    return self.batch["real_labels"]

  @property
  def synthetic_valid(self):
    return self.batch["synthetic_valid"]

  @property
  def synthetic_prompt(self):
    return self.batch["synthetic_prompt"]

  def loss(self, objective, state):
    """objective.loss (an Objective, or a function) on these inputs."""
    fn = getattr(objective, "loss", objective)
    return fn(self.outputs, self.batch, state, self.ctx)

  def update_context(self, new_params=None, carry=None):
    from syncon_jax import objectives

    return objectives.UpdateContext(*self.ctx, new_params=new_params, carry=carry)

  def scheme_update(self, scheme, state, **update_fields):
    """A weighting scheme's update on these inputs."""
    return scheme.update(state, self.outputs, self.batch, self.update_context(**update_fields))
