"""MoCo v2 (Chen et al. 2020, after He et al. 2020): a momentum key encoder and a queue of keys.

Queries are the online projections of the real images' views, keys the momentum (target)
encoder's projections of the other view; negatives are the K = objective.moco.queue_size keys of the
previous steps, held in the objective state (see momentum.py: the state, queue included, is
replicated over the mesh). Logits and cross-entropy come from losses.moco_loss at
objective.temperature (MoCo v2: 0.2, which `defaults` sets).

objective.moco.symmetric (default True): both directions, q(view 0) against k(view 1) and
q(view 1) against k(view 0), averaged, and both views' keys enqueued, as the MoCo authors' CIFAR
demo's symmetric loss; this trainer runs every view through the online network anyway, so the
symmetric loss costs only the key encoder's forward pass. False: MoCo v2 as published, q from
view 0, k from view 1, view 1's keys enqueued.

After each step (`update`): the key encoder moves as an EMA of the online encoder and head,
t <- m t + (1 - m) online with m = objective.moco.momentum (0.999), and the step's keys are
enqueued (their order: view-major, then the batch's order).

BatchNorm: MoCo shuffles the batch across GPUs before the key encoder (shuffle BN) so that a
query and its key never share per-GPU BN statistics, which would let the model cheat. This
trainer computes BN statistics over the whole global batch (synced BN; the batch is sharded but
the step is one program over the global batch), which removes the per-GPU leak as SimCLR's
global BN does; there is no shuffling.
"""

import jax.numpy as jnp
import ml_collections

from syncon_jax import losses
from syncon_jax.objectives import Loss, Objective, ObjectiveState, momentum


def defaults(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """config.objective.moco; sets objective.temperature to MoCo v2's 0.2."""
  c.objective.temperature = 0.2
  o = ml_collections.ConfigDict()
  o.queue_size = 65536  # MoCo's K on ImageNet; a config sets its data set's (CIFAR: 4096)
  o.queue_seed = 0  # the queue starts as random unit rows from this seed
  o.momentum = 0.999  # MoCo v2's m
  o.symmetric = True  # both views as queries (MoCo's CIFAR demo); False: MoCo v2 as published
  return o


def init(num_classes: int, feat_dim: int, model_params, config) -> ObjectiveState:
  del num_classes, feat_dim
  queue = momentum.init_queue(
    config.queue_size, momentum.proj_dim(model_params), seed=config.queue_seed, random=True
  )
  return ObjectiveState(params={}, buffers={"target": momentum.init_target(model_params), **queue})


def _pairs(config) -> list[tuple[int, int]]:
  """(query view, key view) pairs."""
  v = config.n_views
  return [(i, (i + 1) % v) for i in range(v)] if config.symmetric else [(0, 1)]


def loss(outputs, batch, state, ctx):
  """outputs.projections [b, 1, V, dim]: the real slot's online projections (queries)."""
  del batch
  config, buffers = ctx.config, state.buffers
  q = outputs.projections[:, 0]
  k = momentum.target_projections(ctx, buffers["target"], momentum.views_of_real(ctx))
  pairs = _pairs(config)
  terms = [
    losses.moco_loss(q[:, i], k[:, j], buffers["queue"], temperature=config.temperature)
    for i, j in pairs
  ]
  key_views = sorted({j for _, j in pairs})
  keys = jnp.concatenate([k[:, j] for j in key_views], axis=0)
  positive_cos = jnp.mean(jnp.stack([jnp.sum(q[:, i] * k[:, j], -1) for i, j in pairs]))
  return Loss(sum(terms) / len(terms), {"positive_cos": positive_cos}, {"keys": keys})


def update(state, outputs, batch, ctx):
  del outputs, batch
  buffers = state.buffers
  target = momentum.ema_update(buffers["target"], ctx.new_params, ctx.config.momentum)
  return momentum.enqueue({**buffers, "target": target}, ctx.carry["keys"]), {}


OBJECTIVE = Objective(
  loss=loss, defaults=defaults, init=init, update=update, check_config=momentum.check_views
)
