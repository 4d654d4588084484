"""Neighbour tables (tools/nearest_neighbors' files) and the per-step neighbour draw.

For byol_nn's 'table' source (objectives/byol.py, its `host_inputs`): each real image of a batch
gets one of its k nearest neighbours, drawn uniformly from np.random.default_rng((seed, 2, step))
over the global batch, so the draw depends neither on the process count nor on a resume.
"""

from __future__ import annotations

import os

import numpy as np

from syncon_jax.errors import ConfigError, DataError

# The stream of np.random.default_rng((seed, stream, step)); the sampler's synthetic draw is 1.
NEIGHBOR_STREAM = 2


def load_neighbor_table(path: str, num_real: int, k: int) -> np.ndarray:
  """The neighbours file of tools/nearest_neighbors -> int64 [num_real, k], row i the ids
  (real train indices) of image i's k nearest neighbours, nearest first.

  The file's `ids` must cover the real train split exactly (it is keyed by data.load_real's
  train indices, so it must come from latents of this data config).
  """
  if not os.path.isfile(path):
    raise DataError(f"No neighbours file at {path} (objective.byol_nn.neighbors_file)")
  try:
    with np.load(path, allow_pickle=False) as f:
      ids, neighbors = np.asarray(f["ids"], np.int64), np.asarray(f["neighbors"], np.int64)
  except (OSError, ValueError, KeyError) as e:
    raise DataError(f"{path} is not a neighbours file with `ids` and `neighbors`: {e}") from e
  if neighbors.ndim != 2 or ids.shape != neighbors.shape[:1]:
    raise DataError(f"{path}: ids {ids.shape} and neighbors {neighbors.shape} do not match")
  if not isinstance(k, int) or not 1 <= k <= neighbors.shape[1]:
    raise ConfigError(
      f"objective.byol_nn.neighbor_k must be in [1, {neighbors.shape[1]}] for {path}, got {k!r}"
    )
  if len(ids) != num_real or not np.array_equal(np.sort(ids), np.arange(num_real)):
    raise DataError(
      f"{path} has neighbours for {len(ids)} ids, but the real train split has {num_real} "
      "images (ids must be exactly 0..N-1): make it from latents of this data config."
    )
  if neighbors.min() < 0 or neighbors.max() >= num_real:
    raise DataError(f"{path}: neighbour ids outside [0, {num_real})")
  table = np.empty((num_real, k), np.int64)
  table[ids] = neighbors[:, :k]
  return table


def draw(
  table: np.ndarray,
  real_id: np.ndarray,
  index: np.ndarray,
  *,
  step: int,
  batch_size: int,
  seed: int,
) -> np.ndarray:
  """One of each row's k neighbours, uniformly: int64 [b] real ids.

  real_id [b]: the rows' real images; index [b]: their global stream positions (the sampler's
  `index`, step * batch_size + row), which pick the rows' draws out of the global batch's.
  """
  u = np.random.default_rng((seed, NEIGHBOR_STREAM, int(step))).random(batch_size)
  u = u[np.asarray(index) - int(step) * batch_size]
  col = np.minimum((u * table.shape[1]).astype(np.int64), table.shape[1] - 1)
  return table[real_id, col]
