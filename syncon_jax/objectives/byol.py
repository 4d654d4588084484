"""BYOL (Grill et al. 2020), and BYOL with nearest-neighbour positives (byol_nn).

BYOL: the online network (encoder, projection head and predictor; the model's predictor exists
when model.predictor_hidden_dim > 0, see syncon_jax/models) predicts the target network's
projection of the other view of the same image; the loss is the symmetric losses.byol_loss,
sum over the views of 2 - 2 cos(prediction of view v, target of view v + 1 mod V), averaged over
the batch. The target (encoder and head, no predictor) is an EMA of the online network, updated
after each optimiser step with BYOL's cosine schedule from objective.<name>.tau_base (0.996) to 1 at
total_steps (`momentum.cosine_tau`).

byol_nn (the project's seed, ../shared/seeds/byol-nearest-neighbour-positives.md): the target of
online view v also draws on a nearest neighbour of the image. The neighbour comes from
objective.byol_nn.neighbor_source:
  'table'  a neighbours file (objective.byol_nn.neighbors_file, written by tools/nearest_neighbors from a
           latent model's latents of the real train images): the batch carries one neighbour
           image per real image (this objective's `host_inputs`, data/neighbors.py: under the
           batch key "byol_nn"), augmented into V views by `ctx.augment` in the loss; its target
           projection of view v is the neighbour of view v.
  'queue'  NNCLR's support set (Dwibedi et al. 2021): the nearest row (cosine) to the other
           view's target projection in a FIFO queue of earlier target projections
           (objective.byol_nn.queue_size rows, view 0 of each real image enqueued after each step); no
           latent model needed. Before the first enqueue the neighbour is the target itself.
and the two approaches (objective.byol_nn.nn_approach) are:
  'probabilistic'  per image and view, the target is the neighbour's projection with probability
                   objective.byol_nn.nn_prob, else the other view's (an independent draw from the step key)
  'weighted'       the target is pos_weight * other view + (1 - pos_weight) * neighbour, of the
                   unit-norm target projections (objective.byol_nn.pos_weight, the seed's default 0.5).
Unlike the seed's probabilistic script, which swaps the image itself so that the online network
also sees the neighbour, the swap here is on the target side only: the online network sees each
image's own views, and so the same batch (and BatchNorm statistics) serve both approaches.
"""

import copy

import jax
import jax.numpy as jnp
import ml_collections

from syncon_jax import losses
from syncon_jax.data import neighbors
from syncon_jax.errors import ConfigError
from syncon_jax.objectives import Loss, Objective, ObjectiveState, momentum, settings

# BYOL's augmentations (Grill et al. 2020, appendix B; DeepMind's byol/utils/augmentations.py):
# the colour jitter with saturation 0.2, and two asymmetric views: always blurred and never
# solarised, or blurred one time in ten and solarised one in five. The crop, the flip and the blur
# sigma stay the data set's (BYOL's are ImageNet's).
AUGMENT = dict(
  jitter_prob=0.8,
  brightness=0.4,
  contrast=0.4,
  saturation=0.2,
  hue=0.1,
  grayscale_prob=0.2,
  solarize_threshold=0.5,
  views=({"blur_prob": 1.0, "solarize_prob": 0.0}, {"blur_prob": 0.1, "solarize_prob": 0.2}),
)

NEIGHBOR_SOURCES = ("queue", "table")
NN_APPROACHES = ("probabilistic", "weighted")
# ctx.key is the objective's stream for this step; the neighbour images' augmentation folds in
# this id, leaving the key itself to the probabilistic draw.
NEIGHBOR_AUGMENT_STREAM = 1


def defaults(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """config.objective.byol; gives the model BYOL's predictor (as wide as the projector's hidden
  layer, 4096 in the paper) and config.augment BYOL's views (AUGMENT)."""
  c.model.predictor_hidden_dim = c.model.get_ref("proj_hidden_dim")
  # A copy: --config.augment.views[1].KEY=... edits the view's dict in place.
  c.augment.update(copy.deepcopy(AUGMENT))
  o = ml_collections.ConfigDict()
  o.total_steps = c.get_ref("total_steps")  # the tau schedule's end; follows c.total_steps
  o.tau_base = 0.996  # BYOL's tau at step 0, cosine to 1 at total_steps
  return o


def defaults_nn(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """config.objective.byol_nn: BYOL's, and where the neighbours come from."""
  o = defaults(c)
  o.neighbor_source = "queue"  # 'queue' (NNCLR: own embeddings) | 'table' (a file)
  o.queue_size = 65536  # 'queue': the support set's rows; a config sets its data set's
  o.queue_seed = 0
  # 'table': tools/nearest_neighbors' npz for the real train split.
  o.neighbors_file = ml_collections.config_dict.placeholder(str)
  o.neighbor_k = 1  # 'table': use the k nearest, one drawn uniformly per image and step
  o.nn_approach = "probabilistic"  # 'probabilistic' | 'weighted' (the seed's two)
  o.nn_prob = 0.5  # 'probabilistic': chance that a target is the neighbour's
  o.pos_weight = 0.5  # 'weighted': weight of the image's own view in the target
  return o


def check_nn_config(config) -> None:
  momentum.check_views(config)
  if config.neighbor_source not in NEIGHBOR_SOURCES:
    raise ConfigError(
      f"Unknown objective.byol_nn.neighbor_source {config.neighbor_source!r}; valid: {list(NEIGHBOR_SOURCES)}"
    )
  if config.nn_approach not in NN_APPROACHES:
    raise ConfigError(
      f"Unknown objective.byol_nn.nn_approach {config.nn_approach!r}; valid: {list(NN_APPROACHES)}"
    )
  if (config.neighbor_source == "table") != bool(config.get("neighbors_file")):
    raise ConfigError(
      "objective.byol_nn.neighbor_source='table' needs objective.byol_nn.neighbors_file (the npz of "
      "tools/nearest_neighbors), and only it reads one; got "
      f"neighbor_source={config.neighbor_source!r}, neighbors_file={config.get('neighbors_file')!r}"
    )
  if not 0.0 <= config.nn_prob <= 1.0 or not 0.0 <= config.pos_weight <= 1.0:
    raise ConfigError(
      f"objective.byol_nn.nn_prob and objective.byol_nn.pos_weight must lie in [0, 1], got {config.nn_prob}, "
      f"{config.pos_weight}"
    )


def init(num_classes: int, feat_dim: int, model_params, config) -> ObjectiveState:
  del num_classes, feat_dim, config
  return ObjectiveState(params={}, buffers={"target": momentum.init_target(model_params)})


def init_nn(num_classes: int, feat_dim: int, model_params, config) -> ObjectiveState:
  state = init(num_classes, feat_dim, model_params, config)
  if config.neighbor_source == "queue":
    queue = momentum.init_queue(
      config.queue_size, momentum.proj_dim(model_params), seed=config.queue_seed, random=False
    )
    state = state._replace(buffers={**state.buffers, **queue})
  return state


def host_inputs(config, train):
  """'table': -> fn(step, host batch) -> {"byol_nn": {"neighbor_images" uint8 [b, H, W, 3]}},
  one of each real image's objective.byol_nn.neighbor_k nearest neighbours (data/neighbors.py)."""
  oc = settings(config.objective)
  if oc.neighbor_source != "table":
    return None
  table = neighbors.load_neighbor_table(oc.neighbors_file, len(train.labels), oc.neighbor_k)

  def add(step, host):
    ids = neighbors.draw(
      table,
      host["real_id"],
      host["index"],
      step=step,
      batch_size=config.batch_size,
      seed=config.seed,
    )
    return {"byol_nn": {"neighbor_images": train.images[ids]}}

  return add


def _predictions(outputs, config) -> jax.Array:
  """The online predictions of the real images' views: [b, V, dim]."""
  if outputs.predictions is None:
    raise ConfigError(
      f"objective {config.name!r} needs the model's predictor: set model.predictor_hidden_dim > 0"
    )
  return outputs.predictions[:, 0]


def _other_view(t: jax.Array) -> jax.Array:
  """t [b, V, dim] -> the positive of view v: t[:, (v + 1) % V]."""
  return jnp.roll(t, -1, axis=1)


def _byol(p: jax.Array, target: jax.Array) -> jax.Array:
  """p, target [b, V, dim] -> mean over the batch of the sum over views of 2 - 2 cos."""
  per_view = [losses.byol_loss(p[:, v], target[:, v]) for v in range(p.shape[1])]
  return jnp.mean(sum(per_view))


def loss(outputs, batch, state, ctx):
  del batch
  p = _predictions(outputs, ctx.config)
  t = momentum.target_projections(ctx, state.buffers["target"], momentum.views_of_real(ctx))
  return Loss(_byol(p, _other_view(t)), {})


def _queue_neighbors(x: jax.Array, buffers: dict) -> jax.Array:
  """x [..., dim] unit rows -> the nearest filled queue row of each (x itself while empty)."""
  queue, count = buffers["queue"], buffers["count"]
  sims = jnp.einsum("...d,kd->...k", x, queue, precision=jax.lax.Precision.HIGHEST)
  sims = jnp.where(jnp.arange(queue.shape[0]) < count, sims, -jnp.inf)
  nn = queue[jnp.argmax(sims, axis=-1)]
  return jnp.where(count > 0, nn, x)


def loss_nn(outputs, batch, state, ctx):
  config, target = ctx.config, state.buffers["target"]
  p = _predictions(outputs, ctx.config)
  t = momentum.target_projections(ctx, target, momentum.views_of_real(ctx))
  positive = _other_view(t)
  if config.neighbor_source == "table":
    # V views of each real image's neighbour, per-sample keys from the sample's position.
    key = jax.random.fold_in(ctx.key, NEIGHBOR_AUGMENT_STREAM)
    views = ctx.augment(key, batch["byol_nn"]["neighbor_images"][:, None])[:, 0]
    neighbor = momentum.target_projections(ctx, target, views)
  else:
    neighbor = _queue_neighbors(positive, state.buffers)
  if config.nn_approach == "probabilistic":
    swap = jax.random.bernoulli(ctx.key, config.nn_prob, positive.shape[:2])
    target = jnp.where(swap[..., None], neighbor, positive)
  else:
    target = config.pos_weight * positive + (1.0 - config.pos_weight) * neighbor
  metrics = {"neighbor_cos": jnp.mean(jnp.sum(positive * neighbor, axis=-1))}
  carry = {"keys": t[:, 0]} if config.neighbor_source == "queue" else {}
  return Loss(_byol(p, target), metrics, carry)


def update(state, outputs, batch, ctx):
  """The target's EMA step with BYOL's tau at this step; byol_nn's queue takes view 0's targets."""
  del outputs, batch
  buffers = state.buffers
  tau = momentum.cosine_tau(ctx.step, ctx.config.tau_base, ctx.config.total_steps)
  new = {**buffers, "target": momentum.ema_update(buffers["target"], ctx.new_params, tau)}
  if "queue" in buffers:
    new = momentum.enqueue(new, ctx.carry["keys"])
  return new, {"tau": tau}


OBJECTIVE = Objective(
  loss=loss, defaults=defaults, init=init, update=update, check_config=momentum.check_views
)
OBJECTIVE_NN = Objective(
  loss=loss_nn,
  defaults=defaults_nn,
  init=init_nn,
  update=update,
  check_config=check_nn_config,
  host_inputs=host_inputs,
)
