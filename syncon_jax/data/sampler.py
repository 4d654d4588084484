"""The real + synthetic batch order: one global order fixed by (seed, step), sharded by host.

Real images form an endless stream of per-epoch permutations; permutation e is drawn from
np.random.default_rng((seed, e)) and batch `step` is stream positions [step*B, (step+1)*B), so a
batch may straddle two epochs and every image appears once per epoch. Each real image gets
`synthetic_per_real` synthetic images of its class, drawn uniformly with replacement from
np.random.default_rng((seed, 1, step)). Nothing depends on the process or device count, so a
resumed run or a run on another topology sees the same global batches.
"""

from __future__ import annotations

import numpy as np

from syncon_jax.errors import ConfigError, DataError

# The batch at a step, defined once: host_batch fills every key, train.global_batch ships
# BATCH_KEYS to the devices, and the objectives read them (b rows, S = synthetic_per_real; with
# S = 0 the synthetic arrays have a 0-sized axis). An objective's own host data (its
# `host_inputs`) joins the batch under keys it names.
BATCH_KEYS = {
  "real_images": "uint8 [b, H, W, 3]",
  "real_labels": "int32 [b]",
  "index": "int64 [b] position in the global stream (per-sample PRNG keys)",
  "synthetic_images": "uint8 [b, S, H, W, 3] of the real image's class (zeros in invalid slots)",
  "synthetic_valid": "bool [b, S], False for a placeholder (a class without synthetic images)",
  "synthetic_prompt": "int32 [b, S] prompt id (metadata.jsonl), -1 in invalid slots or none",
}
# Host-side only (never sent to the devices).
HOST_KEYS = {
  "synthetic_labels": "int32 [b, S] the synthetic images' labels (the real label if invalid)",
  "real_id": "int64 [b] the real images' indices in real_images",
}


class BatchSampler:
  """Indices and host-local arrays of the global batch at a step."""

  def __init__(
    self,
    real_labels: np.ndarray,
    synthetic_labels: np.ndarray,
    *,
    num_classes: int,
    batch_size: int,
    synthetic_per_real: int,
    seed: int,
  ):
    """Args: real_labels int [N]; synthetic_labels int [M] (M may be 0); num_classes;
    batch_size B (global real images per step); synthetic_per_real S >= 0; seed >= 0."""
    if int(batch_size) < 1:
      raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")
    if int(synthetic_per_real) < 0:
      raise ConfigError(f"data.synthetic_per_real must be >= 0, got {synthetic_per_real!r}")
    if int(seed) < 0:
      raise ConfigError(f"seed must be >= 0 (numpy seeds the batch order with it), got {seed!r}")
    self.real_labels = np.asarray(real_labels, np.int32).reshape(-1)
    self.synthetic_labels = np.asarray(synthetic_labels, np.int32).reshape(-1)
    if self.real_labels.size == 0:
      raise DataError("The real training split is empty; there is nothing to sample.")
    for what, labels in (("real", self.real_labels), ("synthetic", self.synthetic_labels)):
      if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataError(
          f"{what} labels must lie in [0, {num_classes}), got {labels.min()}..{labels.max()}"
        )
    self.num_classes = int(num_classes)
    self.batch_size = int(batch_size)
    self.synthetic_per_real = int(synthetic_per_real)
    self.seed = int(seed)
    # Synthetic indices grouped by class: members of class c are
    # _by_class[_start[c] : _start[c] + _count[c]], in index order.
    self._by_class = np.argsort(self.synthetic_labels, kind="stable")
    self._count = np.bincount(self.synthetic_labels, minlength=self.num_classes)
    self._start = np.concatenate([[0], np.cumsum(self._count)[:-1]])
    self._perms: dict[int, np.ndarray] = {}

  @property
  def num_real(self) -> int:
    return int(self.real_labels.size)

  @property
  def steps_per_epoch(self) -> float:
    """Steps for one pass over the real images (fractional when B does not divide N)."""
    return self.num_real / self.batch_size

  def _permutation(self, epoch: int) -> np.ndarray:
    perm = self._perms.get(epoch)
    if perm is None:
      # Consecutive steps reuse the same one or two epochs; older ones are not needed again.
      if len(self._perms) >= 4:
        self._perms.pop(next(iter(self._perms)))
      perm = np.random.default_rng((self.seed, epoch)).permutation(self.num_real)
      self._perms[epoch] = perm
    return perm

  def global_indices(self, step: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices of the global batch at `step`.

    Returns:
      real: int64 [B] indices into the real images;
      synthetic: int64 [B, S] indices into the synthetic images, same class as the real row;
      synthetic_valid: bool [B, S], False (index 0) where the class has no synthetic image.
    """
    if int(step) < 0:
      raise ValueError(f"step must be >= 0, got {step}")
    positions = int(step) * self.batch_size + np.arange(self.batch_size, dtype=np.int64)
    epochs, offsets = np.divmod(positions, self.num_real)
    real = np.empty(self.batch_size, np.int64)
    for epoch in np.unique(epochs):
      sel = epochs == epoch
      real[sel] = self._permutation(int(epoch))[offsets[sel]]

    labels = self.real_labels[real]
    count = self._count[labels][:, None]
    shape = (self.batch_size, self.synthetic_per_real)
    u = np.random.default_rng((self.seed, 1, int(step))).random(shape)
    # floor(u * count) is uniform on 0..count-1; min() guards the u -> 1 rounding edge.
    pick = np.minimum((u * count).astype(np.int64), np.maximum(count - 1, 0))
    valid = np.broadcast_to(count > 0, shape).copy()
    flat = np.where(valid, self._start[labels][:, None] + pick, 0)
    synthetic = np.where(valid, self._by_class[flat] if self._by_class.size else 0, 0)
    return real, synthetic.astype(np.int64), valid

  def host_batch(
    self,
    step: int,
    real_images: np.ndarray,
    synthetic_images: np.ndarray,
    *,
    process_index: int,
    process_count: int,
    synthetic_prompts: np.ndarray | None = None,
  ) -> dict[str, np.ndarray]:
    """This host's rows [p*B/P, (p+1)*B/P) of the global batch at `step`, as numpy arrays.

    Args:
      real_images: uint8 [N, H, W, 3], aligned with real_labels.
      synthetic_images: uint8 [M, H, W, 3], aligned with synthetic_labels.
      synthetic_prompts: int32 [M] prompt id per synthetic image (-1: none), or None.

    Returns BATCH_KEYS and HOST_KEYS, with b = B / P.
    """
    host_rows = self.bind(
      real_images,
      synthetic_images,
      synthetic_prompts,
      process_index=process_index,
      process_count=process_count,
    )
    return host_rows(step)

  def bind(
    self,
    real_images,
    synthetic_images,
    synthetic_prompts=None,
    *,
    process_index: int,
    process_count: int,
  ):
    """-> host_batch(step) for these images and this process, everything checked once."""
    if process_count < 1 or not 0 <= process_index < process_count:
      raise ValueError(f"process_index {process_index} not in [0, {process_count})")
    if self.batch_size % process_count:
      raise ConfigError(
        f"batch_size={self.batch_size} is not divisible by the process count {process_count}; "
        "set batch_size to a multiple of it."
      )
    self.check_images(real_images, synthetic_images)
    return lambda step: self._host_rows(
      step, real_images, synthetic_images, process_index, process_count, synthetic_prompts
    )

  def check_images(self, real_images, synthetic_images) -> None:
    if len(real_images) != self.num_real:
      raise ValueError(f"real_images has {len(real_images)} rows, labels {self.num_real}")
    if len(synthetic_images) != self.synthetic_labels.size:
      raise ValueError(
        f"synthetic_images has {len(synthetic_images)} rows, labels {self.synthetic_labels.size}"
      )
    if (
      self.synthetic_per_real
      and len(synthetic_images)
      and synthetic_images.shape[1:] != real_images.shape[1:]
    ):
      raise DataError(
        f"Synthetic images have shape {synthetic_images.shape[1:]} but real images "
        f"{real_images.shape[1:]}; load both at the same data.image_size."
      )

  def _host_rows(
    self, step, real_images, synthetic_images, process_index, process_count, synthetic_prompts
  ) -> dict[str, np.ndarray]:
    image_shape = real_images.shape[1:]
    per_host = self.batch_size // process_count
    rows = slice(process_index * per_host, (process_index + 1) * per_host)
    real, synthetic, valid = self.global_indices(step)
    real, synthetic, valid = real[rows], synthetic[rows], valid[rows]

    labels = self.real_labels[real]
    syn_images = np.zeros((*synthetic.shape, *image_shape), real_images.dtype)
    syn_labels = np.broadcast_to(labels[:, None], synthetic.shape).copy()
    syn_prompts = np.full(synthetic.shape, -1, np.int32)
    if valid.any():
      syn_images[valid] = synthetic_images[synthetic[valid]]
      syn_labels[valid] = self.synthetic_labels[synthetic[valid]]
      if synthetic_prompts is not None:
        syn_prompts[valid] = synthetic_prompts[synthetic[valid]]
    return {
      "real_images": real_images[real],
      "real_labels": labels,
      "index": int(step) * self.batch_size + np.arange(rows.start, rows.stop, dtype=np.int64),
      "synthetic_images": syn_images,
      "synthetic_labels": syn_labels,
      "synthetic_valid": valid,
      "synthetic_prompt": syn_prompts,
      "real_id": real,
    }
