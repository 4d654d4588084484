"""SynCon: SupCon over real anchors, with synthetic positives weighted per class.

The weights come from a scheme in syncon_jax/weighting.py (config.objective.syncon.weighting). The
scheme's state is split by its `trainable` keys: those are this objective's parameters (under
the trainer's optimiser, at the scheme's own rate), the rest its buffers (running statistics,
meta-weights, an EMA of the model), moved by the scheme's `update`. Both are checkpointed.
"""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from syncon_jax import losses, weighting
from syncon_jax.objectives import Loss, Objective, ObjectiveState


def defaults(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """config.objective.syncon: the weighting scheme and every scheme's settings."""
  o = ml_collections.ConfigDict()
  o.weighting = "auto"  # syncon_jax/weighting.py's SCHEMES
  o.synthetic_weight = 0.5  # 'fixed': the weight; 'learned', 'hypernet': the initial weight
  # Where synthetic rows sit in the denominators (losses.SYNTHETIC_DENOMINATORS): 'all' is the
  # proposal's literal form; 'weighted' scales row u by its weight there too, so w = 0 equals
  # removing the class's synthetic images (README "Few-shot: does SynCon pay?").
  o.synthetic_denominator = "all"
  # lambda sets the level the weights settle at (w_c ~ lambda / dL/dw_c, about 2 lambda here).
  o.weight_lambda = 0.25  # 'learned', 'hypernet': lambda of the -lambda * sum log w term
  o.weight_learning_rate = 0.5  # 'learned', 'hypernet': SGD step on the weights' parameters
  o.hypernet_hidden = 16
  o.hypernet_seed = 0
  o.stats_decay = 0.95  # per-class running statistics of the embeddings
  o.agreement_temperature = 0.1  # the 'soft' agreement score's softmax temperature
  o.spread_k = 2.0  # 'within': at most k real standard deviations below the real mean cosine
  # 'auto': real-only steps that measure agreement; a reference, so it follows total_steps.
  o.probation_steps = c.get_ref("total_steps") // 3
  o.auto_score = "nearest"  # 'auto': which agreement score becomes the weight
  o.probation_ssl_weight = 1.0  # 'auto': SimCLR on synthetic images during probation
  # 'meta', 'meta_hypernet' (syncon_jax/meta_weighting.py): the meta-gradient of SupCon on the
  # real images under fresh views, through meta_unroll SGD steps of size meta_inner_lr on SynCon.
  o.meta_every = 1  # a meta-gradient every n steps (n > 1: a lax.cond, slow on XLA:CPU)
  o.meta_inner_lr = 0.1  # the lookahead's SGD step
  o.meta_unroll = 1  # lookahead steps (each adds a forward and backward pass and its second order)
  o.meta_learning_rate = 0.02  # 'meta': w moves by this times the centred, normalised gradient
  o.meta_hypernet_learning_rate = 0.5  # 'meta_hypernet': the MLP's step on the pulled-back one
  o.meta_params = "online"  # lookahead from the current parameters, or 'ema': from their EMA
  o.meta_ema_decay = 0.99  # meta_params='ema'
  return o


def _scheme(config) -> weighting.Scheme:
  return weighting.get_scheme(config.weighting)


def init(num_classes: int, feat_dim: int, model_params, config) -> ObjectiveState:
  scheme = _scheme(config)
  state = scheme.init(num_classes, feat_dim, config)
  if scheme.init_target is not None:
    # A scheme that keeps a copy of the parameters (the meta schemes' EMA) starts from them.
    state = scheme.init_target(state, model_params, config)
  params = {k: v for k, v in state.items() if k in scheme.trainable}
  buffers = {k: v for k, v in state.items() if k not in scheme.trainable}
  return ObjectiveState(params={"weighting": params}, buffers={"weighting": buffers})


def scheme_state(state: ObjectiveState) -> dict:
  """The scheme's state: its buffers and its trainable parameters in one dict."""
  return {**state.buffers["weighting"], **state.params.get("weighting", {})}


def optimizer(config):
  return _scheme(config).optimizer(config) if _scheme(config).optimizer is not None else None


def class_weights(state: ObjectiveState, config) -> jnp.ndarray:
  """[num_classes] weights in [0, 1] that the current state assigns."""
  return _scheme(config).class_weights(scheme_state(state), config)


def loss(outputs, batch, state, ctx):
  """outputs.projections: [batch, 1 + S, n_views, dim] -> SynCon loss over every view of every
  sample.

  Plus the scheme's penalty: the learned schemes' -lambda sum log w (which only the weights'
  parameters see), or the auto scheme's self-supervised term on synthetic images on probation.
  """
  config = ctx.config
  z = outputs.projections
  b, k, v, d = z.shape
  scheme = _scheme(config)
  w = scheme.class_weights(scheme_state(state), config)
  is_synthetic = jnp.broadcast_to(jnp.arange(k)[None, :, None] > 0, (b, k, v))
  valid = jnp.concatenate([jnp.ones((b, 1), bool), batch["synthetic_valid"]], axis=1)
  row_labels = jnp.broadcast_to(batch["real_labels"][:, None, None], (b, k, v))
  syncon = losses.syncon_loss(
    z.reshape(b * k * v, d),
    row_labels.reshape(-1),
    is_synthetic.reshape(-1),
    w[row_labels].reshape(-1),
    temperature=config.temperature,
    base_temperature=config.base_temperature,
    valid=jnp.broadcast_to(valid[:, :, None], (b, k, v)).reshape(-1),
    block_size=config.block_size,
    synthetic_denominator=config.synthetic_denominator,
  )
  penalty = scheme.penalty(scheme_state(state), outputs, batch, ctx)
  return Loss(syncon + penalty, {"syncon_loss": syncon, "synthetic_weight_mean": jnp.mean(w)})


def update(state, outputs, batch, ctx):
  """The scheme's own step (running statistics, meta-weights) after the model's."""
  scheme = _scheme(ctx.config)
  new, metrics = scheme.update(scheme_state(state), outputs, batch, ctx)
  return {"weighting": {k: v for k, v in new.items() if k not in scheme.trainable}}, metrics


def summarize(state, class_names, config):
  """The weight of every class: logged as synthetic_weight/<class> and written to
  <workdir>/synthetic_weights.json ({class name: weight})."""
  w = np.asarray(jax.device_get(class_weights(state, config)))
  weights = {name: float(w[i]) for i, name in enumerate(class_names)}
  metrics = {f"synthetic_weight/{name}": value for name, value in weights.items()}
  return metrics, {"synthetic_weights.json": weights}


OBJECTIVE = Objective(
  loss=loss,
  defaults=defaults,
  init=init,
  update=update,
  optimizer=optimizer,
  uses_synthetic=lambda config: True,
  summarize=summarize,
)
