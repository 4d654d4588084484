"""Synthetic weights learned as hyperparameters, by a meta-gradient through a lookahead step.

Learning to reweight (Ren et al. 2018) asks of a weight: if the model took a step on the loss
under these weights, would a loss on clean data fall? Here the clean data are the real images
(the labelled set the run trains on), and the question is asked of each class's synthetic
weight w_c:

  theta_0 = the model's parameters (before this step's update, or their EMA)
  theta_{j+1} = theta_j - eta * d L_syn(theta_j, w) / d theta      (j < objective.syncon.meta_unroll)
  g = d L_real(theta_K(w)) / d w

with L_syn the SynCon objective of this step's views (syncon.loss, so every option of the loss
applies), eta = objective.syncon.meta_inner_lr, and L_real SupCon on the step's real images under
fresh augmentations (the meta batch: the same labelled images, other views; a prototype found
that a disjoint half of the labelled images gave a ranking no better than chance). `jax.grad`
differentiates through the inner step(s), inside the one jitted train step, every
objective.syncon.meta_every steps (`jax.lax.cond`: the other steps skip it).

The raw g is a poor step: it grows 100-1000x over training, and its common part (every class
down, as long as the real images alone fit the real meta batch best) would drive every weight to
the same low value. So the update is normalised and centred over the classes present in the
batch (those with a synthetic image in it):

  d_c = g_c / rms(g) - mean(g / rms(g))         (zero for the classes absent from the batch)
  meta:          w_c <- clip(w_c - objective.syncon.meta_learning_rate * d_c, 0, 1)
  meta_hypernet: phi <- phi - objective.syncon.meta_hypernet_learning_rate * (dw/dphi)^T d,
                 w = sigmoid(MLP_phi(per-class statistics))  (Meta-Weight-Net, Shu et al. 2019)

L2RW's own per-step weights (w proportional to max(-g, 0)) inverted the ranking in the prototype,
so the weights here are a state that integrates many steps' meta-gradients.

objective.syncon.meta_params = 'ema' starts the lookahead from an EMA of the parameters (decay
objective.syncon.meta_ema_decay) instead of the current ones: the weights then answer for a slower
encoder, which the current weights bend less from one step to the next.

The state (buffers only: the meta step is not the loss's gradient, so nothing here is under the
optimiser): {"w" [C] the current weights, "ema" (meta_params = 'ema'), "mlp" and "stats"
(meta_hypernet)}. class_weights reads "w", which the hypernetwork form refreshes after each
update. `update` gets the objective contract's (outputs, batch, ctx: an UpdateContext).
"""

import jax
import jax.numpy as jnp

from syncon_jax import losses
from syncon_jax.errors import ConfigError

META_PARAMS = ("online", "ema")
# ctx.key is the objective's stream for this step; the meta batch's augmentation folds in
# this id, leaving the key itself free for other draws.
META_AUGMENT_STREAM = 1


def _check(config) -> None:
  for name in ("meta_every", "meta_unroll"):
    value = config[name]
    if not isinstance(value, int) or value < 1:
      raise ConfigError(f"objective.syncon.{name} must be a positive integer, got {value!r}")
  if config.meta_params not in META_PARAMS:
    raise ConfigError(
      f"Unknown objective.syncon.meta_params {config.meta_params!r}; valid: {list(META_PARAMS)}"
    )
  if not 0.0 <= config.meta_ema_decay <= 1.0:
    raise ConfigError(
      f"objective.syncon.meta_ema_decay must lie in [0, 1], got {config.meta_ema_decay}"
    )


def _unit_weight(config) -> float:
  w = config.synthetic_weight
  if not 0.0 <= w <= 1.0:
    raise ConfigError(f"objective.syncon.synthetic_weight must lie in [0, 1], got {w}")
  return float(w)


# ----------------------------------------------------------------------------------------------
# The meta-gradient.


def _projections(ctx, params, views: jax.Array) -> jax.Array:
  """views [..., H, W, C] -> unit projections [..., dim] of the model under params (as the
  train step normalises them)."""
  lead = views.shape[:-3]
  _, z = ctx.apply(params, views.reshape(-1, *views.shape[-3:]))
  z = losses.l2_normalize(z)
  return z.reshape(*lead, z.shape[-1])


def synthetic_loss(params, w: jax.Array, outputs, batch, ctx) -> jax.Array:
  """L_syn: the SynCon objective of this step's views under params and class weights w [C]."""
  # syncon imports weighting, which imports this.
  from syncon_jax.objectives import ObjectiveState, syncon

  z = _projections(ctx, params, ctx.views)
  state = ObjectiveState(params={}, buffers={"weighting": {"w": w}})
  return syncon.loss(outputs._replace(projections=z), batch, state, ctx).value


def meta_batch(batch, ctx) -> jax.Array:
  """[b, 1, V, H, W, C]: the step's real images under fresh augmentations."""
  key = jax.random.fold_in(ctx.key, META_AUGMENT_STREAM)
  return ctx.augment(key, batch["real_images"][:, None])


def real_loss(params, views: jax.Array, batch, ctx) -> jax.Array:
  """L_real: SupCon over real views [b, 1, V, H, W, C] and the real labels (every view an
  anchor)."""
  config = ctx.config
  z = _projections(ctx, params, views[:, 0])
  return losses.supcon_loss(
    z,
    labels=batch["real_labels"],
    temperature=config.temperature,
    base_temperature=config.base_temperature,
    block_size=config.block_size,
  )


def lookahead(params, w: jax.Array, outputs, batch, ctx):
  """theta_K(w): meta_unroll SGD steps of size meta_inner_lr on L_syn; -> (theta_K, L_syn(theta_0))."""
  config = ctx.config
  first = None
  for _ in range(config.meta_unroll):
    value, grads = jax.value_and_grad(synthetic_loss)(params, w, outputs, batch, ctx)
    first = value if first is None else first
    params = jax.tree.map(lambda p, g: p - config.meta_inner_lr * g, params, grads)
  return params, first


def meta_gradient(w: jax.Array, params, outputs, batch, ctx):
  """d L_real(theta_K(w)) / dw [C] at the given start parameters.

  One lookahead step (meta_unroll = 1) takes no second-order reverse pass. With
  theta_1 = theta - eta * grad_theta L_syn(theta, w) and v = grad L_real(theta_1),
    g = -eta * d/dw <grad_theta L_syn(theta, w), v> = -eta * d/de [grad_w L_syn(theta + e v, w)]
  (mixed partials commute): a forward-mode derivative (`jax.jvp`) of grad_w L_syn, whose
  reverse pass stops at the loss head because w enters nowhere else: no second reverse pass
  through the network. More lookahead steps,
  and the blockwise loss (objective.block_size: a custom_vjp, which has no forward mode),
  differentiate through the unrolled updates with `jax.grad`.

  -> (g [C], {"meta_loss": L_real(theta_K), "meta_inner_loss": L_syn(theta_0, w)}).
  """
  config = ctx.config
  views = meta_batch(batch, ctx)
  eta = config.meta_inner_lr
  if config.meta_unroll == 1 and config.block_size is None:
    inner, grads = jax.value_and_grad(synthetic_loss)(params, w, outputs, batch, ctx)
    theta = jax.tree.map(lambda p, g: p - eta * g, params, grads)
    loss, v = jax.value_and_grad(real_loss)(theta, views, batch, ctx)
    grad_w = lambda p: jax.grad(synthetic_loss, argnums=1)(p, w, outputs, batch, ctx)
    _, g = jax.jvp(grad_w, (params,), (v,))
    return -eta * g, {"meta_loss": loss, "meta_inner_loss": inner}

  def outer(w):
    theta, inner = lookahead(params, w, outputs, batch, ctx)
    return real_loss(theta, views, batch, ctx), inner

  (loss, inner), g = jax.value_and_grad(outer, has_aux=True)(w)
  return g, {"meta_loss": loss, "meta_inner_loss": inner}


def present_classes(batch, num_classes: int) -> jax.Array:
  """[C] bool: classes with at least one valid synthetic image in the batch."""
  valid = batch["synthetic_valid"]
  counts = jax.nn.one_hot(batch["real_labels"], num_classes) * valid.sum(1)[:, None]
  return counts.sum(0) > 0


def centred_step(g: jax.Array, present: jax.Array) -> jax.Array:
  """[C] the meta-gradient normalised by its RMS over the present classes, minus its mean there;
  zero on the absent classes (and everywhere when g is zero there)."""
  p = present.astype(g.dtype)
  n = jnp.maximum(p.sum(), 1.0)
  rms = jnp.sqrt(jnp.sum(p * g**2) / n)
  gn = jnp.where(rms > 0, g / jnp.where(rms > 0, rms, 1.0), 0.0) * p
  return (gn - jnp.sum(gn) / n) * p


def _start_params(state: dict, ctx):
  return state["ema"] if ctx.config.meta_params == "ema" else ctx.params


def _meta_direction(state: dict, outputs, batch, ctx):
  """-> (d [C] the centred step direction, metrics); d = 0 on the steps meta_every skips."""
  config = ctx.config
  w = state["w"]
  num_classes = w.shape[0]
  params = jax.lax.stop_gradient(_start_params(state, ctx))

  def compute():
    return meta_gradient(w, params, outputs, batch, ctx)

  def skip():
    z = jnp.zeros((), w.dtype)
    return jnp.zeros_like(w), {"meta_loss": z, "meta_inner_loss": z}

  on = ctx.step % config.meta_every == 0
  # Every step: no conditional, whose branches XLA compiles as separate computations.
  g, aux = compute() if config.meta_every == 1 else jax.lax.cond(on, compute, skip)
  present = present_classes(batch, num_classes) & on
  d = centred_step(g, present)
  n = jnp.maximum(present.sum(), 1)
  metrics = {
    **aux,
    "meta_step": on.astype(jnp.float32),
    "meta_grad_rms": jnp.sqrt(jnp.sum(jnp.where(present, g**2, 0.0)) / n),
    "meta_direction": d,
  }
  return d, metrics


def _ema_step(state: dict, ctx) -> dict:
  if ctx.config.meta_params != "ema":
    return {}
  decay = ctx.config.meta_ema_decay
  ema = jax.tree.map(lambda e, o: decay * e + (1.0 - decay) * o, state["ema"], ctx.new_params)
  return {"ema": ema}


def init_target(state: dict, params, config) -> dict:
  """The EMA of the parameters starts as a copy of the initial ones (meta_params = 'ema')."""
  if config.meta_params != "ema":
    return state
  return {**state, "ema": jax.tree.map(lambda x: jnp.array(x, copy=True), params)}


# ----------------------------------------------------------------------------------------------
# meta: a weight per class.


def init(num_classes: int, feat_dim: int, config) -> dict:
  del feat_dim
  _check(config)
  return {"w": jnp.full((num_classes,), _unit_weight(config), jnp.float32)}


def class_weights(state: dict, config) -> jax.Array:
  del config
  return state["w"]


def update(state, outputs, batch, ctx):
  d, metrics = _meta_direction(state, outputs, batch, ctx)
  w = jnp.clip(state["w"] - ctx.config.meta_learning_rate * d, 0.0, 1.0)
  return {**state, "w": w, **_ema_step(state, ctx)}, metrics


# ----------------------------------------------------------------------------------------------
# meta_hypernet: an MLP from per-class statistics to w_c (Meta-Weight-Net's form).


def hypernet_init(num_classes: int, feat_dim: int, config) -> dict:
  from syncon_jax import weighting

  _check(config)
  state = weighting._hypernet_init(num_classes, feat_dim, config)
  return {**state, "w": jnp.full((num_classes,), _unit_weight(config), jnp.float32)}


def hypernet_update(state, outputs, batch, ctx):
  from syncon_jax import weighting

  config = ctx.config
  d, metrics = _meta_direction(state, outputs, batch, ctx)
  # The centred step in w-space, pulled back to the MLP's parameters: phi -= lr * J^T d.
  _, pullback = jax.vjp(
    lambda mlp: weighting._hypernet_weights({**state, "mlp": mlp}, config), state["mlp"]
  )
  (phi_grad,) = pullback(d)
  mlp = jax.tree.map(
    lambda p, g: p - config.meta_hypernet_learning_rate * g, state["mlp"], phi_grad
  )
  stats = weighting.stats_update(state["stats"], outputs, batch, config)
  new = {**state, "mlp": mlp, "stats": stats, **_ema_step(state, ctx)}
  new["w"] = weighting._hypernet_weights(new, config)
  return new, {**metrics, **weighting.stats_metrics(stats)}
