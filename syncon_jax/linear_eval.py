r"""Linear evaluation of a pretrained encoder, read from the run's orbax checkpoints.

  python -m syncon_jax.linear_eval --config=configs/digits.py --workdir=runs/demo [--step=N]

Restores only the encoder, extracts frozen features of the real train and test splits without
augmentation, fits a few-label multinomial logistic regression (eval.labels_per_class labelled
train images per class, L2 chosen on held-out parts of them), and writes
<workdir>/linear_eval.json. In the few-shot regime (data.real_per_class) the probe is fitted on
the run's k labelled images per class and also scored on the validation pool (`pool_top1`). Beside it, the same probe on raw pixels and on a randomly initialised
encoder shows what pretraining bought.
"""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from flax import nnx
from ml_collections import config_flags

from syncon_jax import checkpoint, data, metrics
from syncon_jax.errors import ConfigError, exit_on_user_error
from syncon_jax.evaluators import linear_probe
from syncon_jax.train import check_workdir_compatible, init_model, preprocess


def _define_flags() -> None:
  # Defined only when run as a program, so that other entry points (tools/experiment.py) can
  # import evaluate() beside their own --config and --workdir.
  config_flags.DEFINE_config_file("config", "configs/digits.py", "The training config.")
  flags.DEFINE_string("workdir", "runs/demo", "The training run's workdir.")
  flags.DEFINE_integer("step", None, "Checkpoint step to evaluate (default: the latest).")


@nnx.jit
def _encode(model, x):
  return model.encode(x, train=False)


def extract_features(model, images: np.ndarray, config) -> np.ndarray:
  """Frozen encoder features, no augmentation. images: [N, H, W, 3] uint8 -> [N, feat] float32."""
  bs = config.eval.batch_size
  out = []
  for i in range(0, len(images), bs):
    chunk = images[i : i + bs]
    # Pad the last chunk to the full batch so the encoder compiles once.
    padded = np.concatenate([chunk, np.zeros((bs - len(chunk), *chunk.shape[1:]), chunk.dtype)])
    x = preprocess(jnp.asarray(padded, jnp.float32) / 255.0, config)
    out.append(np.asarray(_encode(model, x))[: len(chunk)])
  return np.concatenate(out).astype(np.float32)


def raw_pixels(images: np.ndarray) -> np.ndarray:
  """The pixel baseline's features. images: [N, H, W, C] uint8 -> [N, H*W*C] float32 in [0, 1]."""
  return images.reshape(len(images), -1).astype(np.float32) / 255.0


def restore_encoder(model, workdir: str, step: int | None, config) -> int:
  """Loads the checkpointed encoder into model.encoder in place; returns the step restored."""
  # Another model's shapes would fail deep inside orbax's async reads; name the key instead.
  check_workdir_compatible(workdir, config, encoder_only=True)
  ckpt = checkpoint.Checkpointer(workdir, keep=config.keep_checkpoints, every_steps=1)
  step = ckpt.latest_step() if step is None else step
  if step is None:
    raise ConfigError(f"No checkpoint in {ckpt.directory}: train first with syncon_jax.main.")
  params, state = nnx.state(model.encoder, nnx.Param), nnx.state(model.encoder, nnx.Not(nnx.Param))
  try:
    params, state = ckpt.restore_encoder(step, params, state)
  except FileNotFoundError as e:
    raise ConfigError(f"No checkpoint at step {step} in {ckpt.directory}: {e}") from e
  nnx.update(model.encoder, params, state)
  ckpt.close()
  return step


def evaluate(config, workdir: str, step: int | None = None) -> dict:
  """Runs the three probes and writes <workdir>/linear_eval.json; returns its contents."""
  train, pool, test, class_names = data.load_splits(config)
  ec = config.eval
  # In the few-shot regime `train` holds only the k images per class that pretraining saw, so the
  # probe is fitted on those same labelled images (eval.labels_per_class 0 or >= k: all of them).
  labelled = linear_probe.few_label_indices(train.labels, ec.labels_per_class, ec.probe_seed)
  # Only the labelled train images are ever read: cheap for lazily decoded data sets too.
  train_images, test_images = train.images[labelled], test.images[np.arange(len(test.labels))]
  pool_images = pool.images[np.arange(len(pool.labels))] if len(pool.labels) else None

  def probe(features) -> dict:
    """features: images [N, H, W, 3] uint8 -> [N, F]; fits on labelled train, scores test (and
    the validation pool, in the few-shot regime)."""
    extra = None
    if pool_images is not None:
      extra = {"pool": (features(pool_images), pool.labels)}
    return linear_probe.linear_probe(
      features(train_images),
      train.labels[labelled],
      features(test_images),
      test.labels,
      l2_grid=tuple(ec.l2_grid),
      heldout_fraction=ec.heldout_fraction,
      seed=ec.probe_seed,
      num_classes=len(class_names),
      extra_sets=extra,
    )

  random_model = nnx.merge(*init_model(config))
  random_result = probe(lambda images: extract_features(random_model, images, config))
  model = nnx.merge(*init_model(config))
  restored = restore_encoder(model, workdir, step, config)
  result = probe(lambda images: extract_features(model, images, config))
  raw_result = probe(raw_pixels)

  out = {
    "top1": result["top1"],
    # Recall on each real test class: where a synthetic class helps or hurts shows up here.
    "per_class_top1": dict(zip(class_names, result["per_class_top1"], strict=True)),
    "raw_pixels_top1": raw_result["top1"],
    "random_encoder_top1": random_result["top1"],
    "labels_per_class": int(ec.labels_per_class),
    "step": int(restored),
    "num_labelled": int(len(labelled)),
    "num_test": int(len(test.labels)),
    "num_classes": len(class_names),
    "l2": {"encoder": result["l2"], "raw_pixels": raw_result["l2"], "random": random_result["l2"]},
    "real_per_class": int(config.data.get("real_per_class") or 0),
  }
  if pool_images is not None:
    # The validation pool: the few-shot regime's measure of utility and hyperparameter choice.
    out["pool_top1"] = result["pool"]["top1"]
    out["pool_per_class_top1"] = dict(
      zip(class_names, result["pool"]["per_class_top1"], strict=True)
    )
    out["raw_pixels_pool_top1"] = raw_result["pool"]["top1"]
    out["random_encoder_pool_top1"] = random_result["pool"]["top1"]
    out["num_pool"] = int(len(pool.labels))
  if jax.process_index() == 0:
    with open(os.path.join(workdir, "linear_eval.json"), "w") as f:
      json.dump(out, f, indent=2)
  return out


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  metrics.quiet_library_logs()
  with exit_on_user_error():
    out = evaluate(flags.FLAGS.config, flags.FLAGS.workdir, flags.FLAGS.step)
  print(
    f"Linear probe, {out['labels_per_class']} labels per class, step {out['step']}: "
    f"top-1 {out['top1']:.4f} | raw pixels {out['raw_pixels_top1']:.4f} | "
    f"random encoder {out['random_encoder_top1']:.4f}  -> {flags.FLAGS.workdir}/linear_eval.json"
  )


if __name__ == "__main__":
  _define_flags()
  app.run(main)
