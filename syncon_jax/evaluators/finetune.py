"""Fine-tuning of the whole network: the encoder plus a new linear layer, all trained on labels.

A short schedule (eval.finetune_steps of SGD with momentum, cosine decay from
eval.finetune_learning_rate, weight decay on kernels), on augmented labelled real train images
(config.augment at data.image_size, when eval.finetune_augment), BatchNorm on batch statistics
in training and on its running statistics in the test pass. The same routine trains a random
encoder from scratch and a linear layer on raw pixels (`PixelEncoder`), so the three rows of
eval.json differ only in where the network starts.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from syncon_jax import augment
from syncon_jax.evaluators.knn import per_class_recall


class PixelEncoder(nnx.Module):
  """The raw-pixel 'encoder': [B, H, W, C] -> [B, H*W*C], nothing to train."""

  def __init__(self, feat_dim: int):
    self.feat_dim = feat_dim

  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    del train
    return x.reshape(x.shape[0], -1)


class Classifier(nnx.Module):
  """encoder (any module with __call__(x, train=) -> [B, feat_dim]) followed by a linear layer."""

  def __init__(self, encoder: nnx.Module, feat_dim: int, num_classes: int, *, rngs: nnx.Rngs):
    self.encoder = encoder
    self.linear = nnx.Linear(
      feat_dim, num_classes, kernel_init=nnx.initializers.zeros_init(), rngs=rngs
    )

  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    return self.linear(self.encoder(x, train=train).astype(jnp.float32))


def _decay_mask(params):
  return jax.tree.map(lambda p: p.ndim > 1, params)


def make_optimizer(eval_config) -> optax.GradientTransformation:
  schedule = optax.cosine_decay_schedule(
    eval_config.finetune_learning_rate, max(int(eval_config.finetune_steps), 1)
  )
  return optax.chain(
    optax.add_decayed_weights(eval_config.finetune_weight_decay, mask=_decay_mask),
    optax.sgd(schedule, momentum=eval_config.finetune_momentum),
  )


def make_steps(config, preprocess):
  """-> (train_step(model, optimizer, images uint8 [B,H,W,3], labels [B], key) -> loss,
  predict(model, images uint8 [B,H,W,3]) -> [B] class). Built once per evaluation so that
  models of the same architecture share one compiled program."""
  size = config.data.image_size
  use_augment = bool(config.eval.finetune_augment)

  @nnx.jit
  def train_step(model, optimizer, images, labels, key):
    if use_augment:
      keys = jax.random.split(key, images.shape[0])
      x = augment.augment_batch(keys, images, config.augment, out_size=size)
    else:
      x = augment.ops.center_crop(images, size).astype(jnp.float32) / 255.0
    x = preprocess(x, config)

    def loss_fn(model):
      logits = model(x, train=True)
      logp = jax.nn.log_softmax(logits)
      return -jnp.mean(jnp.take_along_axis(logp, labels[:, None], axis=1))

    loss, grads = nnx.value_and_grad(loss_fn)(model)
    optimizer.update(model, grads)
    return loss

  @nnx.jit
  def predict(model, images):
    x = preprocess(augment.ops.center_crop(images, size).astype(jnp.float32) / 255.0, config)
    return jnp.argmax(model(x, train=False), axis=1)

  return train_step, predict


def finetune(
  model: Classifier,
  steps,
  train_images: np.ndarray,
  train_labels: np.ndarray,
  test_images: np.ndarray,
  test_labels: np.ndarray,
  config,
  num_classes: int,
) -> dict:
  """Trains `model` in place for eval.finetune_steps and scores it on test.

  train_images: [N, H, W, 3] uint8, train_labels: [N]; test likewise.
  -> {"top1", "per_class_top1" [num_classes], "final_loss"}.
  """
  ec = config.eval
  train_step, predict = steps
  optimizer = nnx.Optimizer(model, make_optimizer(ec), wrt=nnx.Param)
  # A restored encoder's arrays are committed to a device, the new head's and the optimiser's
  # not, and a step's outputs are (one committed input commits them): unplaced, the second step
  # compiled the program again (2.4 s of linear_eval's runlocal digits run, per encoder).
  for node in (model, optimizer):
    nnx.update(node, jax.device_put(nnx.state(node), jax.local_devices()[0]))
  rng = np.random.default_rng(ec.finetune_seed)
  key = jax.random.key(ec.finetune_seed)
  bs = int(ec.finetune_batch_size)
  n = len(train_labels)
  loss = float("nan")
  for step in range(int(ec.finetune_steps)):
    idx = rng.choice(n, size=bs, replace=n < bs)
    loss = train_step(
      model,
      optimizer,
      jnp.asarray(train_images[np.sort(idx)]),
      jnp.asarray(train_labels[np.sort(idx)]),
      jax.random.fold_in(key, step),
    )
  preds = []
  ebs = int(ec.batch_size)
  for i in range(0, len(test_images), ebs):
    chunk = test_images[i : i + ebs]
    # Padded to a full batch: one compiled test program.
    padded = np.concatenate([chunk, np.zeros((ebs - len(chunk), *chunk.shape[1:]), chunk.dtype)])
    preds.append(np.asarray(predict(model, jnp.asarray(padded)))[: len(chunk)])
  hit = np.concatenate(preds) == test_labels
  return {
    "top1": float(np.mean(hit)),
    "per_class_top1": per_class_recall(hit, test_labels, num_classes),
    "final_loss": float(loss),
  }
