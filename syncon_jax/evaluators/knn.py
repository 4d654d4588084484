"""Weighted k-nearest-neighbour classification on frozen features, as DINO and solo-learn do it.

Features are L2-normalised, similarity is the cosine, each test image takes its k most similar
train images, and class c scores sum_i 1[y_i = c] * exp(s_i / T) over those neighbours (Wu et al.
2018; DINO's `knn_classifier`, k = 20, T = 0.07). The rows are normalised by losses.l2_normalize;
the rest is numpy on the host, in blocks of test rows so memory is O(block * N_train), never M x N
at once.
"""

import jax.numpy as jnp
import numpy as np

from syncon_jax.losses import l2_normalize


def knn_scores(
  train_x: np.ndarray,
  train_y: np.ndarray,
  test_x: np.ndarray,
  *,
  k: int,
  temperature: float,
  num_classes: int,
  block_size: int = 1024,
) -> np.ndarray:
  """Class scores of the weighted kNN vote.

  train_x: [N, D], train_y: [N] int, test_x: [M, D] -> [M, num_classes] float32, row m holding
  sum over m's k nearest train rows i (cosine) of 1[y_i = c] * exp(s_i / temperature).
  k larger than N uses every train row.
  """
  train, test = (np.asarray(l2_normalize(jnp.asarray(x, jnp.float32))) for x in (train_x, test_x))
  k = min(int(k), len(train))
  out = np.zeros((len(test), num_classes), np.float32)
  for start in range(0, len(test), block_size):
    sim = test[start : start + block_size] @ train.T  # [b, N]
    nearest = np.argpartition(-sim, k - 1, axis=1)[:, :k]  # [b, k], any order
    s = np.take_along_axis(sim, nearest, axis=1)
    weight = np.exp(s / temperature)
    rows = np.arange(len(s))[:, None]
    np.add.at(out[start : start + len(s)], (rows, train_y[nearest]), weight)
  return out


def knn_classify(
  train_x: np.ndarray,
  train_y: np.ndarray,
  test_x: np.ndarray,
  test_y: np.ndarray,
  *,
  k: int,
  temperature: float,
  num_classes: int,
  block_size: int = 1024,
) -> dict:
  """Weighted kNN accuracy. -> {"top1", "top5", "per_class_top1" [num_classes] (None: class
  absent from test)}; top5 is top-min(5, num_classes)."""
  scores = knn_scores(
    train_x,
    train_y,
    test_x,
    k=k,
    temperature=temperature,
    num_classes=num_classes,
    block_size=block_size,
  )
  top = np.argsort(-scores, axis=1, kind="stable")[:, : min(5, num_classes)]
  hit1 = top[:, 0] == test_y
  hit5 = np.any(top == test_y[:, None], axis=1)
  return {
    "top1": float(np.mean(hit1)),
    "top5": float(np.mean(hit5)),
    "per_class_top1": per_class_recall(hit1, test_y, num_classes),
  }


def per_class_recall(hit: np.ndarray, labels: np.ndarray, num_classes: int) -> list:
  """hit [M] bool, labels [M] -> [num_classes] recall per class, None where a class is absent."""
  count = np.bincount(labels, minlength=num_classes)
  correct = np.bincount(labels, weights=hit.astype(np.float64), minlength=num_classes)
  return [float(c / n) if n else None for c, n in zip(correct, count, strict=True)]


def mean_per_class(per_class: list) -> float:
  """Mean of the per-class recalls of the classes present (Kornblith et al. 2019's metric)."""
  present = [r for r in per_class if r is not None]
  return float(np.mean(present)) if present else float("nan")
