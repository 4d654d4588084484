"""A 2-D map of features (t-SNE, or PCA for a quick look), real and synthetic marked, as a PNG."""

import jax.numpy as jnp
import numpy as np

from syncon_jax.errors import ConfigError
from syncon_jax.losses import l2_normalize

MAP_METHODS = ("tsne", "pca")


def embed_2d(x: np.ndarray, *, method: str, seed: int) -> np.ndarray:
  """x: [N, D] -> [N, 2]; rows L2-normalised first (the geometry the contrastive loss shapes)."""
  if method not in MAP_METHODS:
    raise ConfigError(f"Unknown eval.map_method {method!r}; valid: {list(MAP_METHODS)}")
  # Imported here: sklearn takes ~1 s to import, which every `linear_eval --dry_run` would pay.
  from sklearn.decomposition import PCA
  from sklearn.manifold import TSNE

  x = np.asarray(l2_normalize(jnp.asarray(x, jnp.float32)))
  if method == "pca" or len(x) < 5:
    return PCA(n_components=2, random_state=seed).fit_transform(x)
  perplexity = float(min(30.0, (len(x) - 1) / 3))  # sklearn needs perplexity < N
  return TSNE(n_components=2, init="pca", perplexity=perplexity, random_state=seed).fit_transform(x)


def save_map(
  path: str,
  real: np.ndarray,
  real_labels: np.ndarray,
  class_names,
  *,
  synthetic: np.ndarray | None = None,
  synthetic_labels: np.ndarray | None = None,
  method: str,
  seed: int,
  title: str,
) -> None:
  """One joint 2-D embedding of real [N, D] (dots) and synthetic [M, D] (crosses) features,
  coloured by class; written to `path` (PNG)."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  has_syn = synthetic is not None and len(synthetic)
  both = np.concatenate([real, synthetic]) if has_syn else real
  xy = embed_2d(both, method=method, seed=seed)
  cmap = plt.get_cmap("tab10" if len(class_names) <= 10 else "tab20")
  color = lambda labels: [cmap(int(c) % cmap.N) for c in labels]
  fig, ax = plt.subplots(figsize=(7, 6))
  ax.scatter(*xy[: len(real)].T, c=color(real_labels), s=8, marker="o", label="real (test)")
  if has_syn:
    ax.scatter(*xy[len(real) :].T, c=color(synthetic_labels), s=14, marker="x", label="synthetic")
  if len(class_names) <= 20:
    # Class names at each class's median real position.
    for c, name in enumerate(class_names):
      pts = xy[: len(real)][real_labels == c]
      if len(pts):
        ax.annotate(str(name), np.median(pts, axis=0), fontsize=11, weight="bold")
  ax.set_title(title)
  ax.legend(loc="best", fontsize=8)
  ax.set_xticks([])
  ax.set_yticks([])
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
