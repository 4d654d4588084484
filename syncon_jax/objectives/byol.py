"""BYOL (Grill et al. 2020), and BYOL with nearest-neighbour positives (byol_nn).

BYOL: the online network (encoder, projection head and predictor; the model's predictor exists
when model.predictor_hidden_dim > 0, see syncon_jax/models) predicts the target network's
projection of the other view of the same image; the loss is the symmetric losses.byol_loss,
sum over the views of 2 - 2 cos(prediction of view v, target of view v + 1 mod V), averaged over
the batch. The target (encoder and head, no predictor) is an EMA of the online network, updated
after each optimiser step with BYOL's cosine schedule from objective.byol_tau_base (0.996) to 1 at
objective.total_steps (`momentum.cosine_tau`).

byol_nn (the project's seed, ../shared/seeds/byol-nearest-neighbour-positives.md): the target of
online view v also draws on a nearest neighbour of the image. The neighbour comes from
objective.neighbor_source:
  'table'  a neighbours file (objective.neighbors_file, written by tools/nearest_neighbors from a
           latent model's latents of the real train images): the batch carries one neighbour
           image per real image (data/sampler.py), augmented into V views by the trainer
           (`inputs.neighbor_views`); its target projection of view v is the neighbour of view v.
  'queue'  NNCLR's support set (Dwibedi et al. 2021): the nearest row (cosine) to the other
           view's target projection in a FIFO queue of earlier target projections
           (objective.queue_size rows, view 0 of each real image enqueued after each step); no
           latent model needed. Before the first enqueue the neighbour is the target itself.
and the two approaches (objective.nn_approach) are:
  'probabilistic'  per image and view, the target is the neighbour's projection with probability
                   objective.nn_prob, else the other view's (an independent draw from the step key)
  'weighted'       the target is pos_weight * other view + (1 - pos_weight) * neighbour, of the
                   unit-norm target projections (objective.pos_weight, the seed's default 0.5).
Unlike the seed's probabilistic script, which swaps the image itself so that the online network
also sees the neighbour, the swap here is on the target side only: the online network sees each
image's own views, and so the same batch (and BatchNorm statistics) serve both approaches.
"""

import jax
import jax.numpy as jnp

from syncon_jax import losses
from syncon_jax.errors import ConfigError
from syncon_jax.objectives import momentum

NEIGHBOR_SOURCES = ("queue", "table")
NN_APPROACHES = ("probabilistic", "weighted")


def init_state(num_classes: int, feat_dim: int, config) -> dict:
  del num_classes, feat_dim
  momentum.check_views(config)
  return {}


def init_state_nn(num_classes: int, feat_dim: int, config) -> dict:
  check_nn_config(config)
  return init_state(num_classes, feat_dim, config)


def check_nn_config(config) -> None:
  if config.neighbor_source not in NEIGHBOR_SOURCES:
    raise ConfigError(
      f"Unknown objective.neighbor_source {config.neighbor_source!r}; valid: {list(NEIGHBOR_SOURCES)}"
    )
  if config.nn_approach not in NN_APPROACHES:
    raise ConfigError(
      f"Unknown objective.nn_approach {config.nn_approach!r}; valid: {list(NN_APPROACHES)}"
    )
  if (config.neighbor_source == "table") != bool(config.get("neighbors_file")):
    raise ConfigError(
      "objective.neighbor_source='table' needs objective.neighbors_file (the npz of "
      "tools/nearest_neighbors), and only it reads one; got "
      f"neighbor_source={config.neighbor_source!r}, neighbors_file={config.get('neighbors_file')!r}"
    )
  if not 0.0 <= config.nn_prob <= 1.0 or not 0.0 <= config.pos_weight <= 1.0:
    raise ConfigError(
      f"objective.nn_prob and objective.pos_weight must lie in [0, 1], got {config.nn_prob}, "
      f"{config.pos_weight}"
    )


def init_target(state: dict, params, config) -> dict:
  return {**state, "target": momentum.init_target(params)}


def init_target_nn(state: dict, params, config) -> dict:
  state = init_target(state, params, config)
  if config.neighbor_source == "queue":
    queue = momentum.init_queue(
      config.queue_size, momentum.proj_dim(params), seed=config.queue_seed, random=False
    )
    state = {**state, **queue}
  return state


def _predictions(inputs, config) -> jax.Array:
  """The online predictions of the real images' views: [b, V, dim]."""
  if inputs.predictions is None:
    raise ConfigError(
      f"objective {config.name!r} needs the model's predictor: set model.predictor_hidden_dim > 0"
    )
  return inputs.predictions[:, 0]


def _other_view(t: jax.Array) -> jax.Array:
  """t [b, V, dim] -> the positive of view v: t[:, (v + 1) % V]."""
  return jnp.roll(t, -1, axis=1)


def _byol(p: jax.Array, target: jax.Array) -> jax.Array:
  """p, target [b, V, dim] -> mean over the batch of the sum over views of 2 - 2 cos."""
  per_view = [losses.byol_loss(p[:, v], target[:, v]) for v in range(p.shape[1])]
  return jnp.mean(sum(per_view))


def loss(inputs, state, config):
  p = _predictions(inputs, config)
  t = momentum.target_projections(inputs, state["target"], momentum.views_of_real(inputs))
  return _byol(p, _other_view(t)), {}


def _queue_neighbors(x: jax.Array, state: dict) -> jax.Array:
  """x [..., dim] unit rows -> the nearest filled queue row of each (x itself while empty)."""
  queue, count = state["queue"], state["count"]
  sims = jnp.einsum("...d,kd->...k", x, queue, precision=jax.lax.Precision.HIGHEST)
  sims = jnp.where(jnp.arange(queue.shape[0]) < count, sims, -jnp.inf)
  nn = queue[jnp.argmax(sims, axis=-1)]
  return jnp.where(count > 0, nn, x)


def loss_nn(inputs, state, config):
  p = _predictions(inputs, config)
  t = momentum.target_projections(inputs, state["target"], momentum.views_of_real(inputs))
  positive = _other_view(t)
  if config.neighbor_source == "table":
    if inputs.neighbor_views is None:
      raise ConfigError("neighbor_source='table' needs neighbour images in the batch")
    neighbor = momentum.target_projections(inputs, state["target"], inputs.neighbor_views)
  else:
    neighbor = _queue_neighbors(positive, state)
  if config.nn_approach == "probabilistic":
    swap = jax.random.bernoulli(inputs.key, config.nn_prob, positive.shape[:2])
    target = jnp.where(swap[..., None], neighbor, positive)
  else:
    target = config.pos_weight * positive + (1.0 - config.pos_weight) * neighbor
  metrics = {"neighbor_cos": jnp.mean(jnp.sum(positive * neighbor, axis=-1))}
  carry = {"keys": t[:, 0]} if config.neighbor_source == "queue" else {}
  return _byol(p, target), metrics, carry


def update(state, grads, inputs, config):
  """The target's EMA step with BYOL's tau at this step; byol_nn's queue takes view 0's targets."""
  del grads
  tau = momentum.cosine_tau(inputs.step, config.byol_tau_base, config.total_steps)
  new = {**state, "target": momentum.ema_update(state["target"], inputs.online_params, tau)}
  if "queue" in state:
    new = momentum.enqueue(new, inputs.carry["keys"])
  return new, {"tau": tau}
