"""SynCon: SupCon over real anchors, with synthetic positives weighted per class.

The weights come from a scheme in syncon_jax/weighting.py (config.objective.weighting). The
scheme's state is split by its `trainable` keys: those are this objective's parameters (under
the trainer's optimiser, at the scheme's own rate), the rest its buffers (running statistics,
meta-weights, an EMA of the model), moved by the scheme's `update`. Both are checkpointed.
"""

import jax
import jax.numpy as jnp
import numpy as np

from syncon_jax import losses, weighting
from syncon_jax.objectives import Loss, Objective, ObjectiveState


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
  init=init,
  update=update,
  optimizer=optimizer,
  uses_synthetic=lambda config: True,
  summarize=summarize,
)
