"""Rotation prediction (Gidaris, Singh & Komodakis 2018, "Unsupervised representation learning
by predicting image rotations"): the self-supervised pretext task of the lecture.

Every augmented view of every real image (slot 0 of `ctx.views`) is rotated by 0, 90, 180
and 270 degrees; the encoder embeds all four and a 4-way linear classifier on the encoder
features (the representation the probes read, not the projection head) must tell which
rotation it sees. Labels are free, so the real labels are unused, and no synthetic images are
loaded.

The rotated images go through the model by `ctx.apply(ctx.params, ...)`, the model under
the parameters being differentiated, so the loss trains the encoder. All four rotations share
one forward pass, so BatchNorm normalises them with the same batch statistics (a rotation must
not be told apart by which pass it went through); those statistics are dropped, and the running
statistics come from the trainer's own pass on the unrotated views. That pass also feeds
`outputs.features`, which this loss does not read (a cost of sharing the one trainer: one extra
forward of the unrotated views).

The classifier (kernel [feat_dim, 4], bias [4]) is this objective's trainable parameters, stepped
like the supervised baseline's by plain SGD (under the trainer's optimiser) at
objective.rotation.learning_rate.
"""

import jax
import jax.numpy as jnp
import ml_collections

from syncon_jax import losses
from syncon_jax.errors import ConfigError
from syncon_jax.objectives import Loss, Objective, ObjectiveState, supervised

NUM_ROTATIONS = 4


def init(num_classes: int, feat_dim: int, model_params, config) -> ObjectiveState:
  # Zeros, as the supervised baseline's: the first step's loss is log 4.
  del num_classes, model_params, config
  classifier = supervised.zero_classifier(feat_dim, NUM_ROTATIONS)
  return ObjectiveState(params={"classifier": classifier}, buffers={})


def defaults(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """config.objective.rotation."""
  del c
  o = ml_collections.ConfigDict()
  o.learning_rate = 0.1  # plain SGD on the 4-way classifier, as the supervised baseline's
  return o


def rotations(images: jax.Array) -> tuple[jax.Array, jax.Array]:
  """[n, H, H, C] -> (images [4 * n, H, H, C], labels [4 * n] int32).

  Block k (rows k*n .. k*n + n - 1) holds every image rotated by k * 90 degrees
  counter-clockwise (np.rot90 with k on the (H, W) axes), label k.
  """
  n, h, w = images.shape[:3]
  if h != w:
    raise ConfigError(f"objective 'rotation' needs square views, got {h}x{w} (data.image_size)")
  rotated = jnp.concatenate(
    [jnp.rot90(images, k, axes=(1, 2)) for k in range(NUM_ROTATIONS)], axis=0
  )
  labels = jnp.repeat(jnp.arange(NUM_ROTATIONS, dtype=jnp.int32), n)
  return rotated, labels


def loss(outputs, batch, state, ctx):
  """ctx.views [b, 1 + S, V, H, H, C] (slot 0 used), through ctx.apply under ctx.params."""
  del outputs, batch
  views = ctx.views[:, 0]
  x = views.reshape(-1, *views.shape[2:])  # [b * V, H, H, C]
  rotated, labels = rotations(x)
  h, _ = ctx.apply(ctx.params, rotated)
  out = supervised.logits(h.astype(jnp.float32), state.params["classifier"])
  ce = losses.softmax_cross_entropy(out, labels)
  accuracy = jnp.mean((jnp.argmax(out, axis=-1) == labels).astype(jnp.float32))
  return Loss(ce, {"rotation_accuracy": accuracy})


OBJECTIVE = Objective(loss=loss, defaults=defaults, init=init, optimizer=supervised.optimizer)
