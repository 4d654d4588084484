"""tools/nearest_neighbors.py: the blocked top-k against a float64 numpy brute force, the CLI."""

import os

import numpy as np
import pytest
from conftest import run_cli

from syncon_jax.errors import ConfigError, DataError
from syncon_jax.tools import nearest_neighbors as nn


def brute_force(x: np.ndarray, k: int, metric: str) -> tuple[np.ndarray, np.ndarray]:
  """Independent reference: the full float64 distance matrix, self set to +inf, argsort."""
  x = np.asarray(x, np.float64)
  if metric == "cosine":
    u = x / np.linalg.norm(x, axis=1, keepdims=True)
    d = 1.0 - u @ u.T
  else:
    d = np.sqrt(np.sum((x[:, None, :] - x[None, :, :]) ** 2, axis=-1))
  np.fill_diagonal(d, np.inf)
  idx = np.argsort(d, axis=1, kind="stable")[:, :k]
  return idx, np.take_along_axis(d, idx, axis=1)


@pytest.fixture(scope="module")
def latents() -> np.ndarray:
  # Random Gaussian rows: distinct distances, so the order of neighbours is well defined.
  return np.random.default_rng(0).normal(size=(50, 6)).astype(np.float32) * 3.0


@pytest.mark.parametrize("metric", nn.METRICS)
@pytest.mark.parametrize("block_size", [7, 16, 50, 1000])
def test_knn_matches_brute_force(latents, metric, block_size):
  k = 5
  want_idx, want_dist = brute_force(latents, k, metric)
  idx, dist = nn.knn(latents, k, metric, block_size)
  assert idx.dtype == np.int64 and dist.dtype == np.float32
  assert idx.shape == dist.shape == (len(latents), k)
  np.testing.assert_array_equal(idx, want_idx)
  np.testing.assert_allclose(dist, want_dist, rtol=1e-4, atol=1e-5)
  assert np.all(idx != np.arange(len(latents))[:, None])  # self is never a neighbour
  assert np.all(np.diff(dist, axis=1) >= 0)  # nearest first


def test_knn_k_larger_than_block(latents):
  # 50 rows in blocks of 4, k = 12: the running top-k holds more than one key block.
  want_idx, _ = brute_force(latents, 12, "euclidean")
  np.testing.assert_array_equal(nn.knn(latents, 12, "euclidean", 4)[0], want_idx)


def test_self_excluded_even_among_duplicates():
  rng = np.random.default_rng(1)
  base = rng.normal(size=(10, 4)).astype(np.float32)
  x = np.concatenate([base, base])  # row i and row i + 10 are identical
  for metric in nn.METRICS:
    idx, dist = nn.knn(x, 3, metric, block_size=6)
    n = len(x)
    assert np.all(idx != np.arange(n)[:, None])
    np.testing.assert_array_equal(idx[:, 0], (np.arange(n) + 10) % n)  # the twin comes first
    np.testing.assert_allclose(dist[:, 0], 0.0, atol=1e-3)


def test_knn_errors(latents):
  with pytest.raises(ConfigError, match="k=50"):
    nn.knn(latents, 50, "cosine")
  with pytest.raises(ConfigError, match="cosine"):
    nn.knn(latents, 3, "manhattan")
  with pytest.raises(ConfigError, match="k must be"):
    nn.knn(latents, 0, "cosine")
  with pytest.raises(ConfigError, match="block_size"):
    nn.knn(latents, 3, "cosine", block_size=0)


def test_load_latents_errors(tmp_path):
  with pytest.raises(DataError, match="No latents file"):
    nn.load_latents(str(tmp_path / "missing.npz"))
  bad = str(tmp_path / "bad.npz")
  np.savez(bad, latents=np.zeros((4, 2), np.float32))
  with pytest.raises(DataError, match="ids"):
    nn.load_latents(bad)


def test_cli_end_to_end(tmp_path, latents):
  ids = 1000 + 3 * np.arange(len(latents), dtype=np.int64)  # ids are not row indices
  labels = (np.arange(len(latents)) % 5).astype(np.int32)
  src = str(tmp_path / "latents.npz")
  np.savez(src, ids=ids, latents=latents, labels=labels)
  out = str(tmp_path / "nn" / "neighbors.npz")
  r = run_cli(
    "syncon_jax.tools.nearest_neighbors",
    f"--latents={src}",
    "--metric=euclidean",
    "--k=4",
    f"--out={out}",
    "--block_size=9",
  )
  assert r.returncode == 0, r.stderr[-3000:]
  assert "label_agreement" in r.stdout
  with np.load(out, allow_pickle=False) as f:
    assert sorted(f.files) == ["distances", "ids", "metric", "neighbors"]
    want_idx, want_dist = brute_force(latents, 4, "euclidean")
    assert f["neighbors"].dtype == np.int64 and f["distances"].dtype == np.float32
    np.testing.assert_array_equal(f["ids"], ids)
    np.testing.assert_array_equal(f["neighbors"], ids[want_idx])
    np.testing.assert_allclose(f["distances"], want_dist, rtol=1e-4, atol=1e-5)
    assert str(f["metric"]) == "euclidean"

  bad = run_cli("syncon_jax.tools.nearest_neighbors", f"--latents={src}", "--k=50", f"--out={out}x")
  assert bad.returncode == 2 and "k=50" in bad.stderr
  assert not os.path.exists(out + "x")
