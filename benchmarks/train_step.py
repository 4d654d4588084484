"""The trainer's own jitted step on a random batch, for the benchmarks that time it
(meta_step_cost.py, loader.py)."""

from __future__ import annotations

import time

import numpy as np


def random_batch(config, num_classes: int, seed: int = 0) -> dict:
  """sampler.BATCH_KEYS at config's shapes (batch_size, synthetic_per_real, the stored side
  data.decode_size or data.image_size), random uint8 images, on the default device."""
  import jax

  b, s = config.batch_size, config.data.synthetic_per_real
  size = config.data.get("decode_size") or config.data.image_size
  rng = np.random.default_rng(seed)
  return jax.device_put(
    {
      "real_images": rng.integers(0, 256, (b, size, size, 3), dtype=np.uint8),
      "real_labels": (np.arange(b) % num_classes).astype(np.int32),
      "index": np.arange(b, dtype=np.int64),
      "synthetic_images": rng.integers(0, 256, (b, s, size, size, 3), dtype=np.uint8),
      "synthetic_valid": np.ones((b, s), bool),
      "synthetic_prompt": np.full((b, s), -1, np.int32),
    }
  )


def compiled_step(config, num_classes: int, batch: dict):
  """-> (compiled step, its state after one warm-up step, compile seconds): train.py's step,
  state donated, compiled ahead of the first call."""
  import jax

  from syncon_jax import train

  tx, _ = train.make_optimizer(config)
  graphdef, state = train.create_train_state(config, num_classes, tx)
  step = jax.jit(train.make_train_step(graphdef, tx, config), donate_argnums=(0,))
  t0 = time.perf_counter()
  compiled = step.lower(state, batch).compile()
  compile_s = time.perf_counter() - t0
  state, metrics = compiled(state, batch)  # warm-up
  jax.block_until_ready(metrics)
  return compiled, state, compile_s
