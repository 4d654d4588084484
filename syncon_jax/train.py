"""train_and_evaluate: mesh, state, the jitted train step, the loop, checkpoints and logs.

One trainer for every method: what differs between methods lives in objectives/ and losses/.
The step is one `jax.jit` over a 1-D mesh of every device of every process, axis 'data'. The
batch is sharded on that axis, the state replicated; the loss sees the global batch, so every
device's samples are negatives for every other and BatchNorm statistics are global (synced BN).
"""

import collections
import concurrent.futures
import json
import math
import os
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging
from flax import nnx
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from syncon_jax import (
  augment,
  checkpoint,
  data,
  loop,
  metrics,
  models,
  objectives,
  platform,
  validate,
)
from syncon_jax.data import folders, sampler
from syncon_jax.errors import ConfigError
from syncon_jax.evaluators import online
from syncon_jax.losses import l2_normalize


class TrainState(NamedTuple):
  """Everything a resumed run needs; the PRNG key is derived from (seed, step), never stored."""

  step: jax.Array  # int32 scalar: steps completed
  params: nnx.State  # the model's nnx.Param collection
  model_state: nnx.State  # everything else in the model (BatchNorm statistics)
  opt_state: optax.OptState  # of {"model": params, "objective": objective_params}
  objective: Any  # the objective's buffers (EMA target, queue, running statistics)
  # The objective's trainable parameters (a classifier, learned weights), under the optimiser.
  objective_params: Any = {}  # noqa: RUF012 (a NamedTuple field: never mutated)
  online: Any = None  # the online linear probe's classifier (evaluators/online.py), {} when off


# ----------------------------------------------------------------------------------------------
# Optimiser.


def make_schedule(config: ml_collections.ConfigDict) -> optax.Schedule:
  """Linear warmup to optimizer.learning_rate, then cosine decay to 0 at total_steps."""
  oc = config.optimizer
  if oc.schedule != "cosine":
    raise ConfigError(f"Unknown optimizer.schedule {oc.schedule!r}; valid: ['cosine']")
  return optax.warmup_cosine_decay_schedule(
    init_value=0.0,
    peak_value=oc.learning_rate,
    warmup_steps=oc.warmup_steps,
    decay_steps=max(config.total_steps, oc.warmup_steps + 1),
    end_value=0.0,
  )


def _decay_mask(params):
  # Weight decay (and LARS trust ratios) only on kernels: biases and BatchNorm scales are
  # excluded, as in the published recipes of the contrastive baselines (Chen et al. 2020's
  # LARS setup; Goyal et al. 2017 on decay of BatchNorm parameters).
  return jax.tree.map(lambda p: p.ndim > 1, params)


OPTIMIZERS: dict[str, Callable[[ml_collections.ConfigDict, optax.Schedule], Any]] = {
  "sgd": lambda oc, lr: optax.chain(
    optax.add_decayed_weights(oc.weight_decay, mask=_decay_mask),
    optax.sgd(lr, momentum=oc.momentum, nesterov=False),
  ),
  "lars": lambda oc, lr: optax.lars(
    lr,
    weight_decay=oc.weight_decay,
    weight_decay_mask=_decay_mask,
    trust_ratio_mask=_decay_mask,
    momentum=oc.momentum,
  ),
  "adamw": lambda oc, lr: optax.adamw(lr, weight_decay=oc.weight_decay, mask=_decay_mask),
}


def make_optimizer(config: ml_collections.ConfigDict):
  """-> (tx, schedule): tx steps {"model": params, "objective": objective params}, the model by
  optimizer.* on the schedule, the objective's parameters by the objective's own `optimizer`
  (kept apart by optax.multi_transform: the model's weight decay, trust ratios and momentum never
  touch them)."""
  name = config.optimizer.name
  if name not in OPTIMIZERS:
    raise ConfigError(f"Unknown optimizer.name {name!r}; valid: {sorted(OPTIMIZERS)}")
  schedule = make_schedule(config)
  objective = objectives.get_objective(config.objective.name)
  objective_tx = (
    objective.optimizer(objectives.settings(config.objective)) if objective.optimizer else None
  )
  tx = optax.multi_transform(
    {
      "model": OPTIMIZERS[name](config.optimizer, schedule),
      # Parameters without an optimiser of their own stay where init put them.
      "objective": objective_tx if objective_tx is not None else optax.set_to_zero(),
    },
    {"model": "model", "objective": "objective"},
  )
  return tx, schedule


# ----------------------------------------------------------------------------------------------
# State and step.


# What this process has jitted, most recent last, by what the program depends on: runs that differ
# only in their seed (an experiment's) trace, lower and compile each once. Each entry holds its
# compiled executables, so only the last few are kept.
_JITTED_INITS: collections.OrderedDict[tuple, tuple] = collections.OrderedDict()
_JITTED_STEPS: collections.OrderedDict[tuple, Callable] = collections.OrderedDict()
JITTED_KEPT = 8


def _kept(cache: collections.OrderedDict, key: tuple, make: Callable[[], Any]) -> Any:
  """cache[key], made by make() on a miss; the least recently used beyond JITTED_KEPT dropped."""
  if key not in cache:
    cache[key] = make()
    while len(cache) > JITTED_KEPT:
      cache.popitem(last=False)
  cache.move_to_end(key)
  return cache[key]


def init_model(config, sharding=None) -> tuple[nnx.GraphDef, nnx.State, nnx.State]:
  """-> (graphdef, params, model_state) of a fresh model from config.seed, initialised inside one
  jit (loop.init_in_jit), so the state is created directly with its sharding on every host.

  The seed is the jitted initialiser's argument (the same values as nnx.Rngs(seed)), so models
  of one config.model share it (linear_eval makes two, an experiment one per run).
  """

  def make():
    create = lambda seed: models.create_model(config.model, rngs=nnx.Rngs(jax.random.key(seed)))
    graphdef = nnx.graphdef(nnx.eval_shape(lambda: create(0)))
    return graphdef, lambda seed: nnx.split(create(seed), nnx.Param, ...)[1:]

  graphdef, init = _kept(_JITTED_INITS, (config.model.to_json(), sharding), make)
  params, model_state = loop.init_in_jit(init, sharding, np.int32(config.seed))
  return graphdef, params, model_state


def create_train_state(
  config, num_classes: int, tx, sharding=None
) -> tuple[nnx.GraphDef, TrainState]:
  """Initialises model, optimiser and objective state from config.seed."""
  graphdef, params, model_state = init_model(config, sharding)
  feat_dim = nnx.merge(graphdef, params, model_state).feat_dim
  objective = objectives.get_objective(config.objective.name)
  # With the initial model parameters: an EMA target network starts as a copy of them.
  objective_state = objectives.init(
    objective, num_classes, feat_dim, params, objectives.settings(config.objective)
  )
  state = TrainState(
    step=jnp.zeros((), jnp.int32),
    params=params,
    model_state=model_state,
    opt_state=tx.init({"model": params, "objective": objective_state.params}),
    objective_params=objective_state.params,
    objective=objective_state.buffers,
    online=online.init_state(num_classes, feat_dim, config.eval),
  )
  return graphdef, jax.device_put(state, sharding) if sharding is not None else state


def preprocess(images: jax.Array, config) -> jax.Array:
  """[..., H, W, C] float in [0, 1] -> normalised by data.mean / data.std."""
  mean = jnp.asarray(config.data.mean, jnp.float32)
  std = jnp.asarray(config.data.std, jnp.float32)
  return (images - mean) / std


# The PRNG stream of the objective's own draws besides the samples' augmentation (which folds the
# step into the seed's key): fold_in(key(seed), stream) then the step; an id no step count reaches.
OBJECTIVE_STREAM = 2**32 - 1  # LossContext.key


def make_train_step(graphdef: nnx.GraphDef, tx, config):
  """Returns train_step(state, batch) -> (state, metrics), to be jitted by the caller.

  batch: global arrays, leading axis sharded on 'data': sampler.BATCH_KEYS and the objective's
  own (its `host_inputs`), passed to the objective as they are.
  """
  objective = objectives.get_objective(config.objective.name)
  n_views = config.objective.n_views

  def train_step(state: TrainState, batch: dict[str, jax.Array], seed=None):
    # seed: None (config.seed) or a traced int32 scalar; train_and_evaluate passes it traced so
    # that runs differing only in their seed share one compiled program (the persistent cache
    # then serves an experiment's every seed).
    base_key = jax.random.key(config.seed if seed is None else seed)
    images = jnp.concatenate([batch["real_images"][:, None], batch["synthetic_images"]], axis=1)
    b, k = images.shape[:2]  # k = 1 + synthetic_per_real

    def augment_views(key, imgs):
      # imgs uint8 [b, m, H, W, C] -> preprocessed views [b, m, n_views, h, w, C]. One key per
      # (sample, slot, view), from the sample's global position, so a sample's augmentation
      # depends neither on the step's sharding nor on the number of hosts.
      m = imgs.shape[1]
      keys = jax.vmap(lambda i: jax.random.split(jax.random.fold_in(key, i), m * n_views))(
        batch["index"]
      )
      views = augment.augment_views(
        keys.reshape(b, m, n_views), imgs, config.augment, out_size=config.data.image_size
      )
      return preprocess(views, config)

    step_key = jax.random.fold_in(base_key, state.step)
    views = augment_views(step_key, images)
    x = views.reshape(b * k * n_views, *views.shape[3:])
    objective_key = jax.random.fold_in(jax.random.fold_in(base_key, OBJECTIVE_STREAM), state.step)

    def apply(params, images):
      # The model under other parameters (a target network): parts absent from `params` come
      # from the current model; BatchNorm uses the batch's statistics and its updates are dropped.
      model = nnx.merge(graphdef, state.params, state.model_state, copy=True)
      nnx.update(model, nnx.State(params))
      h, z = model(images, train=True)
      return h.astype(jnp.float32), z.astype(jnp.float32)

    # What the objective sees besides outputs, batch and state; params: the model's Param state
    # that made the outputs.
    shared = dict(
      config=objectives.settings(config.objective),
      step=state.step,
      key=objective_key,
      views=views,
      apply=jax.tree_util.Partial(apply),
      augment=jax.tree_util.Partial(augment_views),
    )

    def loss_fn(params, objective_params):
      model = nnx.merge(graphdef, params, state.model_state, copy=True)
      h, z = model(x, train=True)
      z = z.astype(jnp.float32)
      predictions = None
      if model.has_predictor:
        predictions = model.predict(z, train=True).astype(jnp.float32)
        predictions = predictions.reshape(b, k, n_views, predictions.shape[-1])
      z = l2_normalize(z)
      outputs = objectives.Outputs(
        projections=z.reshape(b, k, n_views, z.shape[-1]),
        features=h.astype(jnp.float32).reshape(b, k, n_views, h.shape[-1]),
        predictions=predictions,
      )
      out = objective.loss(
        outputs,
        batch,
        objectives.ObjectiveState(objective_params, state.objective),
        objectives.LossContext(params=params, **shared),
      )
      return out.value, (out.metrics, outputs, out.carry, nnx.state(model, nnx.Not(nnx.Param)))

    # The model's parameters and the objective's trainable ones; its buffers are constants here.
    (loss, (aux, outputs, carry, model_state)), grads = jax.value_and_grad(
      loss_fn, argnums=(0, 1), has_aux=True
    )(state.params, state.objective_params)
    trainable = {"model": state.params, "objective": state.objective_params}
    grads = {"model": grads[0], "objective": grads[1]}
    updates, opt_state = tx.update(grads, state.opt_state, trainable)
    new = optax.apply_updates(trainable, updates)
    buffers = state.objective
    if objective.update is not None:
      buffers, update_aux = objective.update(
        objectives.ObjectiveState(new["objective"], state.objective),
        jax.tree.map(jax.lax.stop_gradient, outputs),
        batch,
        objectives.UpdateContext(
          params=state.params,
          new_params=new["model"],
          carry=jax.tree.map(jax.lax.stop_gradient, carry),
          **shared,
        ),
      )
      aux = {**aux, **update_aux}
    # The online probe and health metrics read the features after the gradients are taken, under
    # stop_gradient: they cannot change the pretraining.
    online_state, online_metrics = online.update(
      state.online,
      outputs.features,
      outputs.projections,
      batch["real_labels"],
      batch["synthetic_valid"],
      config.eval,
    )
    new_state = state._replace(
      step=state.step + 1,
      params=new["model"],
      model_state=model_state,
      opt_state=opt_state,
      objective_params=new["objective"],
      objective=buffers,
      online=online_state,
    )
    step_metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads["model"])}
    if jax.tree.leaves(grads["objective"]):
      step_metrics["objective_grad_norm"] = optax.tree.norm(grads["objective"])
    return new_state, {**step_metrics, **aux, **online_metrics}

  return train_step


def jitted_train_step(graphdef: nnx.GraphDef, tx, config, replicated: NamedSharding) -> Callable:
  """jax.jit of make_train_step, shared by the runs of this process whose steps are one program.

  The step is a function of the config but its seed (a traced argument), the mesh, and whether
  the CPU tuning is on (models.resnet.fusion_fence reads it while tracing); graphdef and tx follow
  from the config. Runs that differ only in their seed, as an experiment's do, then trace, lower
  and compile it once: a repeated runlocal digits run took 7.4 s, 3.2 s with this (2-core AMD
  EPYC; the persistent compilation cache serves the compiled program either way, not the trace).
  """
  program = json.loads(config.to_json())
  del program["seed"]
  key = (json.dumps(program, sort_keys=True), replicated, platform.cpu_defaults_on())
  make = lambda: jax.jit(
    make_train_step(graphdef, tx, config),
    donate_argnums=(0,),
    out_shardings=(replicated, replicated),
  )
  return _kept(_JITTED_STEPS, key, make)


# ----------------------------------------------------------------------------------------------
# Data.


def make_mesh() -> Mesh:
  # Auto axis types: XLA propagates the batch sharding and inserts the loss's collectives.
  # (jax.make_mesh defaults to Explicit axes, which would make every op state its sharding.)
  return jax.make_mesh((jax.device_count(),), ("data",), axis_types=(jax.sharding.AxisType.Auto,))


def check_batch_size(config) -> None:
  if config.batch_size % jax.device_count():
    raise ConfigError(
      f"batch_size={config.batch_size} is not divisible by the {jax.device_count()} devices; "
      "set --config.batch_size to a multiple of the device count."
    )


def load_data(config, uses_synthetic: bool):
  """-> (train Split, class_names, synthetic SyntheticSet or None).

  In the few-shot regime (data.real_per_class) train holds only the k images per class; the
  validation pool and the test split never reach training.
  """
  train, _, _, class_names = data.load_splits(config)
  synthetic = None
  if uses_synthetic:
    if not config.data.synthetic_dir:
      raise ConfigError(
        f"objective {config.objective.name!r} needs synthetic images: set data.synthetic_dir"
      )
    synthetic = folders.load_synthetic(
      config.data.synthetic_dir, class_names, **folders.decode_options(config.data)
    )
  return train, class_names, synthetic


def global_batch(host: dict, sharding: NamedSharding) -> dict:
  """Process-local rows -> global arrays sharded on 'data' (one global batch across hosts):
  every key of the host batch but the host-only ones (sampler.HOST_KEYS)."""
  to_global = lambda x: jax.make_array_from_process_local_data(sharding, x)
  return {k: jax.tree.map(to_global, v) for k, v in host.items() if k not in sampler.HOST_KEYS}


# ----------------------------------------------------------------------------------------------
# The loop.


def check_workdir_compatible(workdir: str, config, *, encoder_only: bool = False) -> None:
  """A workdir whose checkpoints come from another model or objective is an error, not a crash.

  encoder_only checks the encoder's keys only (linear_eval reads the encoder, whatever head,
  predictor and objective trained it).
  """
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path) or not os.path.isdir(os.path.join(workdir, "checkpoints")):
    return
  with open(path) as f:
    old = json.load(f)
  checks = {"model": ("name", "stem", "width", "variant")}
  if not encoder_only:
    checks = {
      "model": checks["model"] + ("proj_dim", "predictor_hidden_dim"),
      "objective": ("name",),
    }
  for section, keys in checks.items():
    for key in keys:
      before, now = old.get(section, {}).get(key), config[section].get(key)
      if before is not None and before != now:
        raise ConfigError(
          f"Workdir {workdir} holds checkpoints of {section}.{key}={before!r}, but this run has "
          f"{section}.{key}={now!r}. Use another --workdir, or the config that made it."
        )


def summarize_objective(workdir: str, state: TrainState, class_names, config) -> dict:
  """The objective's `summarize` at a log step: writes its files into workdir (process 0) and
  returns its metrics ({} for an objective without the hook)."""
  objective = objectives.get_objective(config.objective.name)
  if objective.summarize is None:
    return {}
  objective_state = objectives.ObjectiveState(state.objective_params, state.objective)
  row, files = objective.summarize(
    objective_state, class_names, objectives.settings(config.objective)
  )
  if jax.process_index() == 0:
    for name, value in files.items():
      with open(os.path.join(workdir, name), "w") as f:
        json.dump(value, f, indent=2)
  return row


def flatten_metrics(step_metrics: dict, class_names) -> dict[str, float]:
  """Scalars as they are; a per-class vector [num_classes] as one key per class, 'name/class'."""
  row = {}
  for key, value in step_metrics.items():
    value = np.asarray(value)
    if value.ndim == 0:
      row[key] = float(value)
    else:
      row.update({f"{key}/{name}": float(v) for name, v in zip(class_names, value, strict=True)})
  return row


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> TrainState:
  """Trains config.total_steps steps, resuming from the latest checkpoint in workdir."""
  objective = objectives.get_objective(config.objective.name)
  validate.check_config(config, workdir=workdir)
  validate.warn_phases(config)
  check_workdir_compatible(workdir, config)

  train, class_names, synthetic = load_data(
    config, objective.uses_synthetic(objectives.settings(config.objective))
  )
  s = config.data.synthetic_per_real if synthetic is not None else 0
  batches = sampler.BatchSampler(
    train.labels,
    synthetic.labels if synthetic is not None else np.zeros((0,), np.int32),
    num_classes=len(class_names),
    batch_size=config.batch_size,
    synthetic_per_real=s,
    seed=config.seed,
  )
  syn_images = synthetic.images if synthetic is not None else train.images[:0]
  host_rows = batches.bind(
    train.images,
    syn_images,
    synthetic.prompt_ids if synthetic is not None else None,
    process_index=jax.process_index(),
    process_count=jax.process_count(),
  )
  # Host data that only this objective reads (a neighbour table's images, say) joins the batch.
  objective_host = objective.host_inputs(config, train) if objective.host_inputs else None
  logging.info(
    "Data %s: %d real train images, %d classes, %d synthetic images, %d synthetic per real.",
    config.data.name,
    len(train.labels),
    len(class_names),
    len(syn_images),
    s,
  )

  mesh = make_mesh()
  replicated = NamedSharding(mesh, P())
  batch_sharding = NamedSharding(mesh, P("data"))
  tx, schedule = make_optimizer(config)
  graphdef, state = create_train_state(config, len(class_names), tx, replicated)
  n_params = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(state.params))
  logging.info(
    "Model %s: %.2fM parameters; mesh %s.", config.model.name, n_params / 1e6, mesh.shape
  )

  ckpt = checkpoint.Checkpointer(
    workdir, keep=config.keep_checkpoints, every_steps=config.checkpoint_every_steps
  )
  latest = ckpt.latest_step()
  if latest is not None:
    state = ckpt.restore(latest, state)
    logging.info("Restored checkpoint at step %d from %s.", latest, ckpt.directory)
  else:
    logging.info("No checkpoint in %s: starting from step 0.", ckpt.directory)
  # Written once the data and the state are known to load, so a run that fails on its input
  # leaves no workdir behind that looks like a run.
  loop.write_config(workdir, config)

  step_fn = jitted_train_step(graphdef, tx, config, replicated)
  seed = jax.make_array_from_callback((), replicated, lambda _: np.asarray(config.seed, np.int32))
  writer = metrics.MetricWriter(workdir, start_step=int(jax.device_get(state.step)))
  start = int(jax.device_get(state.step))
  total = config.total_steps
  progress = loop.Throughput(
    start,
    total,
    images_per_step=config.batch_size,
    views_per_step=config.batch_size * (1 + s) * config.objective.n_views,
    peak_tflops_per_device=config.get("peak_tflops_per_device"),
  )
  prefetch = concurrent.futures.ThreadPoolExecutor(max_workers=1)
  try:

    def host_batch(step):
      host = host_rows(step)
      return {**host, **objective_host(step, host)} if objective_host else host

    # The host assembles (and for lazy data sets decodes) step + 1 while the device runs step.
    next_host = prefetch.submit(host_batch, start)
    for step in range(start, total):
      host = next_host.result()
      if step + 1 < total:
        next_host = prefetch.submit(host_batch, step + 1)
      batch = global_batch(host, batch_sharding)
      if step == start:
        step_fn = loop.compile_step(step_fn, state, batch, seed)
      state, step_metrics = step_fn(state, batch, seed)
      done = step + 1
      if step == start:
        # Throughput and ETA count from the end of the first step, which includes compilation.
        progress.first_step_done(step_metrics, step_fn, state, batch)
      if done % config.log_every_steps == 0 or done == total:
        # Fetch before reading the clock: dispatch is asynchronous, so the host can be many
        # steps ahead of the device, and timing the dispatch overstates the throughput.
        host_metrics = jax.device_get(step_metrics)
        row = flatten_metrics(host_metrics, class_names)
        row["learning_rate"] = float(schedule(step))
        row.update(progress.row(done))
        row.update(summarize_objective(workdir, state, class_names, config))
        writer.write(done, row)
        ckpt.poll()  # a save that finished since the last log line is reported now
        logging.info(
          "step %d/%d  loss %.4f  lr %.4g  %s",
          done,
          total,
          row["loss"],
          row["learning_rate"],
          progress.describe(row),
        )
        if not math.isfinite(row["loss"]):
          raise FloatingPointError(
            f"Loss is {row['loss']} at step {done}; the last good checkpoint is kept in "
            f"{ckpt.directory}. Lower optimizer.learning_rate or check the data."
          )
      # Saves run in the background; the checkpointer logs each one once it is complete.
      ckpt.save(done, state, last=done == total)
  finally:
    prefetch.shutdown(cancel_futures=True)
    # A run that stops for any reason still finalises the checkpoint it was writing.
    ckpt.wait()
    ckpt.close()
    writer.close()
  return state
