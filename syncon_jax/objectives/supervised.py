"""Supervised cross-entropy baseline: a linear classifier on the encoder's features.

The classifier (kernel [feat_dim, num_classes], bias [num_classes]) is this objective's state,
so it is checkpointed and restored with the train state. The train step differentiates the loss
with respect to the model and the state: the encoder (and not the projection head, which the
loss never reads) trains through the optimiser, the classifier in `update` by plain SGD at
objective.supervised_learning_rate. Samples are every augmented view (inputs.features), each a
labelled row; the loss is `losses.softmax_cross_entropy` (objective.supervised_label_smoothing)
averaged over the rows.

  supervised      real images only (slot 0).
  supervised_syn  real and synthetic images: every valid synthetic slot is one more labelled
                  sample with its real image's label; placeholder slots are dropped. A separate
                  objective rather than a config key, because `uses_synthetic` (whether the
                  trainer loads synthetic images at all) is fixed per objective.
"""

import jax
import jax.numpy as jnp
import optax

from syncon_jax import losses


def init_state(num_classes: int, feat_dim: int, config) -> dict:
  # Zeros: the loss is convex in the classifier, and zeros need no PRNG key (the first step's
  # logits are all 0, i.e. loss log(num_classes)).
  del config
  return {
    "classifier": {
      "kernel": jnp.zeros((feat_dim, num_classes), jnp.float32),
      "bias": jnp.zeros((num_classes,), jnp.float32),
    }
  }


def logits(features: jnp.ndarray, classifier: dict) -> jnp.ndarray:
  """[..., feat_dim] -> [..., num_classes]."""
  return features @ classifier["kernel"] + classifier["bias"]


def _loss(inputs, state, config, with_synthetic: bool):
  """inputs.features: [batch, 1 + S, n_views, feat_dim]; slot 0, or every valid slot."""
  f = inputs.features if with_synthetic else inputs.features[:, :1]
  b, k, v, feat = f.shape
  valid = jnp.concatenate([jnp.ones((b, 1), bool), inputs.synthetic_valid], axis=1)[:, :k]
  rows = f.reshape(b * k * v, feat)
  labels = jnp.broadcast_to(inputs.labels[:, None, None], (b, k, v)).reshape(-1)
  weight = jnp.broadcast_to(valid[:, :, None], (b, k, v)).reshape(-1).astype(jnp.float32)
  out = logits(rows, state["classifier"])
  # Per-row cross-entropy from the tested loss (its own mean would count placeholder rows).
  per_row = losses.softmax_cross_entropy(
    out, labels, label_smoothing=config.supervised_label_smoothing, reduction="none"
  )
  count = jnp.maximum(jnp.sum(weight), 1)
  correct = (jnp.argmax(out, axis=-1) == labels).astype(jnp.float32)
  return jnp.sum(weight * per_row) / count, {"train_accuracy": jnp.sum(weight * correct) / count}


def loss_real_only(inputs, state, config):
  return _loss(inputs, state, config, with_synthetic=False)


def loss_with_synthetic(inputs, state, config):
  return _loss(inputs, state, config, with_synthetic=True)


def update(state, grads, inputs, config):
  """One SGD step on the classifier with the state gradient of this step's loss."""
  del inputs
  lr = config.supervised_learning_rate
  new = jax.tree.map(lambda p, g: p - lr * g, state["classifier"], grads["classifier"])
  return {**state, "classifier": new}, {
    "classifier_grad_norm": optax.tree.norm(grads["classifier"])
  }
