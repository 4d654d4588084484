r"""Trains a latent model on the real train images and writes one latent per image.

  python -m syncon_jax.latent.train --config=configs/latent.py:model=vae --workdir=runs/latent_vae
  python -m syncon_jax.tools.nearest_neighbors --latents=runs/latent_vae/latents.npz \
    --metric=cosine --k=10 --out=runs/latent_vae/neighbors.npz

Writes <workdir>/config.json, <workdir>/metrics.jsonl (and TensorBoard events) and
<workdir>/latents.npz: `ids` int64 [N] (indices into data.load_real's train split, in its order),
`latents` float32 [N, latent_dim] and `labels` int32 [N]; np.savez, so np.load(...,
allow_pickle=False) reads it. Each run starts afresh (no checkpoints: these models train in
minutes).
"""

from __future__ import annotations

import functools
import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import app, flags, logging
from flax import nnx

from syncon_jax import data, loop, metrics, platform
from syncon_jax.errors import ConfigError, exit_on_user_error
from syncon_jax.latent import models

FLAGS = flags.FLAGS

# optimizer.name -> optax constructor(learning_rate)
OPTIMIZERS = {"adam": optax.adam, "sgd": optax.sgd}


def check_config(config: ml_collections.ConfigDict) -> None:
  """Raises ConfigError naming the key at fault (the data keys are checked by data.load_real)."""
  for key in ("total_steps", "batch_size", "log_every_steps", "eval_batch_size"):
    value = config.get(key)
    if not isinstance(value, int) or value < 1:
      raise ConfigError(f"config.{key} must be a positive integer, got {value!r}")
  models.check_model_config(config.model, config.data.image_size)
  name = config.optimizer.get("name")
  if name not in OPTIMIZERS:
    raise ConfigError(f"optimizer.name={name!r} is not known; valid: {sorted(OPTIMIZERS)}")
  for key in ("learning_rate", "code_learning_rate"):
    value = config.optimizer.get(key)
    if value is None or not float(value) > 0:
      raise ConfigError(f"optimizer.{key} must be > 0, got {value!r}")


def init_model(config, num_images: int) -> tuple[nnx.GraphDef, nnx.State]:
  """-> (graphdef, params) of a fresh model from config.seed, initialised inside one jit (with
  non-partitionable threefry, which XLA:CPU compiles several times faster; see train.py)."""
  create = lambda: models.create_model(
    config.model,
    num_images=num_images,
    image_size=config.data.image_size,
    rngs=nnx.Rngs(config.seed),
  )
  graphdef = nnx.graphdef(nnx.eval_shape(create))
  return graphdef, loop.init_in_jit(lambda: nnx.split(create(), nnx.Param)[1])


def make_optimizer(config, params: nnx.State) -> optax.GradientTransformation:
  """optimizer.name at optimizer.learning_rate; the auto-decoder's codes at
  optimizer.code_learning_rate (DeepSDF gives codes and decoder their own rates)."""
  make = OPTIMIZERS[config.optimizer.name]
  labels = jax.tree_util.tree_map_with_path(
    lambda path, _: "codes" if getattr(path[0], "key", None) == "codes" else "net", params
  )
  return optax.multi_transform(
    {
      "net": make(config.optimizer.learning_rate),
      "codes": make(config.optimizer.code_learning_rate),
    },
    labels,
  )


def make_train_step(graphdef: nnx.GraphDef, tx: optax.GradientTransformation, seed: int):
  """Returns a jitted step(params, opt_state, images, ids, step) -> (params, opt_state, metrics).

  images uint8 [B, S, S, 3], ids int [B] (train-split indices), step int: the VAE's noise key is
  fold_in(key(seed), step). params and opt_state are donated.
  """
  base_key = jax.random.key(seed)

  @functools.partial(jax.jit, donate_argnums=(0, 1))
  def step_fn(params, opt_state, images, ids, step):
    x = images.astype(jnp.float32) / 255.0
    key = jax.random.fold_in(base_key, step)

    def loss_fn(p):
      return nnx.merge(graphdef, p, copy=True).loss(x, ids, key)

    (_, step_metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, step_metrics

  return step_fn


def compute_latents(
  graphdef: nnx.GraphDef, params: nnx.State, images: Any, batch_size: int
) -> np.ndarray:
  """Latents of images [N, S, S, 3] uint8 (anything indexable by an int array), in order.

  Returns float32 [N, latent_dim]. Batches are padded to batch_size (one compiled shape).
  """

  @jax.jit
  def represent(p, x, ids):
    return nnx.merge(graphdef, p).represent(x.astype(jnp.float32) / 255.0, ids)

  n = len(images)
  out = []
  for start in range(0, n, batch_size):
    ids = np.arange(start, min(start + batch_size, n))
    padded = np.concatenate([ids, np.full(batch_size - len(ids), ids[-1])])
    out.append(np.asarray(represent(params, np.asarray(images[padded]), padded))[: len(ids)])
  return np.concatenate(out).astype(np.float32)


def write_latents(path: str, ids: np.ndarray, latents: np.ndarray, labels: np.ndarray) -> None:
  """Writes the latents file (format in the module docstring), replaced whole."""
  tmp = path + ".tmp.npz"
  np.savez(
    tmp,
    ids=np.asarray(ids, np.int64),
    latents=np.asarray(latents, np.float32),
    labels=np.asarray(labels, np.int32),
  )
  os.replace(tmp, path)


def train_and_write(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
  """Trains config.model on data.load_real(config.data)'s train split for config.total_steps
  and writes <workdir>/latents.npz; returns the last logged metrics."""
  check_config(config)
  train, _, class_names = data.load_real(config.data)
  n = len(train.labels)
  if config.batch_size > n:
    raise ConfigError(f"batch_size={config.batch_size} exceeds the {n} train images")
  loop.write_config(workdir, config)
  logging.info("Data %s: %d train images, %d classes.", config.data.name, n, len(class_names))

  graphdef, params = init_model(config, n)
  n_params = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(params))
  logging.info("Model %s: %.3fM parameters.", config.model.name, n_params / 1e6)
  tx = make_optimizer(config, params)
  opt_state = tx.init(params)
  step_fn = make_train_step(graphdef, tx, config.seed)

  # Epochs of a seeded permutation; a batch never straddles two epochs' orders.
  rng = np.random.default_rng(config.seed)
  per_epoch = n // config.batch_size
  writer = metrics.MetricWriter(workdir)
  row: dict[str, float] = {}
  progress = loop.Throughput(
    0,
    config.total_steps,
    images_per_step=config.batch_size,
    peak_tflops_per_device=config.get("peak_tflops_per_device"),
  )
  order = None
  try:
    for step in range(config.total_steps):
      if step % per_epoch == 0:
        order = rng.permutation(n)
      ids = np.sort(order[(step % per_epoch) * config.batch_size :][: config.batch_size])
      images = np.asarray(train.images[ids])
      if step == 0:
        step_fn = loop.compile_step(step_fn, params, opt_state, images, ids, step)
      params, opt_state, step_metrics = step_fn(params, opt_state, images, ids, step)
      done = step + 1
      if step == 0:
        progress.first_step_done(step_metrics, step_fn, params)
      if done % config.log_every_steps == 0 or done == config.total_steps:
        row = {k: float(v) for k, v in jax.device_get(step_metrics).items()}
        row.update(progress.row(done))
        writer.write(done, row)
        logging.info(
          "step %d/%d  loss %.4f  %s", done, config.total_steps, row["loss"], progress.describe(row)
        )
  finally:
    writer.close()

  latents = compute_latents(graphdef, params, train.images, config.eval_batch_size)
  if not np.all(np.isfinite(latents)):
    raise FloatingPointError("latents are not finite; lower optimizer.learning_rate")
  path = os.path.join(workdir, "latents.npz")
  write_latents(path, np.arange(n), latents, train.labels)
  logging.info("Wrote %s: %d latents of dimension %d.", path, *latents.shape)
  return row


def define_flags() -> None:
  """Defined only when this module runs as the program (see syncon_jax/main.py)."""
  from ml_collections import config_flags

  from syncon_jax import cli

  config_flags.DEFINE_config_file(
    "config", "configs/latent.py", f"Latent model config. {cli.CONFIG_HELP}"
  )
  flags.DEFINE_string("workdir", None, "Where config.json, metrics and latents.npz go.")
  flags.mark_flag_as_required("workdir")


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")  # printed as usage, exit 1
  platform.start_jax_program()
  with exit_on_user_error():
    train_and_write(FLAGS.config, FLAGS.workdir)


if __name__ == "__main__":
  from syncon_jax import cli

  cli.run(main, define_flags)
