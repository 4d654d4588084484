"""Synthetic-weight schemes: how much each class's synthetic positives count in SynCon.

A scheme is pure functions over its own state (a dict that syncon keeps in its ObjectiveState, so
it is checkpointed and restored with everything else):

  init(num_classes, feat_dim, config) -> state
  class_weights(state, config) -> float32 [num_classes] in [0, 1]; differentiable in the state
  penalty(state, outputs, batch, ctx) -> scalar added to the loss (the learned schemes'
    regulariser, the auto scheme's probation term)
  update(state, outputs, batch, ctx) -> (state, metrics): the buffers' step (running statistics)
  init_target(state, params, config) -> state, optional: called once with the initial parameters
  trainable: the state's keys that are trainable parameters (under the trainer's optimiser, which
    steps them by `optimizer(config)`); the rest are buffers, moved by `update` alone

`config` is `config.objective`; outputs, batch and ctx are the objective contract's
(objectives/__init__.py; ctx an UpdateContext in `update`), under stop-gradient in `update`.
Schemes:

  fixed      every class gets objective.syncon.synthetic_weight.
  learned    the proposal's SGD reading: w_c = sigmoid(theta_c), theta trained by SGD on
             loss + lambda * sum_c -log w_c (the uncertainty form of Kendall, Gal & Cipolla 2018,
             which keeps w from collapsing to 0), at its own learning rate.
  hypernet   the proposal's hypernetwork (Ha et al. 2016): an MLP maps a descriptor per class
             (running statistics of the embeddings, under stop-gradient) to w_c; trained by the
             same regularised loss as `learned`, so it learns which descriptors predict a low
             synthetic loss.
  proto_sim  no learning: the clipped cosine of the running real and synthetic prototypes.
  auto       probation: w = 0 for objective.syncon.probation_steps while the model trains on real
             images (SupCon) and on the synthetic images without their labels (SimCLR), so that
             its embedding learns the synthetic domain but is not bent by the synthetic labels;
             meanwhile each synthetic image is scored by whether it lands nearest its own class's
             real prototype (domain-centred encoder features); at the end of probation w_c is
             frozen to that agreement above chance, relative to the real images' own (see
             auto_weights and README "Which synthetic classes are bad").
  meta       weights as hyperparameters: the meta-gradient of a real-only loss through a lookahead
             step of the model (Ren et al. 2018), normalised, centred, clipped to [0, 1]; see
             meta_weighting.py.
  meta_hypernet  the same meta-gradient trains the hypernetwork's MLP (Shu et al. 2019).

Running statistics are per-class exponential moving averages (decay objective.syncon.stats_decay) that
only move for the classes present in a batch, with Adam-style debiasing, so a class seen once is
exact and a class never seen stays at zero weight of evidence.
"""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from syncon_jax import losses, meta_weighting
from syncon_jax.errors import ConfigError


class Scheme(NamedTuple):
  init: Any
  class_weights: Any
  penalty: Any
  update: Any
  # init_target(state, params, config) -> state, or None: called once with the model's initial
  # parameters (the meta schemes keep an EMA of them; see meta_weighting.py).
  init_target: Any = None
  trainable: tuple[str, ...] = ()  # keys of the state under the optimiser
  optimizer: Any = None  # optimizer(config) -> optax transformation of the trainable keys


def _no_penalty(state, outputs, batch, ctx):
  del state, outputs, batch, ctx
  return jnp.zeros((), jnp.float32)


# ----------------------------------------------------------------------------------------------
# Running per-class statistics of the embeddings.


def _ema_init(num_classes: int, *shape: int) -> dict:
  return {
    "acc": jnp.zeros((num_classes, *shape), jnp.float32),
    "norm": jnp.zeros((num_classes,), jnp.float32),
  }


def _ema_update(ema: dict, batch_sum: jax.Array, count: jax.Array, decay: float) -> dict:
  """Folds per-class batch means (batch_sum / count) into the EMA of the classes present."""
  present = count > 0
  mean = batch_sum / jnp.maximum(count, 1).reshape((-1,) + (1,) * (batch_sum.ndim - 1))
  d = jnp.where(present, decay, 1.0)
  d_acc = d.reshape((-1,) + (1,) * (batch_sum.ndim - 1))
  return {
    "acc": d_acc * ema["acc"] + (1 - d_acc) * mean,
    "norm": d * ema["norm"] + (1 - d),
  }


def _ema_value(ema: dict) -> jax.Array:
  """The debiased EMA; zeros for a class never seen."""
  norm = ema["norm"].reshape((-1,) + (1,) * (ema["acc"].ndim - 1))
  return jnp.where(norm > 0, ema["acc"] / jnp.maximum(norm, 1e-12), 0.0)


def _class_sums(values: jax.Array, labels: jax.Array, mask: jax.Array, num_classes: int):
  """values [n, ...], labels [n], mask [n] -> (per-class sums [C, ...], counts [C])."""
  onehot = jax.nn.one_hot(labels, num_classes, dtype=jnp.float32) * mask[:, None]
  sums = jnp.tensordot(onehot, values.astype(jnp.float32), axes=(0, 0))
  return sums, onehot.sum(0)


def _rows(outputs, batch):
  """Flattens the encoder features into real and synthetic rows (a view = a row).

  -> real [b*V, F], real_labels [b*V], syn [b*S*V, F], syn_labels [b*S*V], syn_valid [b*S*V]
  """
  h = outputs.features
  b, k, v, f = h.shape
  real = h[:, 0].reshape(b * v, f)
  real_labels = jnp.repeat(batch["real_labels"], v)
  syn = h[:, 1:].reshape(b * (k - 1) * v, f)
  syn_labels = jnp.repeat(batch["real_labels"], (k - 1) * v)
  syn_valid = jnp.repeat(batch["synthetic_valid"].reshape(-1), v)
  return real, real_labels, syn, syn_labels, syn_valid


def stats_init(num_classes: int, feat_dim: int) -> dict:
  """Running statistics of the encoder features (what the linear probe reads).

  Each domain is centred on its own running mean before any cosine is taken: a rendering style
  shifts every synthetic feature alike, and the shift would otherwise dominate the comparison
  with the real classes (measured: README "Which synthetic classes are bad").
  """
  return {
    "real_center": _ema_init(1, feat_dim),  # mean real feature
    "syn_center": _ema_init(1, feat_dim),  # mean synthetic feature
    "real_mean": _ema_init(num_classes, feat_dim),  # per-class mean real feature
    "real_sim": _ema_init(num_classes, 2),  # mean, mean square of cos(real, own prototype)
    "real_nearest": _ema_init(num_classes, 1),  # share of real rows nearest their own prototype
    "syn_mean": _ema_init(num_classes, feat_dim),  # per-class mean synthetic feature
    "syn_score": _ema_init(num_classes, 3),  # per-class mean of agreement_scores
  }


def agreement_scores(syn, syn_labels, prototypes, real_sim, config) -> jax.Array:
  """Per synthetic row, how well it agrees with its class's real images.

  syn [n, F] centred unit rows, syn_labels [n], prototypes [C, F] centred unit real prototypes,
  real_sim [C, 2] (mean and mean square of the real rows' cosine to their own prototype).
  -> [n, 3]: (nearest: 1 if the nearest real prototype is its own class's,
              within: that, and its cosine to its own prototype is no lower than
                      objective.syncon.spread_k real standard deviations below the real mean,
              soft: the softmax probability of its own class over prototype cosines at
                    objective.syncon.agreement_temperature).
  """
  sims = syn @ prototypes.T  # [n, C]
  own = jnp.take_along_axis(sims, syn_labels[:, None], axis=1)[:, 0]
  nearest = (jnp.argmax(sims, axis=1) == syn_labels).astype(jnp.float32)
  m = real_sim[syn_labels, 0]
  sd = jnp.sqrt(jnp.maximum(real_sim[syn_labels, 1] - m**2, 0.0))
  within = nearest * (own >= m - config.spread_k * sd)
  soft = jax.nn.softmax(sims / config.agreement_temperature, axis=1)
  soft_own = jnp.take_along_axis(soft, syn_labels[:, None], axis=1)[:, 0]
  return jnp.stack([nearest, within.astype(jnp.float32), soft_own], axis=1)


SCORE_NAMES = ("nearest", "within", "soft")


def _centred(x: jax.Array, center_ema: dict) -> jax.Array:
  return losses.l2_normalize(x - _ema_value(center_ema)[0])


def stats_update(stats: dict, outputs, batch, config) -> dict:
  """Folds one batch into the running statistics."""
  num_classes = stats["real_mean"]["norm"].shape[0]
  decay = config.stats_decay
  real, real_labels, syn, syn_labels, syn_valid = _rows(outputs, batch)
  ones = jnp.ones(real_labels.shape, bool)
  one_class = lambda x, mask: _class_sums(x, jnp.zeros(x.shape[0], jnp.int32), mask, 1)
  real_center = _ema_update(stats["real_center"], *one_class(real, ones), decay)
  real_sum, real_count = _class_sums(real, real_labels, ones, num_classes)
  real_mean = _ema_update(stats["real_mean"], real_sum, real_count, decay)
  prototypes = _centred(_ema_value(real_mean), real_center)
  own = jnp.sum(_centred(real, real_center) * prototypes[real_labels], axis=-1)
  sim_sum, _ = _class_sums(jnp.stack([own, own**2], axis=1), real_labels, ones, num_classes)
  real_sim = _ema_update(stats["real_sim"], sim_sum, real_count, decay)
  real_units = _centred(real, real_center)
  hit = (jnp.argmax(real_units @ prototypes.T, axis=1) == real_labels).astype(jnp.float32)
  hit_sum, _ = _class_sums(hit[:, None], real_labels, ones, num_classes)
  new = {
    **stats,
    "real_center": real_center,
    "real_mean": real_mean,
    "real_sim": real_sim,
    "real_nearest": _ema_update(stats["real_nearest"], hit_sum, real_count, decay),
  }
  if syn.shape[0]:
    new["syn_center"] = _ema_update(stats["syn_center"], *one_class(syn, syn_valid), decay)
    syn_sum, syn_count = _class_sums(syn, syn_labels, syn_valid, num_classes)
    new["syn_mean"] = _ema_update(stats["syn_mean"], syn_sum, syn_count, decay)
    syn_unit = _centred(syn, new["syn_center"])
    scores = agreement_scores(syn_unit, syn_labels, prototypes, _ema_value(real_sim), config)
    score_sum, _ = _class_sums(scores, syn_labels, syn_valid, num_classes)
    new["syn_score"] = _ema_update(stats["syn_score"], score_sum, syn_count, decay)
  return new


def stats_metrics(stats: dict) -> dict:
  """Per-class scores as [C] arrays, for the logs."""
  scores = _ema_value(stats["syn_score"])
  return {f"agreement_{name}": scores[:, i] for i, name in enumerate(SCORE_NAMES)}


def proto_similarity(stats: dict) -> jax.Array:
  """[C] clipped cosine of the running (domain-centred) real and synthetic class prototypes."""
  real = _centred(_ema_value(stats["real_mean"]), stats["real_center"])
  syn = _centred(_ema_value(stats["syn_mean"]), stats["syn_center"])
  seen = (stats["real_mean"]["norm"] > 0) & (stats["syn_mean"]["norm"] > 0)
  return jnp.where(seen, jnp.clip(jnp.sum(real * syn, axis=-1), 0.0, 1.0), 0.0)


# ----------------------------------------------------------------------------------------------
# fixed


def _check_unit(name: str, w: float) -> float:
  if not 0.0 <= w <= 1.0:
    raise ConfigError(f"objective.syncon.{name} must lie in [0, 1], got {w}")
  return float(w)


def _fixed_init(num_classes: int, feat_dim: int, config) -> dict:
  del feat_dim
  w = _check_unit("synthetic_weight", config.synthetic_weight)
  return {"w": jnp.full((num_classes,), w, jnp.float32)}


def _state_weights(state: dict, config) -> jax.Array:
  del config
  return state["w"]


def _fixed_weights(state: dict, config) -> jax.Array:
  # From the config, not the state: a resumed run whose synthetic_weight was changed must use
  # the new value, not the one its checkpoint was written with.
  w = _check_unit("synthetic_weight", config.synthetic_weight)
  return jnp.full_like(state["w"], w)


def _no_update(state, outputs, batch, ctx):
  del outputs, batch, ctx
  return state, {}


# ----------------------------------------------------------------------------------------------
# learned


def _logit(p: float) -> float:
  p = min(max(p, 1e-4), 1 - 1e-4)
  return float(jnp.log(p) - jnp.log1p(-p))


def _learned_init(num_classes: int, feat_dim: int, config) -> dict:
  del feat_dim
  w0 = _check_unit("synthetic_weight", config.synthetic_weight)
  return {"theta": jnp.full((num_classes,), _logit(w0), jnp.float32)}


def _learned_weights(state: dict, config) -> jax.Array:
  del config
  return jax.nn.sigmoid(state["theta"])


def _log_weight_penalty(w: jax.Array, config) -> jax.Array:
  # -lambda * sum_c log w_c: the uncertainty form's term that keeps w away from 0.
  return -config.weight_lambda * jnp.sum(jnp.log(jnp.maximum(w, 1e-6)))


def _learned_penalty(state: dict, outputs, batch, ctx) -> jax.Array:
  del outputs, batch
  return _log_weight_penalty(_learned_weights(state, ctx.config), ctx.config)


def _weights_optimizer(config) -> optax.GradientTransformation:
  """'learned', 'hypernet': plain SGD on the weights' parameters at objective.syncon.weight_learning_rate."""
  return optax.sgd(config.weight_learning_rate)


# ----------------------------------------------------------------------------------------------
# hypernet


def _descriptors(stats: dict) -> jax.Array:
  """[C, 5] per-class inputs of the hypernetwork, each in [0, 1] or [-1, 1]: the prototype
  similarity, the three agreement scores and the real images' mean cosine to their prototype."""
  return jnp.concatenate(
    [
      proto_similarity(stats)[:, None],
      _ema_value(stats["syn_score"]),
      _ema_value(stats["real_sim"])[:, :1],
    ],
    axis=1,
  )


N_DESCRIPTORS = 5


def _hypernet_init(num_classes: int, feat_dim: int, config) -> dict:
  hidden = config.hypernet_hidden
  key = jax.random.key(config.hypernet_seed)
  k1, _ = jax.random.split(key)
  n_in = N_DESCRIPTORS
  w0 = _check_unit("synthetic_weight", config.synthetic_weight)
  return {
    "stats": stats_init(num_classes, feat_dim),
    "mlp": {
      "w1": jax.random.normal(k1, (n_in, hidden), jnp.float32) / jnp.sqrt(n_in),
      "b1": jnp.zeros((hidden,), jnp.float32),
      "w2": jnp.zeros((hidden, 1), jnp.float32),
      "b2": jnp.full((1,), _logit(w0), jnp.float32),  # starts at the fixed scheme's w
    },
  }


def _hypernet_weights(state: dict, config) -> jax.Array:
  del config
  x = jax.lax.stop_gradient(_descriptors(state["stats"]))
  p = state["mlp"]
  h = jax.nn.relu(x @ p["w1"] + p["b1"])
  return jax.nn.sigmoid(h @ p["w2"] + p["b2"])[:, 0]


def _hypernet_penalty(state: dict, outputs, batch, ctx) -> jax.Array:
  del outputs, batch
  return _log_weight_penalty(_hypernet_weights(state, ctx.config), ctx.config)


def _stats_update(state, outputs, batch, ctx):
  """'hypernet', 'proto_sim': fold the batch into the running statistics."""
  stats = stats_update(state["stats"], outputs, batch, ctx.config)
  return {**state, "stats": stats}, stats_metrics(stats)


# ----------------------------------------------------------------------------------------------
# proto_sim


def _proto_init(num_classes: int, feat_dim: int, config) -> dict:
  del config
  return {"stats": stats_init(num_classes, feat_dim)}


def _proto_weights(state: dict, config) -> jax.Array:
  del config
  return proto_similarity(state["stats"])


# ----------------------------------------------------------------------------------------------
# auto


def auto_weights(stats: dict, config) -> jax.Array:
  """[C] the synthetic agreement above chance, relative to the real images' own agreement.

  w_c = clip((a_c - 1/C) / (r_c - 1/C), 0, 1), with a_c the class's synthetic score
  (objective.syncon.auto_score) and r_c the share of its real views nearest their own prototype. Noise
  lands nearest a random class (a_c ~ 1/C, so w_c ~ 0); a swapped class lands nearest another
  class (a_c ~ 0); a synthetic class as recognisable as the real one gets w_c ~ 1, however good
  the critic is. A class whose real views are no better than chance gets 0.
  """
  num_classes = stats["real_mean"]["norm"].shape[0]
  chance = 1.0 / num_classes
  a = _ema_value(stats["syn_score"])[:, SCORE_NAMES.index(config.auto_score)]
  r = _ema_value(stats["real_nearest"])[:, 0]
  rel = (a - chance) / jnp.maximum(r - chance, 1e-6)
  return jnp.where(r > chance, jnp.clip(rel, 0.0, 1.0), 0.0)


def _auto_init(num_classes: int, feat_dim: int, config) -> dict:
  if config.auto_score not in SCORE_NAMES:
    raise ConfigError(
      f"Unknown objective.syncon.auto_score {config.auto_score!r}; valid: {list(SCORE_NAMES)}"
    )
  return {
    "stats": stats_init(num_classes, feat_dim),
    "w": jnp.zeros((num_classes,), jnp.float32),
  }


def _auto_penalty(state: dict, outputs, batch, ctx) -> jax.Array:
  """On probation, SimCLR among the synthetic images (each image's views are its only positives).

  Their labels are not used, so the embedding cannot bend towards them; but the encoder learns to
  represent the synthetic domain, which the real images alone do not teach it (measured: without
  this term a real-only encoder recognised the clean renders of 1 and 7 less often than noise).
  """
  config = ctx.config
  z = outputs.projections
  b, k, v, d = z.shape
  if k == 1 or not config.probation_ssl_weight:
    return jnp.zeros((), jnp.float32)
  ssl = losses.supcon_loss(
    z[:, 1:].reshape(b * (k - 1), v, d),
    temperature=config.temperature,
    base_temperature=config.base_temperature,
    valid=batch["synthetic_valid"].reshape(-1),
    block_size=config.block_size,
  )
  on_probation = ctx.step < config.probation_steps
  return jnp.where(on_probation, config.probation_ssl_weight, 0.0) * ssl


def _auto_update(state, outputs, batch, ctx):
  config = ctx.config
  step = ctx.step + 1  # steps completed after this one
  on_probation = step <= config.probation_steps
  # After probation the statistics (and the weights) stay frozen: the embedding is now pulled by
  # the synthetic images, and measuring agreement in it would feed back into the weights.
  stats = jax.lax.cond(
    on_probation,
    lambda: stats_update(state["stats"], outputs, batch, config),
    lambda: state["stats"],
  )
  w = jnp.where(step >= config.probation_steps, auto_weights(stats, config), 0.0)
  new = {**state, "stats": stats, "w": w}
  return new, {**stats_metrics(stats), "on_probation": on_probation.astype(jnp.float32)}


# ----------------------------------------------------------------------------------------------

SCHEMES: dict[str, Scheme] = {
  "fixed": Scheme(_fixed_init, _fixed_weights, _no_penalty, _no_update),
  "learned": Scheme(
    _learned_init,
    _learned_weights,
    _learned_penalty,
    _no_update,
    trainable=("theta",),
    optimizer=_weights_optimizer,
  ),
  "hypernet": Scheme(
    _hypernet_init,
    _hypernet_weights,
    _hypernet_penalty,
    _stats_update,
    trainable=("mlp",),
    optimizer=_weights_optimizer,
  ),
  "proto_sim": Scheme(_proto_init, _proto_weights, _no_penalty, _stats_update),
  "auto": Scheme(_auto_init, _state_weights, _auto_penalty, _auto_update),
  "meta": Scheme(
    meta_weighting.init,
    meta_weighting.class_weights,
    _no_penalty,
    meta_weighting.update,
    meta_weighting.init_target,
  ),
  "meta_hypernet": Scheme(
    meta_weighting.hypernet_init,
    meta_weighting.class_weights,
    _no_penalty,
    meta_weighting.hypernet_update,
    meta_weighting.init_target,
  ),
}


def get_scheme(name: str) -> Scheme:
  if name not in SCHEMES:
    raise ConfigError(f"Unknown objective.syncon.weighting {name!r}; valid: {sorted(SCHEMES)}")
  return SCHEMES[name]
