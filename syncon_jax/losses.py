"""Loss functions on the global batch: contrastive (SupCon, SynCon, NT-Xent, StableRep, MoCo),
BYOL, triplet (with batch-hard / batch-all mining) and the supervised cross-entropy baseline.

Each contrastive loss matches the implementation its docstring names, corner cases included
(see DESIGN.md, "Loss contract"). Similarities, softmax and reductions run in float32 for
bf16/f16 inputs and in float64 for float64 inputs.

Large batches: `supcon_loss`, `syncon_loss`, `ntxent_loss` and `multipos_loss` take
`block_size`. With it set, the [anchors, contrast] similarity matrix is never built: row blocks
stream over column blocks with an online log-sum-exp, and a `jax.custom_vjp` recomputes the
blocks in the backward pass, so memory is O(N * (dim + block_size)) instead of O(N^2).

Unit-norm inputs: `supcon_loss` and `syncon_loss` use features as given (like SupContrast),
so features far from unit norm give a large but finite loss; they are not renormalised, which
keeps SupContrast's numbers for any input. `ntxent_loss`, `multipos_loss`, `moco_loss` and
`byol_loss` normalise inside, as their references do.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from syncon_jax.errors import ConfigError

Array = jax.Array

# Similarities are what the softmax sees: on TPU/GPU the default float32 matmul may drop to
# bf16/TF32 passes, which would make losses disagree with their references.
_PRECISION = jax.lax.Precision.HIGHEST
# Finite stand-in for -inf as the initial running max: -inf - (-inf) would give NaN.
_NEG_SENTINEL = -1e30
# SupContrast's guard: an anchor whose positive weights sum below this divides by 1 instead.
_MIN_POSITIVES = 1e-6


def _compute_dtype(*xs: Array) -> jnp.dtype:
  """float32 for bf16/f16/f32 inputs, float64 when any input is float64."""
  dtype = jnp.float32
  for x in xs:
    dtype = jnp.promote_types(dtype, jnp.asarray(x).dtype)
  return jnp.dtype(dtype)


def l2_normalize(x: Array, axis: int = -1, eps: float = 1e-12) -> Array:
  """`x / max(||x||, eps)` along `axis` (torch's F.normalize); finite gradient at x = 0."""
  sq = jnp.sum(x * x, axis=axis, keepdims=True)
  return x / jnp.sqrt(jnp.maximum(sq, eps * eps))


def _check_block_size(block_size: int | None) -> None:
  if block_size is not None and (not isinstance(block_size, int) or block_size <= 0):
    raise ConfigError(f"block_size must be a positive int or None, got {block_size!r}")


# Range checks for scalar hyperparameters that stay traced inside jit (so a temperature may be
# learned); they run on the Python values before tracing. The config key is named because
# that is where a bad value comes from.
_SCALAR_CHECKS: dict[str, tuple[Callable[[float], bool], str]] = {
  "temperature": (lambda v: v > 0, "> 0 (objective.temperature)"),
  "base_temperature": (lambda v: v > 0, "> 0"),
  "margin": (lambda v: v >= 0, ">= 0"),
  "label_smoothing": (lambda v: 0 <= v < 1, "in [0, 1)"),
}


def _jit_loss(*static_argnames: str):
  """jax.jit with the given static keyword arguments, after checking scalar hyperparameters.

  One compiled program per loss and shape, also for eager callers (op-by-op dispatch would
  compile every primitive separately).
  """

  def wrap(fn):
    jitted = jax.jit(fn, static_argnames=static_argnames)

    @functools.wraps(fn)
    def call(*args, **kwargs):
      for name, (ok, requirement) in _SCALAR_CHECKS.items():
        value = kwargs.get(name)
        if isinstance(value, int | float) and not ok(value):
          raise ConfigError(f"{fn.__name__}: {name} must be {requirement}, got {value!r}")
      return jitted(*args, **kwargs)

    return call

  return wrap


# ----------------------------------------------------------------------------------------------
# The shared contrastive core.
#
# Anchor rows r (features q[r]) contrast against columns c (features k[c]) with logits
# l = q k^T / T. Column c is in the denominator of row r when col_valid[c] and c != row_self[r].
# Positives come in groups g (SynCon: g=0 real, g=1 synthetic; the others use one group):
# pos_g[r, c] = allowed * base[r, c] * (col_group[c] == g), where base is label equality
# (row_key == col_key) or, with a user mask, mask[row_key[r], col_key[c]]. With column weights
# cw_g (differentiable; ones except SynCon's synthetic weights):
#   loss_r = sum_g sum_c pos_g cw_g[c] (lse_r - l_rc) / max_guard(sum_c pos_g)
#   loss   = sum_r anchor_w[r] loss_r / max(sum_r anchor_w, 1)
# ----------------------------------------------------------------------------------------------


class _Meta(NamedTuple):
  """Non-differentiable row/column bookkeeping for the core; see the comment above."""

  row_key: Array  # [R] int
  row_self: Array  # [R] int, column index of the anchor itself (-1: none)
  anchor_w: Array  # [R] float, 1 for rows that are anchors
  col_key: Array  # [N] int
  col_group: Array  # [N] int in [0, n_groups)
  col_valid: Array  # [N] bool
  mask: Array | None  # [B, B] float, indexed by keys; None: positives by key equality


def _pair_terms(
  meta: _Meta, row_key, row_self, col_key, col_group, col_valid, col_idx, n_groups: int
) -> tuple[Array, Array]:
  """allowed [r, c] bool and pos [G, r, c] float for one block of rows and columns."""
  allowed = col_valid[None, :] & (col_idx[None, :] != row_self[:, None])
  if meta.mask is None:
    base = (row_key[:, None] == col_key[None, :]).astype(meta.anchor_w.dtype)
  else:
    base = meta.mask[row_key[:, None], col_key[None, :]]
  base = jnp.where(allowed, base, 0)
  pos = jnp.stack([jnp.where(col_group[None, :] == g, base, 0) for g in range(n_groups)])
  return allowed, pos


def _guarded(count: Array) -> Array:
  return jnp.where(count < _MIN_POSITIVES, 1, count)


def _dense_core(q, k, cw, temperature, meta: _Meta, n_groups: int) -> Array:
  """The core on the full [R, N] matrix; gradients by autodiff."""
  logits = jnp.matmul(q, k.T, precision=_PRECISION) / temperature
  col_idx = jnp.arange(k.shape[0])
  allowed, pos = _pair_terms(
    meta, meta.row_key, meta.row_self, meta.col_key, meta.col_group, meta.col_valid, col_idx,
    n_groups,
  )  # fmt: skip
  row_max = jnp.max(jnp.where(allowed, logits, -jnp.inf), axis=1, keepdims=True)
  row_max = jax.lax.stop_gradient(jnp.where(jnp.isfinite(row_max), row_max, 0))
  # Shift inside the `where` so excluded entries (the self-similarity) never reach exp:
  # exp of a large excluded logit is inf, and inf * 0 in the backward pass is NaN.
  shifted = jnp.where(allowed, logits - row_max, 0)
  denom = jnp.sum(jnp.where(allowed, jnp.exp(shifted), 0), axis=1, keepdims=True)
  lse = row_max + jnp.log(jnp.where(denom > 0, denom, 1))
  log_prob = logits - lse
  loss_r = 0
  for g in range(n_groups):
    num = jnp.sum(pos[g] * cw[g][None, :] * log_prob, axis=1)
    loss_r = loss_r - num / _guarded(jnp.sum(pos[g], axis=1))
  return jnp.sum(meta.anchor_w * loss_r) / jnp.maximum(jnp.sum(meta.anchor_w), 1)


def _blocks(x: Array, n_blocks: int) -> Array:
  return x.reshape((n_blocks, -1) + x.shape[1:])


def _block_setup(q, k, cw, meta: _Meta, bs_r: int, bs_c: int):
  nr, nc = q.shape[0] // bs_r, k.shape[0] // bs_c
  rows = (_blocks(q, nr), _blocks(meta.row_key, nr), _blocks(meta.row_self, nr))
  col_idx = jnp.arange(k.shape[0])
  cols = (
    _blocks(k, nc),
    jnp.moveaxis(cw.reshape(cw.shape[0], nc, bs_c), 1, 0),  # [nc, G, bs_c]
    _blocks(meta.col_key, nc),
    _blocks(meta.col_group, nc),
    _blocks(meta.col_valid, nc),
    _blocks(col_idx, nc),
  )
  return nr, nc, rows, cols


def _block_stats(q, k, cw, temperature, meta: _Meta, n_groups: int, bs_r: int, bs_c: int):
  """Streams over blocks: per row lse [R], sum pos*cw*l and sum pos*cw [G, R], sum pos [G, R]."""
  nr, _, rows, cols = _block_setup(q, k, cw, meta, bs_r, bs_c)
  dtype = q.dtype

  def row_block(row):
    q_i, rkey_i, rself_i = row

    def col_step(carry, col):
      run_max, run_sum, acc_l, acc_w, acc_n = carry
      k_j, cw_j, ckey_j, cgroup_j, cvalid_j, cidx_j = col
      logits = jnp.matmul(q_i, k_j.T, precision=_PRECISION) / temperature
      allowed, pos = _pair_terms(
        meta, rkey_i, rself_i, ckey_j, cgroup_j, cvalid_j, cidx_j, n_groups
      )
      new_max = jnp.maximum(run_max, jnp.max(jnp.where(allowed, logits, _NEG_SENTINEL), axis=1))
      exps = jnp.exp(jnp.where(allowed, logits - new_max[:, None], -jnp.inf))
      run_sum = run_sum * jnp.exp(run_max - new_max) + jnp.sum(exps, axis=1)
      weighted = pos * cw_j[:, None, :]
      acc_l = acc_l + jnp.sum(weighted * logits[None], axis=2)
      acc_w = acc_w + jnp.sum(weighted, axis=2)
      acc_n = acc_n + jnp.sum(pos, axis=2)
      return (new_max, run_sum, acc_l, acc_w, acc_n), None

    zeros_g = jnp.zeros((n_groups, q_i.shape[0]), dtype)
    init = (jnp.full((q_i.shape[0],), _NEG_SENTINEL, dtype), jnp.zeros(q_i.shape[0], dtype))
    (run_max, run_sum, acc_l, acc_w, acc_n), _ = jax.lax.scan(
      col_step, init + (zeros_g, zeros_g, zeros_g), cols
    )
    lse = jnp.where(run_sum > 0, run_max + jnp.log(jnp.where(run_sum > 0, run_sum, 1)), 0)
    return lse, acc_l, acc_w, acc_n

  lse, acc_l, acc_w, acc_n = jax.lax.map(row_block, rows)
  flat_g = lambda a: jnp.moveaxis(a, 1, 0).reshape(n_groups, -1)
  return lse.reshape(-1), flat_g(acc_l), flat_g(acc_w), flat_g(acc_n)


@functools.partial(jax.custom_vjp, nondiff_argnums=(5, 6, 7))
def _blockwise_core(q, k, cw, temperature, meta, n_groups, bs_r, bs_c):
  return _blockwise_fwd(q, k, cw, temperature, meta, n_groups, bs_r, bs_c)[0]


def _blockwise_fwd(q, k, cw, temperature, meta, n_groups, bs_r, bs_c):
  lse, acc_l, acc_w, acc_n = _block_stats(q, k, cw, temperature, meta, n_groups, bs_r, bs_c)
  coef = 1 / _guarded(acc_n)  # [G, R]
  loss_r = jnp.sum(coef * (lse[None] * acc_w - acc_l), axis=0)
  n_anchors = jnp.maximum(jnp.sum(meta.anchor_w), 1)
  loss = jnp.sum(meta.anchor_w * loss_r) / n_anchors
  return loss, (q, k, cw, temperature, meta, lse, coef, acc_w, n_anchors)


def _blockwise_bwd(n_groups, bs_r, bs_c, res, ct):
  q, k, cw, temperature, meta, lse, coef, acc_w, n_anchors = res
  nr, nc, rows, cols = _block_setup(q, k, cw, meta, bs_r, bs_c)
  row_ct = ct * meta.anchor_w / n_anchors  # d loss / d loss_r
  # d loss_r / d l_rc = sum_g coef_g acc_w_g p_rc - sum_g coef_g pos_g cw_g[c]
  prob_coef = jnp.sum(coef * acc_w, axis=0)
  row_extra = (_blocks(lse, nr), _blocks(row_ct, nr), _blocks(prob_coef, nr))
  row_extra += (jnp.moveaxis(coef.reshape(n_groups, nr, bs_r), 1, 0),)

  def row_block(carry, row):
    dk, dcw, dtemp = carry
    (q_i, rkey_i, rself_i), (lse_i, rct_i, pcoef_i, coef_i) = row

    def col_step(dq_i, col):
      k_j, cw_j, ckey_j, cgroup_j, cvalid_j, cidx_j = col
      logits = jnp.matmul(q_i, k_j.T, precision=_PRECISION) / temperature
      allowed, pos = _pair_terms(
        meta, rkey_i, rself_i, ckey_j, cgroup_j, cvalid_j, cidx_j, n_groups
      )
      log_p = logits - lse_i[:, None]
      prob = jnp.exp(jnp.where(allowed, log_p, -jnp.inf))
      pos_coef = pos * coef_i[:, :, None]  # [G, r, c]
      grad_l = rct_i[:, None] * (pcoef_i[:, None] * prob - jnp.sum(pos_coef * cw_j[:, None], 0))
      dq_i = dq_i + jnp.matmul(grad_l, k_j, precision=_PRECISION) / temperature
      dk_j = jnp.matmul(grad_l.T, q_i, precision=_PRECISION) / temperature
      dcw_j = jnp.sum(rct_i[None, :, None] * pos_coef * (-log_p)[None], axis=1)  # [G, c]
      dtemp_j = -jnp.sum(grad_l * logits) / temperature
      return dq_i, (dk_j, dcw_j, dtemp_j)

    dq_i, (dk_part, dcw_part, dtemp_part) = jax.lax.scan(col_step, jnp.zeros_like(q_i), cols)
    carry = (dk + dk_part, dcw + dcw_part, dtemp + jnp.sum(dtemp_part))
    return carry, dq_i

  init = (jnp.zeros((nc, bs_c) + k.shape[1:], k.dtype), jnp.zeros((nc, n_groups, bs_c), k.dtype))
  (dk, dcw, dtemp), dq = jax.lax.scan(
    row_block, init + (jnp.zeros((), k.dtype),), (rows, row_extra)
  )
  dcw = jnp.moveaxis(dcw, 0, 1).reshape(cw.shape)
  meta_ct = jax.tree.map(lambda _: None, meta)
  return dq.reshape(q.shape), dk.reshape(k.shape), dcw, dtemp.astype(temperature.dtype), meta_ct


_blockwise_core.defvjp(_blockwise_fwd, _blockwise_bwd)


def _pad_to(x: Array, size: int, value) -> Array:
  pad = [(0, size - x.shape[0])] + [(0, 0)] * (x.ndim - 1)
  return jnp.pad(x, pad, constant_values=value)


def _contrastive_core(
  q: Array, k: Array, cw: Array, temperature, meta: _Meta, *, n_groups: int, block_size
) -> Array:
  """Dispatches to the dense or blockwise core; pads rows/columns to whole blocks."""
  temperature = jnp.asarray(temperature, q.dtype)
  if block_size is None:
    return _dense_core(q, k, cw, temperature, meta, n_groups)
  n_rows, n_cols = q.shape[0], k.shape[0]
  bs_r, bs_c = min(block_size, n_rows), min(block_size, n_cols)
  rows_p, cols_p = -(-n_rows // bs_r) * bs_r, -(-n_cols // bs_c) * bs_c
  # Padded rows are not anchors and padded columns are invalid, so they drop out everywhere.
  meta = _Meta(
    row_key=_pad_to(meta.row_key, rows_p, 0),
    row_self=_pad_to(meta.row_self, rows_p, -1),
    anchor_w=_pad_to(meta.anchor_w, rows_p, 0),
    col_key=_pad_to(meta.col_key, cols_p, 0),
    col_group=_pad_to(meta.col_group, cols_p, 0),
    col_valid=_pad_to(meta.col_valid, cols_p, False),
    mask=meta.mask,
  )
  q, k = _pad_to(q, rows_p, 0), _pad_to(k, cols_p, 0)
  cw = jnp.pad(cw, [(0, 0), (0, cols_p - n_cols)])
  return _blockwise_core(q, k, cw, temperature, meta, n_groups, bs_r, bs_c)


def _simple_meta(keys: Array, n_rows: int, dtype, mask: Array | None = None) -> _Meta:
  """Rows are the first n_rows columns, all valid anchors, one positive group."""
  n = keys.shape[0]
  return _Meta(
    row_key=keys[:n_rows],
    row_self=jnp.arange(n_rows),
    anchor_w=jnp.ones(n_rows, dtype),
    col_key=keys,
    col_group=jnp.zeros(n, jnp.int32),
    col_valid=jnp.ones(n, bool),
    mask=mask,
  )


# ----------------------------------------------------------------------------------------------
# Public contrastive losses.
# ----------------------------------------------------------------------------------------------


@_jit_loss("contrast_mode", "block_size")
def supcon_loss(
  features: Array,
  labels: Array | None = None,
  mask: Array | None = None,
  *,
  temperature: float = 0.07,
  base_temperature: float = 0.07,
  contrast_mode: str = "all",
  block_size: int | None = None,
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
    block_size: rows/columns per block for the memory-linear path; None builds the matrix.

  Returns:
    Scalar: mean over anchors of -(T / T_base) * mean over positives of log p; an anchor
    without positives contributes 0 and still counts in the mean.
  """
  _check_block_size(block_size)
  if features.ndim < 3:
    raise ValueError(f"features must be [batch, n_views, ...], got shape {features.shape}")
  if labels is not None and mask is not None:
    raise ValueError("supcon_loss takes labels or mask, not both")
  if contrast_mode not in ("all", "one"):
    raise ConfigError(f"Unknown contrast_mode {contrast_mode!r}; valid: 'all', 'one'")
  batch, n_views = features.shape[:2]
  dtype = _compute_dtype(features)
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
  n_rows = batch * n_views if contrast_mode == "all" else batch
  meta = _simple_meta(keys, n_rows, dtype, mask)
  loss = _contrastive_core(
    contrast[:n_rows], contrast, jnp.ones((1, contrast.shape[0]), dtype), temperature, meta,
    n_groups=1, block_size=block_size,
  )  # fmt: skip
  return (temperature / base_temperature) * loss


@_jit_loss("block_size")
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
) -> Array:
  """SynCon: SupCon over real anchors with weighted synthetic positives (DESIGN.md).

  For real anchor i: A(i) all valid rows but i, P(i) real valid rows of i's class but i,
  U(i) synthetic valid rows of i's class, log p = log softmax over A(i);
  loss_i = -mean_P log p - (1/|U|) sum_U w_u log p (an empty P or U gives 0 for its term).

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

  Returns:
    Scalar: (T / T_base) * mean over real valid anchors of loss_i (0 when there are none).
  """
  base_temperature = temperature if base_temperature is None else base_temperature
  _check_block_size(block_size)
  if features.ndim != 2:
    raise ValueError(f"features must be [n, dim], got shape {features.shape}")
  n = features.shape[0]
  for name, arr in (("labels", labels), ("is_synthetic", is_synthetic)):
    if jnp.shape(arr) != (n,):
      raise ValueError(f"{name} must have shape ({n},), got {jnp.shape(arr)}")
  if jnp.shape(synthetic_weight) != (n,):
    raise ValueError(f"synthetic_weight must have shape ({n},), got {jnp.shape(synthetic_weight)}")
  dtype = _compute_dtype(features, synthetic_weight)
  is_synthetic = jnp.asarray(is_synthetic, bool)
  valid = jnp.ones(n, bool) if valid is None else jnp.asarray(valid, bool)
  if valid.shape != (n,):
    raise ValueError(f"valid must have shape ({n},), got {valid.shape}")
  labels = jnp.asarray(labels)
  meta = _Meta(
    row_key=labels,
    row_self=jnp.arange(n),
    anchor_w=(valid & ~is_synthetic).astype(dtype),
    col_key=labels,
    col_group=is_synthetic.astype(jnp.int32),
    col_valid=valid,
    mask=None,
  )
  features = features.astype(dtype)
  weights = jnp.stack([jnp.ones(n, dtype), jnp.asarray(synthetic_weight).astype(dtype)])
  loss = _contrastive_core(
    features, features, weights, temperature, meta, n_groups=2, block_size=block_size
  )
  return (temperature / base_temperature) * loss


@_jit_loss("block_size")
def ntxent_loss(
  z1: Array, z2: Array, *, temperature: float = 0.5, block_size: int | None = None
) -> Array:
  """SimCLR's NT-Xent, same numbers as lightly's `NTXentLoss` without a memory bank.

  Args:
    z1, z2: [batch, dim], the two views; normalised inside.
  Returns:
    Scalar mean over the 2 * batch anchors of -log softmax(positive) over all rows but self.
  """
  _check_block_size(block_size)
  if z1.shape != z2.shape or z1.ndim != 2:
    raise ValueError(f"z1 and z2 must both be [batch, dim], got {z1.shape} and {z2.shape}")
  dtype = _compute_dtype(z1, z2)
  z = l2_normalize(jnp.concatenate([z1, z2]).astype(dtype))
  meta = _simple_meta(jnp.tile(jnp.arange(z1.shape[0]), 2), z.shape[0], dtype)
  return _contrastive_core(
    z, z, jnp.ones((1, z.shape[0]), dtype), temperature, meta, n_groups=1, block_size=block_size
  )


@_jit_loss("block_size")
def multipos_loss(
  features: Array, labels: Array, *, temperature: float = 0.1, block_size: int | None = None
) -> Array:
  """StableRep's `MultiPosConLoss` (single process), same numbers.

  Args:
    features: [n, dim], normalised inside.
    labels: [n] int; the target of row i is uniform over the other rows with i's label.
  Returns:
    Scalar mean over all n rows of the cross-entropy against softmax over all rows but i
    (rows without a positive contribute 0).
  """
  _check_block_size(block_size)
  if features.ndim != 2 or jnp.shape(labels) != features.shape[:1]:
    raise ValueError(f"need features [n, dim] and labels [n], got {features.shape}, "
                     f"{jnp.shape(labels)}")  # fmt: skip
  dtype = _compute_dtype(features)
  z = l2_normalize(features.astype(dtype))
  meta = _simple_meta(jnp.asarray(labels), z.shape[0], dtype)
  return _contrastive_core(
    z, z, jnp.ones((1, z.shape[0]), dtype), temperature, meta, n_groups=1, block_size=block_size
  )


@_jit_loss()
def moco_loss(q: Array, k: Array, queue: Array, *, temperature: float = 0.07) -> Array:
  """MoCo (v1/v2) InfoNCE: logits [q.k, q.queue] / T, cross-entropy with the positive first.

  Args:
    q: [n, c] queries, normalised inside.
    k: [n, c] keys, normalised inside; no gradient flows to them.
    queue: [K, c] negatives with unit-norm rows, used as is; no gradient flows to it.
  Returns:
    Scalar mean over the n queries.
  """
  dtype = _compute_dtype(q, k, queue)
  q = l2_normalize(q.astype(dtype))
  k = jax.lax.stop_gradient(l2_normalize(k.astype(dtype)))
  queue = jax.lax.stop_gradient(queue.astype(dtype))
  l_pos = jnp.sum(q * k, axis=1, keepdims=True)
  l_neg = jnp.matmul(q, queue.T, precision=_PRECISION)
  logits = jnp.concatenate([l_pos, l_neg], axis=1) / temperature
  return jnp.mean(jax.nn.logsumexp(logits, axis=1) - logits[:, 0])


@_jit_loss()
def byol_loss(online_pred: Array, target_proj: Array) -> Array:
  """byol-pytorch's `loss_fn`: per-sample 2 - 2 cos(pred, target), no gradient to the target.

  Args:
    online_pred, target_proj: [batch, dim], normalised inside.
  Returns:
    [batch]; callers sum the two symmetric terms and average over the batch.
  """
  dtype = _compute_dtype(online_pred, target_proj)
  x = l2_normalize(online_pred.astype(dtype))
  y = jax.lax.stop_gradient(l2_normalize(target_proj.astype(dtype)))
  return 2 - 2 * jnp.sum(x * y, axis=-1)


# ----------------------------------------------------------------------------------------------
# Triplet losses.
# ----------------------------------------------------------------------------------------------


def _safe_sqrt(sq: Array) -> Array:
  """sqrt with gradient 0 (not inf/NaN) at 0."""
  positive = sq > 0
  return jnp.where(positive, jnp.sqrt(jnp.where(positive, sq, 1)), 0)


def _sq_dist(x: Array, y: Array) -> Array:
  sq = (
    jnp.sum(x * x, -1)[:, None]
    + jnp.sum(y * y, -1)[None, :]
    - 2 * jnp.matmul(x, y.T, precision=_PRECISION)
  )
  return jnp.maximum(sq, 0)  # rounding can make |x - x|^2 slightly negative


TRIPLET_METRICS: dict[str, Callable[[Array, Array], Array]] = {
  # Pairwise [n, m] distances between rows of x and y.
  "euclidean": lambda x, y: _safe_sqrt(_sq_dist(x, y)),
  "squared_euclidean": _sq_dist,
  # 1 - cos: with it the triplet loss is max(0, sim(a, n) - sim(a, p) + margin).
  "cosine": lambda x, y: 1 - jnp.matmul(l2_normalize(x), l2_normalize(y).T, precision=_PRECISION),
}

_PAIRED_METRICS: dict[str, Callable[[Array, Array], Array]] = {
  "euclidean": lambda x, y: _safe_sqrt(jnp.sum((x - y) ** 2, -1)),
  "squared_euclidean": lambda x, y: jnp.sum((x - y) ** 2, -1),
  "cosine": lambda x, y: 1 - jnp.sum(l2_normalize(x) * l2_normalize(y), -1),
}


def _metric(metric: str, table: dict) -> Callable[[Array, Array], Array]:
  if metric not in table:
    raise ConfigError(f"Unknown triplet metric {metric!r}; valid: {sorted(table)}")
  return table[metric]


@_jit_loss("metric")
def triplet_loss(
  anchor: Array, positive: Array, negative: Array, *, margin: float, metric: str = "euclidean"
) -> Array:
  """mean_i max(0, d(a_i, p_i) - d(a_i, n_i) + margin) over given triplets.

  Args:
    anchor, positive, negative: [batch, dim].
    metric: 'euclidean', 'squared_euclidean' or 'cosine' (d = 1 - cos).
  """
  dist = _metric(metric, _PAIRED_METRICS)
  dtype = _compute_dtype(anchor, positive, negative)
  a, p, n = (x.astype(dtype) for x in (anchor, positive, negative))
  return jnp.mean(jax.nn.relu(dist(a, p) - dist(a, n) + margin))


def _label_masks(labels: Array) -> tuple[Array, Array]:
  same = labels[:, None] == labels[None, :]
  return same & ~jnp.eye(labels.shape[0], dtype=bool), ~same


@_jit_loss("metric")
def batch_hard_triplet_loss(
  embeddings: Array, labels: Array, *, margin: float, metric: str = "euclidean"
) -> Array:
  """Batch-hard mining (Hermans et al. 2017): per anchor the farthest positive and the
  nearest negative in the batch.

  Args:
    embeddings: [batch, dim]; labels: [batch] int.
  Returns:
    Scalar mean of max(0, d(a, hardest p) - d(a, hardest n) + margin) over the anchors that
    have at least one positive and one negative (0 when none has).
  """
  dist_fn = _metric(metric, TRIPLET_METRICS)
  x = embeddings.astype(_compute_dtype(embeddings))
  dist = dist_fn(x, x)
  pos_mask, neg_mask = _label_masks(jnp.asarray(labels))
  has = jnp.any(pos_mask, 1) & jnp.any(neg_mask, 1)
  hardest_pos = jnp.max(jnp.where(pos_mask, dist, 0), axis=1)
  hardest_neg = jnp.min(jnp.where(neg_mask, dist, jnp.inf), axis=1)
  per_anchor = jnp.where(has, jax.nn.relu(hardest_pos - jnp.where(has, hardest_neg, 0) + margin), 0)
  return jnp.sum(per_anchor) / jnp.maximum(jnp.sum(has), 1)


BATCH_ALL_AVERAGES = ("positive", "all")


@_jit_loss("metric", "average")
def batch_all_triplet_loss(
  embeddings: Array,
  labels: Array,
  *,
  margin: float,
  metric: str = "euclidean",
  average: str = "positive",
) -> Array:
  """Batch-all mining: every (a, p, n) in the batch with label[a] == label[p], a != p and
  label[n] != label[a]. Builds a [batch, batch, batch] tensor: for modest batches.

  Args:
    embeddings: [batch, dim]; labels: [batch] int.
    average: 'positive' divides the summed hinge by the number of triplets with a positive
      loss (the usual "BA != 0" form), 'all' by the number of valid triplets.
  Returns:
    Scalar (0 when no triplet counts).
  """
  if average not in BATCH_ALL_AVERAGES:
    raise ConfigError(f"Unknown batch-all average {average!r}; valid: {list(BATCH_ALL_AVERAGES)}")
  dist_fn = _metric(metric, TRIPLET_METRICS)
  x = embeddings.astype(_compute_dtype(embeddings))
  dist = dist_fn(x, x)
  pos_mask, neg_mask = _label_masks(jnp.asarray(labels))
  valid = pos_mask[:, :, None] & neg_mask[:, None, :]
  hinge = jnp.where(valid, jax.nn.relu(dist[:, :, None] - dist[:, None, :] + margin), 0)
  # Counting "positive" with a tolerance keeps float round-off from adding empty triplets.
  counted = (hinge > 1e-16) if average == "positive" else valid
  return jnp.sum(hinge) / jnp.maximum(jnp.sum(counted), 1)


# ----------------------------------------------------------------------------------------------
# Supervised baseline.
# ----------------------------------------------------------------------------------------------


@_jit_loss()
def softmax_cross_entropy(logits: Array, labels: Array, *, label_smoothing: float = 0.0) -> Array:
  """Mean cross-entropy of integer labels, as torch's CrossEntropyLoss(label_smoothing=eps):
  target = (1 - eps) * one_hot + eps / n_classes.

  Args:
    logits: [batch, n_classes]; labels: [batch] int.
  """
  log_p = jax.nn.log_softmax(logits.astype(_compute_dtype(logits)), axis=-1)
  nll = -jnp.take_along_axis(log_p, jnp.asarray(labels)[:, None], axis=-1)[:, 0]
  smooth = -jnp.mean(log_p, axis=-1)
  return jnp.mean((1 - label_smoothing) * nll + label_smoothing * smooth)


# Every public loss by name, for objectives that pick one from the config.
LOSSES: dict[str, Callable[..., Array]] = {
  "supcon": supcon_loss,
  "syncon": syncon_loss,
  "ntxent": ntxent_loss,
  "multipos": multipos_loss,
  "moco": moco_loss,
  "byol": byol_loss,
  "triplet": triplet_loss,
  "batch_hard_triplet": batch_hard_triplet_loss,
  "batch_all_triplet": batch_all_triplet_loss,
  "cross_entropy": softmax_cross_entropy,
}


def get_loss(name: str) -> Callable[..., Array]:
  """The loss registered under `name`; an unknown name lists the valid ones."""
  if name not in LOSSES:
    raise ConfigError(f"Unknown loss {name!r}; valid: {sorted(LOSSES)}")
  return LOSSES[name]
