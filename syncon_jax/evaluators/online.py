"""What the train step logs about the representation while it trains (config.eval.online_*).

An online linear probe, as solo-learn and lightly keep one: a linear classifier on the real
images' encoder features under stop_gradient, trained by its own SGD step on each batch's labels.
It runs after the pretraining's gradients are taken and only reads the features, so it cannot
change them (tests/test_evaluators.py compares training with it on and off). Its accuracy on the
batch *before* its update is an online estimate of linear separability. Label-free objectives
only see the labels here.

The health metrics (health.step_health) are logged beside it when eval.online_health is set.
"""

import jax
import jax.numpy as jnp
import ml_collections

from syncon_jax.evaluators import health


def init_state(num_classes: int, feat_dim: int, eval_config: ml_collections.ConfigDict) -> dict:
  """The probe's state: {"kernel" [feat_dim, C], "bias" [C]} zeros, or {} when it is off."""
  if not eval_config.get("online_probe", False):
    return {}
  return {
    "kernel": jnp.zeros((feat_dim, num_classes), jnp.float32),
    "bias": jnp.zeros((num_classes,), jnp.float32),
  }


def _probe_loss(probe: dict, features: jax.Array, labels: jax.Array):
  logits = features @ probe["kernel"] + probe["bias"]
  logp = jax.nn.log_softmax(logits)
  loss = -jnp.mean(jnp.take_along_axis(logp, labels[:, None], axis=1))
  return loss, jnp.mean(jnp.argmax(logits, axis=1) == labels)


def update(
  state: dict,
  features: jax.Array,
  z: jax.Array,
  labels: jax.Array,
  synthetic_valid: jax.Array,
  eval_config: ml_collections.ConfigDict,
) -> tuple[dict, dict]:
  """One online step. features [b, 1 + S, V, feat_dim], z [b, 1 + S, V, dim], labels [b],
  synthetic_valid [b, S]; -> (new probe state, metrics). Everything is read under stop_gradient.
  """
  features, z = jax.lax.stop_gradient(features), jax.lax.stop_gradient(z)
  metrics = {}
  if eval_config.get("online_health", False):
    metrics.update(health.step_health(features, z, synthetic_valid))
  if not state:
    return state, metrics
  b, _, n_views, feat_dim = features.shape
  x = features[:, 0].reshape(b * n_views, feat_dim)  # every view of the real images
  y = jnp.repeat(labels, n_views)
  (loss, top1), grads = jax.value_and_grad(_probe_loss, has_aux=True)(state, x, y)
  lr = eval_config.online_probe_learning_rate
  state = jax.tree.map(lambda p, g: p - lr * g, state, grads)
  metrics.update({"online_probe/loss": loss, "online_probe/top1": top1})
  return state, metrics
