"""Supervised cross-entropy baseline: a linear classifier on the encoder's features.

The classifier (kernel [feat_dim, num_classes], bias [num_classes]) is this objective's trainable
parameters (`ObjectiveState.params`), under the trainer's optimiser: the encoder (and not the
projection head, which the loss never reads) trains at the model's rate, the classifier by plain
SGD at objective.<name>.learning_rate (`optimizer`). Samples are every augmented view
(outputs.features), each a labelled row; the loss is `losses.softmax_cross_entropy`
(objective.<name>.label_smoothing) averaged over the rows.

  supervised      real images only (slot 0).
  supervised_syn  real and synthetic images: every valid synthetic slot is one more labelled
                  sample with its real image's label; placeholder slots are dropped.
"""

import jax.numpy as jnp
import ml_collections
import optax

from syncon_jax import losses
from syncon_jax.errors import ConfigError
from syncon_jax.objectives import Loss, Objective, ObjectiveState


def zero_classifier(feat_dim: int, num_outputs: int) -> dict:
  """A linear classifier {"kernel" [feat_dim, n], "bias" [n]} of zeros.

  Zeros: the loss is convex in the classifier, and zeros need no PRNG key (the first step's
  logits are all 0, i.e. loss log(n)).
  """
  return {
    "kernel": jnp.zeros((feat_dim, num_outputs), jnp.float32),
    "bias": jnp.zeros((num_outputs,), jnp.float32),
  }


def logits(features: jnp.ndarray, classifier: dict) -> jnp.ndarray:
  """[..., feat_dim] -> [..., num_outputs]."""
  return features @ classifier["kernel"] + classifier["bias"]


def init(num_classes: int, feat_dim: int, model_params, config) -> ObjectiveState:
  del model_params, config
  return ObjectiveState(params={"classifier": zero_classifier(feat_dim, num_classes)}, buffers={})


def check_config(config) -> None:
  if not 0 <= config.label_smoothing < 1:
    raise ConfigError(
      f"objective.{config.name}.label_smoothing must be in [0, 1), got {config.label_smoothing!r}"
    )


def optimizer(config) -> optax.GradientTransformation:
  """Plain SGD on the classifier at objective.<name>.learning_rate."""
  return optax.sgd(config.learning_rate)


def _loss(outputs, batch, state, ctx, with_synthetic: bool):
  """outputs.features: [batch, 1 + S, n_views, feat_dim]; slot 0, or every valid slot."""
  f = outputs.features if with_synthetic else outputs.features[:, :1]
  b, k, v, feat = f.shape
  valid = jnp.concatenate([jnp.ones((b, 1), bool), batch["synthetic_valid"]], axis=1)[:, :k]
  rows = f.reshape(b * k * v, feat)
  labels = jnp.broadcast_to(batch["real_labels"][:, None, None], (b, k, v)).reshape(-1)
  weight = jnp.broadcast_to(valid[:, :, None], (b, k, v)).reshape(-1).astype(jnp.float32)
  out = logits(rows, state.params["classifier"])
  # Per-row cross-entropy from the tested loss (its own mean would count placeholder rows).
  per_row = losses.softmax_cross_entropy(
    out, labels, label_smoothing=ctx.config.label_smoothing, reduction="none"
  )
  count = jnp.maximum(jnp.sum(weight), 1)
  correct = (jnp.argmax(out, axis=-1) == labels).astype(jnp.float32)
  value = jnp.sum(weight * per_row) / count
  return Loss(value, {"train_accuracy": jnp.sum(weight * correct) / count})


def loss_real_only(outputs, batch, state, ctx):
  return _loss(outputs, batch, state, ctx, with_synthetic=False)


def loss_with_synthetic(outputs, batch, state, ctx):
  return _loss(outputs, batch, state, ctx, with_synthetic=True)


def defaults(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """config.objective.supervised (and .supervised_syn)."""
  del c
  o = ml_collections.ConfigDict()
  # The classifier's plain SGD rate: ResNet's (He et al. 2016, there with momentum 0.9). Untuned:
  # plain SGD on CE is stable below about 2 * num_classes / |mean feature|^2, which a wide
  # encoder's features may break.
  o.learning_rate = 0.1
  o.label_smoothing = 0.0  # the plain cross-entropy baseline
  return o


OBJECTIVE = Objective(
  loss=loss_real_only, defaults=defaults, init=init, optimizer=optimizer, check_config=check_config
)
OBJECTIVE_SYN = Objective(
  loss=loss_with_synthetic,
  defaults=defaults,
  init=init,
  optimizer=optimizer,
  check_config=check_config,
  uses_synthetic=lambda config: True,
)
