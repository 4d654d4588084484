r"""The k nearest other latents of every latent, by a blocked exact top-k in JAX.

  python -m syncon_jax.tools.nearest_neighbors --latents=runs/latent_vae/latents.npz \
    --metric=cosine --k=10 --out=runs/latent_vae/neighbors.npz [--block_size=1024]

Input: an npz with `ids` int [N] and `latents` float [N, D] (what syncon_jax.latent.train
writes; an optional `labels` [N] is used only to log how often neighbours share a label).
Output (np.savez, no pickles): `ids` int64 [N] (the input's), `neighbors` int64 [N, k] (the ids
of each row's k nearest other rows, nearest first), `distances` float32 [N, k] (cosine distance
1 - cos, or euclidean distance), `metric` (a 0-d string).

The search never builds the N x N distance matrix: query blocks of block_size rows scan key
blocks of block_size rows, merging each block's distances into a running top-k with
jax.lax.top_k, so memory is O(block_size^2 + N k) beside the latents themselves.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags, logging

from syncon_jax import platform
from syncon_jax.errors import ConfigError, DataError, exit_on_user_error
from syncon_jax.losses import l2_normalize

METRICS = ("cosine", "euclidean")


def check_knn_args(n: int, k: int, metric: str, block_size: int) -> None:
  """Raises ConfigError for arguments knn cannot honour on N = n latents."""
  if metric not in METRICS:
    raise ConfigError(f"Unknown metric {metric!r}; valid: {list(METRICS)}")
  if not isinstance(k, int | np.integer) or k < 1:
    raise ConfigError(f"k must be a positive integer, got {k!r}")
  if k >= n:
    raise ConfigError(f"k={k} needs more than k latents (self excluded), but there are {n}")
  if not isinstance(block_size, int | np.integer) or block_size < 1:
    raise ConfigError(f"block_size must be a positive integer, got {block_size!r}")


@functools.partial(jax.jit, static_argnames=("k", "metric", "block", "n"))
def _blocked_knn(x: jax.Array, *, k: int, metric: str, block: int, n: int):
  """x [nb * block, D] float32 (rows >= n are padding) -> (indices int32, distances) [nb*block, k].

  Ranks by squared euclidean distance (or 1 - cos on normalised rows); ties go to the lower index.
  """
  nb = x.shape[0] // block
  if metric == "cosine":
    x = l2_normalize(x)
  sq = jnp.sum(jnp.square(x), axis=-1)
  xb, sqb = x.reshape(nb, block, -1), sq.reshape(nb, block)
  local = jnp.arange(block)

  def query_block(args):
    qi, q, q_sq = args
    q_ids = qi * block + local

    def key_block(carry, kargs):
      best_neg, best_idx = carry
      ki, keys, k_sq = kargs
      dots = jnp.matmul(q, keys.T, precision=jax.lax.Precision.HIGHEST)  # [block, block]
      if metric == "cosine":
        dist = 1.0 - dots
      else:
        dist = jnp.maximum(q_sq[:, None] + k_sq[None, :] - 2.0 * dots, 0.0)
      k_ids = ki * block + local
      invalid = (k_ids[None, :] == q_ids[:, None]) | (k_ids[None, :] >= n)
      neg = jnp.where(invalid, -jnp.inf, -dist)
      # Running best first: among equal distances the earlier (lower) index wins.
      cand_neg = jnp.concatenate([best_neg, neg], axis=1)
      cand_idx = jnp.concatenate([best_idx, jnp.broadcast_to(k_ids, neg.shape)], axis=1)
      top_neg, pos = jax.lax.top_k(cand_neg, k)
      return (top_neg, jnp.take_along_axis(cand_idx, pos, axis=1)), None

    init = (jnp.full((block, k), -jnp.inf, x.dtype), jnp.full((block, k), -1, jnp.int32))
    (best_neg, best_idx), _ = jax.lax.scan(key_block, init, (jnp.arange(nb), xb, sqb))
    return best_idx, -best_neg

  idx, dist = jax.lax.map(query_block, (jnp.arange(nb), xb, sqb))
  idx, dist = idx.reshape(nb * block, k), dist.reshape(nb * block, k)
  if metric == "euclidean":
    dist = jnp.sqrt(dist)
  return idx, dist


def knn(
  latents: np.ndarray | jax.Array, k: int, metric: str = "cosine", block_size: int = 1024
) -> tuple[np.ndarray, np.ndarray]:
  """The k nearest other rows of every row of latents [N, D].

  Returns (indices int64 [N, k] row indices, nearest first; distances float32 [N, k]): cosine
  distance 1 - cos (zero rows count as orthogonal to everything) or euclidean distance. A row is
  never its own neighbour, even when it has duplicates. Computed in float32 in blocks of
  min(block_size, N) rows: memory O(block_size^2 + N k).
  """
  latents = np.asarray(latents)
  if latents.ndim != 2:
    raise DataError(f"latents must be [N, D], got shape {latents.shape}")
  n = latents.shape[0]
  check_knn_args(n, k, metric, block_size)
  block = int(min(block_size, n))
  padded = -(-n // block) * block
  x = np.zeros((padded, latents.shape[1]), np.float32)
  x[:n] = latents
  idx, dist = _blocked_knn(jnp.asarray(x), k=int(k), metric=metric, block=block, n=n)
  return np.asarray(idx[:n], np.int64), np.asarray(dist[:n], np.float32)


def load_latents(path: str) -> dict[str, np.ndarray]:
  """Reads a latents npz (ids [N], latents [N, D], optional labels [N]); DataError if unusable."""
  if not os.path.isfile(path):
    raise DataError(f"No latents file at {path}")
  try:
    with np.load(path, allow_pickle=False) as f:
      arrays = {name: f[name] for name in f.files}
  except (OSError, ValueError) as e:
    raise DataError(f"Cannot read {path} as an npz file: {e}") from e
  missing = [name for name in ("ids", "latents") if name not in arrays]
  if missing:
    raise DataError(f"{path} lacks arrays {missing} (it has {sorted(arrays)})")
  ids, latents = arrays["ids"], arrays["latents"]
  if latents.ndim != 2 or ids.shape != (latents.shape[0],):
    raise DataError(f"{path}: need ids [N] and latents [N, D], got {ids.shape}, {latents.shape}")
  if not np.all(np.isfinite(latents)):
    raise DataError(f"{path}: latents hold NaN or infinite values")
  return arrays


def write_neighbors(
  path: str, ids: np.ndarray, indices: np.ndarray, distances: np.ndarray, metric: str
) -> None:
  """Writes the neighbours file (format in the module docstring); indices are row indices."""
  ids = np.asarray(ids, np.int64)
  out_dir = os.path.dirname(os.path.abspath(path))
  os.makedirs(out_dir, exist_ok=True)
  tmp = path + ".tmp.npz"
  np.savez(
    tmp,
    ids=ids,
    neighbors=ids[indices],
    distances=np.asarray(distances, np.float32),
    metric=np.asarray(metric),
  )
  os.replace(tmp, path)


def run(latents_path: str, out: str, *, k: int, metric: str, block_size: int) -> dict:
  """Reads latents, finds neighbours, writes them; returns a small summary."""
  arrays = load_latents(latents_path)
  indices, distances = knn(arrays["latents"], k, metric, block_size)
  write_neighbors(out, arrays["ids"], indices, distances, metric)
  summary = {"n": len(indices), "k": k, "metric": metric, "mean_distance": float(distances.mean())}
  if "labels" in arrays and arrays["labels"].shape == arrays["ids"].shape:
    labels = arrays["labels"]
    summary["label_agreement"] = float(np.mean(labels[indices] == labels[:, None]))
  return summary


def define_flags() -> None:
  """Defined only when this module runs as the program (see syncon_jax/main.py)."""
  flags.DEFINE_string("latents", None, "npz with ids [N] and latents [N, D].")
  flags.DEFINE_string("metric", "cosine", f"Distance between latents: one of {list(METRICS)}.")
  flags.DEFINE_integer("k", 10, "Neighbours per latent (self excluded).")
  flags.DEFINE_string("out", None, "Output npz: ids, neighbors, distances, metric.")
  flags.DEFINE_integer("block_size", 1024, "Rows per query and key block.")
  flags.mark_flags_as_required(["latents", "out"])


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  FLAGS = flags.FLAGS
  platform.start_jax_program()
  with exit_on_user_error():
    summary = run(
      FLAGS.latents, FLAGS.out, k=FLAGS.k, metric=FLAGS.metric, block_size=FLAGS.block_size
    )
  logging.info("Wrote %s: %s", FLAGS.out, summary)
  print(f"Wrote {FLAGS.out}: {summary}")


if __name__ == "__main__":
  from syncon_jax import cli

  cli.run(main, define_flags)
