"""The softmax-contrastive losses on the global batch: SupCon, SynCon, NT-Xent (SimCLR) and
StableRep's multi-positive loss, each with the numbers of the implementation its docstring names,
corner cases included (DESIGN.md, "Loss contract").

All four run on `core.contrastive_core`, densely or, with `block_size`, blockwise. `supcon_loss`
and `syncon_loss` use features as given (like SupContrast), so features far from unit norm give
a large but finite loss; they are not renormalised, which keeps SupContrast's numbers for any
input. `ntxent_loss` and `multipos_loss` normalise inside, as their references do.

`reduction='mean'` (default) gives the scalar the references give; `'none'` the per-anchor losses
they average, 0 on rows that are not anchors (their 'mean' divides by the number of anchors).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from syncon_jax.losses.core import Meta, contrastive_core, simple_meta
from syncon_jax.losses.numerics import compute_dtype, l2_normalize

Array = jax.Array

# Where SynCon's synthetic rows sit in the denominators (objective.syncon.synthetic_denominator):
#   'all'       the proposal's literal form: every synthetic row counts 1 in every A(i), so a
#               class at w = 0 still pushes every anchor (its own class's too) away from it;
#   'weighted'  synthetic row u counts w_u in every denominator, so w = 0 is the same as removing
#               the row from the batch (and w = 1 is the literal form).
SYNTHETIC_DENOMINATORS = ("all", "weighted")


def _scale(temperature, base_temperature, dtype) -> Array:
  """temperature / base_temperature in the compute dtype (a traced temperature works too)."""
  return jnp.asarray(temperature, dtype) / jnp.asarray(base_temperature, dtype)


def supcon_loss(
  features: Array,
  labels: Array | None = None,
  mask: Array | None = None,
  *,
  temperature: float = 0.07,
  base_temperature: float = 0.07,
  contrast_mode: str = "all",
  valid: Array | None = None,
  block_size: int | None = None,
  reduction: str = "mean",
) -> Array:
  """SupContrast's `SupConLoss` (Khosla et al. 2020, L_out), same numbers.

  Args:
    features: [batch, n_views, dim] (more trailing dims are flattened), L2-normalised by the
      caller and used as given. Views are concatenated view-major: row = v * batch + i.
    labels: [batch] int; positives are other rows with the same label.
    mask: [batch, batch]; mask[i, j] marks sample j positive for anchor sample i, used as is
      (may be asymmetric or fractional). Neither labels nor mask: SimCLR (identity mask).
    temperature, base_temperature: the loss is scaled by temperature / base_temperature.
    contrast_mode: 'all' (every row is an anchor) or 'one' (view 0 only); both contrast
      against all rows but the anchor itself.
    valid: [batch] bool or None (all valid; SupContrast). Every view of an invalid sample
      (a placeholder slot) is neither anchor, positive nor in any denominator: the result
      equals the loss on the batch with those samples deleted.
    block_size: rows/columns per block for the memory-linear path; None builds the matrix.
    reduction: 'mean' or 'none'.

  Returns:
    'mean': scalar, the mean over (valid) anchors of -(T / T_base) * mean over positives of
    log p; an anchor without positives contributes 0 and still counts in the mean.
    'none': [batch * n_views] ('all') or [batch] ('one'), row v * batch + i, 0 for an invalid
    sample's rows.
  """
  if features.ndim < 3:
    raise ValueError(f"features must be [batch, n_views, ...], got shape {features.shape}")
  if labels is not None and mask is not None:
    raise ValueError("supcon_loss takes labels or mask, not both")
  batch, n_views = features.shape[:2]
  n_rows = {"all": batch * n_views, "one": batch}[contrast_mode]
  dtype = compute_dtype(features)
  contrast = jnp.swapaxes(features.reshape(batch, n_views, -1), 0, 1).reshape(batch * n_views, -1)
  contrast = contrast.astype(dtype)
  sample = jnp.tile(jnp.arange(batch), n_views)
  if labels is not None:
    labels = jnp.asarray(labels).reshape(-1)
    if labels.shape[0] != batch:
      raise ValueError(f"labels has {labels.shape[0]} entries for a batch of {batch}")
    keys = labels[sample]
  else:
    keys = sample
  if mask is not None:
    mask = jnp.asarray(mask)
    if mask.shape != (batch, batch):
      raise ValueError(f"mask must be [{batch}, {batch}], got {mask.shape}")
    mask = jax.lax.stop_gradient(mask.astype(dtype))
  meta = simple_meta(keys, n_rows, dtype, mask)
  if valid is not None:
    valid = jnp.asarray(valid, bool)
    if valid.shape != (batch,):
      raise ValueError(f"valid must have shape ({batch},), got {valid.shape}")
    meta = meta._replace(col_valid=valid[sample], anchor_w=valid[sample][:n_rows].astype(dtype))
  loss = contrastive_core(
    contrast, n_rows, jnp.ones((1, contrast.shape[0]), dtype), temperature, meta, n_groups=1,
    block_size=block_size, reduction=reduction,
  )  # fmt: skip
  return _scale(temperature, base_temperature, dtype) * loss


def syncon_loss(
  features: Array,
  labels: Array,
  is_synthetic: Array,
  synthetic_weight: Array,
  *,
  temperature: float = 0.1,
  base_temperature: float | None = None,
  valid: Array | None = None,
  block_size: int | None = None,
  synthetic_denominator: str = "all",
  reduction: str = "mean",
) -> Array:
  """SynCon: SupCon over real anchors with weighted synthetic positives (DESIGN.md).

  For real anchor i: A(i) all valid rows but i, P(i) real valid rows of i's class but i,
  U(i) synthetic valid rows of i's class, log p = log softmax over A(i);
  loss_i = -mean_P log p - (1/|U|) sum_U w_u log p (an empty P or U gives 0 for its term).
  synthetic_denominator 'all': every row of A(i) counts 1 in the softmax's denominator;
  'weighted': a synthetic row u counts w_u there (w_u = 0 equals deleting the row).

  Args:
    features: [n, dim] L2-normalised rows (every view of every real and synthetic sample),
      used as given.
    labels: [n] int.
    is_synthetic: [n] bool.
    synthetic_weight: [n] float, the weight row u carries as a positive (ignored on real
      rows); pass per-class weights as w[labels]. Differentiable.
    temperature, base_temperature: result scaled by temperature / base_temperature
      (base_temperature defaults to temperature).
    valid: [n] bool or None (all valid). Invalid rows (placeholder synthetic rows) are neither
      anchors, positives nor in any denominator.
    block_size: rows/columns per block for the memory-linear path; None builds the matrix.
    synthetic_denominator: 'all' | 'weighted' (SYNTHETIC_DENOMINATORS).
    reduction: 'mean' or 'none'.

  Returns:
    'mean': scalar, (T / T_base) * mean over real valid anchors of loss_i (0 when there are
    none). 'none': [n], (T / T_base) * loss_i on real valid rows, 0 on the others.
  """
  base_temperature = temperature if base_temperature is None else base_temperature
  if features.ndim != 2:
    raise ValueError(f"features must be [n, dim], got shape {features.shape}")
  n = features.shape[0]
  for name, arr in (("labels", labels), ("is_synthetic", is_synthetic)):
    if jnp.shape(arr) != (n,):
      raise ValueError(f"{name} must have shape ({n},), got {jnp.shape(arr)}")
  if jnp.shape(synthetic_weight) != (n,):
    raise ValueError(f"synthetic_weight must have shape ({n},), got {jnp.shape(synthetic_weight)}")
  dtype = compute_dtype(features, synthetic_weight)
  is_synthetic = jnp.asarray(is_synthetic, bool)
  valid = jnp.ones(n, bool) if valid is None else jnp.asarray(valid, bool)
  if valid.shape != (n,):
    raise ValueError(f"valid must have shape ({n},), got {valid.shape}")
  labels = jnp.asarray(labels)
  meta = Meta(
    col_key=labels,
    col_group=is_synthetic.astype(jnp.int32),
    col_valid=valid,
    anchor_w=(valid & ~is_synthetic).astype(dtype),
    mask=None,
  )
  features = features.astype(dtype)
  weights = jnp.stack([jnp.ones(n, dtype), jnp.asarray(synthetic_weight).astype(dtype)])
  den_w = {"all": None, "weighted": jnp.where(is_synthetic, weights[1], 1)}[synthetic_denominator]
  loss = contrastive_core(
    features, n, weights, temperature, meta, n_groups=2, block_size=block_size, den_w=den_w,
    reduction=reduction,
  )  # fmt: skip
  return _scale(temperature, base_temperature, dtype) * loss


def ntxent_loss(
  z1: Array,
  z2: Array,
  *,
  temperature: float = 0.5,
  block_size: int | None = None,
  reduction: str = "mean",
) -> Array:
  """SimCLR's NT-Xent, same numbers as lightly's `NTXentLoss` without a memory bank.

  Args:
    z1, z2: [batch, dim], the two views; normalised inside.
    reduction: 'mean' or 'none'.
  Returns:
    'mean': scalar, the mean over the 2 * batch anchors of -log softmax(positive) over all rows
    but self. 'none': [2 * batch], z1's rows first.
  """
  if z1.shape != z2.shape or z1.ndim != 2:
    raise ValueError(f"z1 and z2 must both be [batch, dim], got {z1.shape} and {z2.shape}")
  dtype = compute_dtype(z1, z2)
  z = l2_normalize(jnp.concatenate([z1, z2]).astype(dtype), rsqrt=True)
  meta = simple_meta(jnp.tile(jnp.arange(z1.shape[0]), 2), z.shape[0], dtype)
  n = z.shape[0]
  return contrastive_core(
    z, n, jnp.ones((1, n), dtype), temperature, meta, n_groups=1, block_size=block_size,
    reduction=reduction,
  )  # fmt: skip


def multipos_loss(
  features: Array,
  labels: Array,
  *,
  temperature: float = 0.1,
  valid: Array | None = None,
  block_size: int | None = None,
  reduction: str = "mean",
) -> Array:
  """StableRep's `MultiPosConLoss` (single process), same numbers.

  Args:
    features: [n, dim], normalised inside.
    labels: [n] int; the target of row i is uniform over the other rows with i's label.
    valid: [n] bool or None (all valid). A row with valid=False is neither anchor, positive
      nor in any denominator: the result equals the loss with those rows deleted.
    reduction: 'mean' or 'none'.
  Returns:
    'mean': scalar, the mean over all (valid) rows of the cross-entropy against softmax over
    all rows but i (rows without a positive contribute 0). 'none': [n], 0 on invalid rows.
  """
  if features.ndim != 2 or jnp.shape(labels) != features.shape[:1]:
    raise ValueError(f"need features [n, dim] and labels [n], got {features.shape}, "
                     f"{jnp.shape(labels)}")  # fmt: skip
  dtype = compute_dtype(features)
  z = l2_normalize(features.astype(dtype), rsqrt=True)
  meta = simple_meta(jnp.asarray(labels), z.shape[0], dtype)
  if valid is not None:
    valid = jnp.asarray(valid, bool)
    if valid.shape != features.shape[:1]:
      raise ValueError(f"valid must have shape ({features.shape[0]},), got {valid.shape}")
    meta = meta._replace(col_valid=valid, anchor_w=valid.astype(dtype))
  n = z.shape[0]
  return contrastive_core(
    z, n, jnp.ones((1, n), dtype), temperature, meta, n_groups=1, block_size=block_size,
    reduction=reduction,
  )  # fmt: skip
