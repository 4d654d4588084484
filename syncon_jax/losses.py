"""Loss functions on the global batch: contrastive (SupCon, SynCon, NT-Xent, StableRep, MoCo),
BYOL, triplet (with batch-hard / batch-all mining) and the supervised cross-entropy baseline.

Each contrastive loss matches the implementation its docstring names, corner cases included
(see DESIGN.md, "Loss contract"). Similarities, softmax and reductions run in float32 for
bf16/f16 inputs and in float64 for float64 inputs.

Large batches: `supcon_loss`, `syncon_loss`, `ntxent_loss` and `multipos_loss` take
`block_size`. With it set, the [anchors, contrast] similarity matrix is never built: the
log-sum-exp streams row blocks over column blocks with an online max, and a `jax.custom_vjp`
recomputes the blocks in the backward pass; the positive terms are linear in the similarities
and come from per-class feature sums. Memory is O(N * dim + block_size^2) instead of O(N^2),
and in benchmarks/loss_memory.py it is no slower than the dense path.

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


def _upcast(x):
  """bf16/f16 arrays to float32 (the losses compute in float32 anyway); others unchanged."""
  dtype = getattr(x, "dtype", None)
  if dtype is not None and jnp.issubdtype(dtype, jnp.floating) and jnp.finfo(dtype).bits < 32:
    return jnp.asarray(x).astype(jnp.float32)
  return x


def _jit_loss(*static_argnames: str):
  """jax.jit with the given static keyword arguments, after checking scalar hyperparameters.

  One compiled program per loss and shape, also for eager callers (op-by-op dispatch would
  compile every primitive separately). Half-precision inputs are cast to float32 before the
  jitted body, so they share its program; gradients come back in the input dtype.
  """

  def wrap(fn):
    jitted = jax.jit(fn, static_argnames=static_argnames)

    @functools.wraps(fn)
    def call(*args, **kwargs):
      for name, (ok, requirement) in _SCALAR_CHECKS.items():
        value = kwargs.get(name)
        if isinstance(value, int | float) and not ok(value):
          raise ConfigError(f"{fn.__name__}: {name} must be {requirement}, got {value!r}")
      args = [_upcast(a) for a in args]
      kwargs = {k: _upcast(v) for k, v in kwargs.items()}
      return jitted(*args, **kwargs)

    return call

  return wrap


# ----------------------------------------------------------------------------------------------
# The shared contrastive core.
#
# Columns c are all rows k[c]; anchor rows are the first R of them (q = k[:R], so anchor r's own
# column is c = r). Logits l = q k^T / T. Column c is in the denominator of anchor r when
# col_valid[c] and c != r. Positives come in groups g (SynCon: g=0 real, g=1 synthetic; the
# others use one group): pos_g[r, c] = allowed * base[r, c] * (col_group[c] == g), where base is
# key equality (labels, or sample ids for SimCLR) or, with a user mask, mask[key_r, key_c].
# With column weights cw_g (differentiable; ones except SynCon's synthetic weights):
#   loss_r = sum_g (lse_r * B_g(r) - A_g(r)) / guard(N_g(r)),
#   A_g(r) = sum_c pos_g cw_g[c] l_rc,  B_g(r) = sum_c pos_g cw_g[c],  N_g(r) = sum_c pos_g,
#   loss   = sum_r anchor_w[r] loss_r / max(sum_r anchor_w, 1).
# ----------------------------------------------------------------------------------------------


class _Meta(NamedTuple):
  """Non-differentiable row/column bookkeeping for the core; see the comment above."""

  col_key: Array  # [N] int; anchors use col_key[:R]
  col_group: Array  # [N] int in [0, n_groups)
  col_valid: Array  # [N] bool
  anchor_w: Array  # [R] float, 1 for rows that are anchors
  mask: Array | None  # [B, B] float indexed by keys in [0, B); None: positives by key equality


def _guarded(count: Array) -> Array:
  return jnp.where(count < _MIN_POSITIVES, 1, count)


def _combine(lse, acc_l, acc_w, acc_n, anchor_w) -> Array:
  """The final loss from lse [R] and the per-group sums A, B, N [G, R]."""
  # A and B come from class sums minus the anchor's own term, so an anchor without positives
  # gets a round-off residue instead of 0: drop it. (With a user mask whose row sums to
  # below 1e-6 this drops a term SupContrast would keep at that tiny weight.)
  empty = acc_n < _MIN_POSITIVES
  terms = jnp.where(empty, 0, (lse[None] * acc_w - acc_l) / jnp.where(empty, 1, acc_n))
  loss_r = jnp.sum(terms, axis=0)
  return jnp.sum(anchor_w * loss_r) / jnp.maximum(jnp.sum(anchor_w), 1)


def _dense_core(k, n_rows: int, cw, temperature, meta: _Meta, n_groups: int, den_w=None) -> Array:
  """The core on the full [R, N] matrix, written like the references; autodiff gradients.

  den_w [N] (None: ones) scales each column's exp in every denominator."""
  q = k[:n_rows]
  logits = jnp.matmul(q, k.T, precision=_PRECISION) / temperature
  row_key = meta.col_key[:n_rows]
  allowed = meta.col_valid[None, :] & (
    jnp.arange(k.shape[0])[None, :] != jnp.arange(n_rows)[:, None]
  )
  if meta.mask is None:
    base = (row_key[:, None] == meta.col_key[None, :]).astype(q.dtype)
  else:
    base = meta.mask[row_key[:, None], meta.col_key[None, :]]
  base = jnp.where(allowed, base, 0)
  row_max = jnp.max(jnp.where(allowed, logits, -jnp.inf), axis=1, keepdims=True)
  row_max = jax.lax.stop_gradient(jnp.where(jnp.isfinite(row_max), row_max, 0))
  # Shift inside the `where` so excluded entries (the self-similarity) never reach exp:
  # exp of a large excluded logit is inf, and inf * 0 in the backward pass is NaN.
  shifted = jnp.where(allowed, logits - row_max, 0)
  terms = jnp.exp(shifted) if den_w is None else den_w[None, :] * jnp.exp(shifted)
  denom = jnp.sum(jnp.where(allowed, terms, 0), axis=1, keepdims=True)
  lse = row_max + jnp.log(jnp.where(denom > 0, denom, 1))
  log_prob = logits - lse
  loss_r = 0
  for g in range(n_groups):
    pos = jnp.where(meta.col_group[None, :] == g, base, 0)
    num = jnp.sum(pos * cw[g][None, :] * log_prob, axis=1)
    loss_r = loss_r - num / _guarded(jnp.sum(pos, axis=1))
  return jnp.sum(meta.anchor_w * loss_r) / jnp.maximum(jnp.sum(meta.anchor_w), 1)


def _dense_ranks(keys: Array) -> Array:
  """Ids in [0, n) with ids[i] == ids[j] iff keys[i] == keys[j] (labels may be any ints)."""
  order = jnp.argsort(keys)
  sorted_keys = keys[order]
  starts = jnp.concatenate([jnp.zeros(1, jnp.int32), (sorted_keys[1:] != sorted_keys[:-1])])
  return jnp.zeros_like(order).at[order].set(jnp.cumsum(starts.astype(jnp.int32)))


def _positive_sums(k, n_rows: int, cw, temperature, meta: _Meta, n_groups: int):
  """A, B, N [G, R] without the [R, N] matrix: positive sums are linear in the similarities,
  so sum_c pos[r, c] cw[c] q_r.k_c = q_r . (sum of cw k over r's positive set), and the
  positive set of an anchor is its key's class (or a mask row over key classes), minus itself.
  O(N * dim) memory; gradients by autodiff."""
  q = k[:n_rows]
  row_key = meta.col_key[:n_rows]
  self_sq = jnp.sum(q * q, axis=1)  # q_r . k_r: anchor r's own column is r
  if meta.mask is None:
    seg, n_seg = _dense_ranks(meta.col_key), k.shape[0]
    row_seg = seg[:n_rows]
    mix = lambda per_key: per_key[row_seg]
    self_base = jnp.ones(n_rows, k.dtype)
  else:
    seg, n_seg = meta.col_key, meta.mask.shape[0]
    mix = lambda per_key: jnp.matmul(meta.mask, per_key, precision=_PRECISION)[row_key]
    self_base = meta.mask[row_key, row_key]
  acc_l, acc_w, acc_n = [], [], []
  for g in range(n_groups):
    in_group = (meta.col_valid & (meta.col_group == g)).astype(k.dtype)
    col_w = in_group * cw[g]
    sum_k = jax.ops.segment_sum(col_w[:, None] * k, seg, n_seg)
    self_w, self_n = self_base * col_w[:n_rows], self_base * in_group[:n_rows]
    acc_l.append((jnp.sum(q * mix(sum_k), axis=1) - self_w * self_sq) / temperature)
    acc_w.append(mix(jax.ops.segment_sum(col_w, seg, n_seg)) - self_w)
    acc_n.append(mix(jax.ops.segment_sum(in_group, seg, n_seg)) - self_n)
  return jnp.stack(acc_l), jnp.stack(acc_w), jax.lax.stop_gradient(jnp.stack(acc_n))


def _blocks(x: Array, size: int) -> Array:
  return x.reshape((x.shape[0] // size, size) + x.shape[1:])


@functools.partial(jax.custom_vjp, nondiff_argnums=(6, 7))
def _streaming_lse(q, k, temperature, col_valid, row_needed, col_w, bs_r: int, bs_c: int) -> Array:
  """lse[r] = log sum_{c valid, c != r} col_w[c] exp(q_r . k_c / T), [R]; 0 for a row with no
  column and for row blocks without a needed row (SynCon's synthetic rows are not anchors).
  col_w [N] >= 0 (ones but for SynCon's weighted denominators) is differentiable.

  q [R, D] and k [N, D] are padded to whole blocks. Row blocks stream over column blocks with
  an online max; the backward pass recomputes the blocks, so memory is O((R + N) * D + bs^2).
  """
  return _streaming_lse_fwd(q, k, temperature, col_valid, row_needed, col_w, bs_r, bs_c)[0]


def _lse_blocks(q, k, col_valid, col_w, bs_r, bs_c):
  rows = (_blocks(q, bs_r), _blocks(jnp.arange(q.shape[0]), bs_r))
  cols = (
    _blocks(k, bs_c),
    _blocks(col_valid, bs_c),
    _blocks(jnp.arange(k.shape[0]), bs_c),
    _blocks(col_w, bs_c),
  )
  return rows, cols


def _block_logits(q_i, rows_i, k_j, valid_j, cols_j, w_j, temperature):
  del w_j
  logits = jnp.matmul(q_i, k_j.T, precision=_PRECISION) / temperature
  return logits, valid_j[None, :] & (cols_j[None, :] != rows_i[:, None])


def _streaming_lse_fwd(q, k, temperature, col_valid, row_needed, col_w, bs_r, bs_c):
  rows, cols = _lse_blocks(q, k, col_valid, col_w, bs_r, bs_c)

  def row_block(row):
    q_i, rows_i, needed_i = row

    def col_step(carry, col):
      run_max, run_sum = carry
      logits, allowed = _block_logits(q_i, rows_i, *col, temperature)
      new_max = jnp.maximum(run_max, jnp.max(jnp.where(allowed, logits, _NEG_SENTINEL), axis=1))
      exps = col[-1][None, :] * jnp.exp(jnp.where(allowed, logits - new_max[:, None], -jnp.inf))
      return (new_max, run_sum * jnp.exp(run_max - new_max) + jnp.sum(exps, axis=1)), None

    def stream():
      init = (jnp.full((bs_r,), _NEG_SENTINEL, q.dtype), jnp.zeros(bs_r, q.dtype))
      (run_max, run_sum), _ = jax.lax.scan(col_step, init, cols)
      has = run_sum > 0
      return jnp.where(has, run_max + jnp.log(jnp.where(has, run_sum, 1)), 0)

    return jax.lax.cond(jnp.any(needed_i), stream, lambda: jnp.zeros(bs_r, q.dtype))

  lse = jax.lax.map(row_block, rows + (_blocks(row_needed, bs_r),)).reshape(-1)
  return lse, (q, k, temperature, col_valid, col_w, lse)


def _streaming_lse_bwd(bs_r, bs_c, res, ct):
  q, k, temperature, col_valid, col_w, lse = res
  rows, cols = _lse_blocks(q, k, col_valid, col_w, bs_r, bs_c)

  # d lse_r / d l_rc = p_rc = w_c exp(l_rc - lse_r), so with G = ct * p: dq = G k / T,
  # dk = G^T q / T; and d lse_r / d w_c = exp(l_rc - lse_r), so dw_c = sum_r ct_r exp(...).
  def row_block(carry, row):
    dk, dw = carry
    q_i, rows_i, lse_i, ct_i = row

    def col_step(dq_i, col):
      k_j, w_j = col[0], col[-1]
      logits, allowed = _block_logits(q_i, rows_i, *col, temperature)
      e = ct_i[:, None] * jnp.exp(jnp.where(allowed, logits - lse_i[:, None], -jnp.inf))
      g = e * w_j[None, :]
      dq_i = dq_i + jnp.matmul(g, k_j, precision=_PRECISION)
      return dq_i, (jnp.matmul(g.T, q_i, precision=_PRECISION), jnp.sum(e, axis=0))

    def stream():
      dq_i, (dk_parts, dw_parts) = jax.lax.scan(col_step, jnp.zeros_like(q_i), cols)
      return (dk + dk_parts.reshape(k.shape), dw + dw_parts.reshape(dw.shape)), dq_i

    # Rows that are not anchors (or padding) get a zero cotangent: skip their blocks.
    return jax.lax.cond(jnp.any(ct_i != 0), stream, lambda: ((dk, dw), jnp.zeros_like(q_i)))

  row_ct = rows + (_blocks(lse, bs_r), _blocks(ct, bs_r))
  (dk, dw), dq = jax.lax.scan(row_block, (jnp.zeros_like(k), jnp.zeros_like(col_w)), row_ct)
  dq, dk = dq.reshape(q.shape) / temperature, dk / temperature
  # d l_rc / dT = -l_rc / T, and sum_rc G_rc l_rc = T * sum_r q_r . dq_r: no extra pass.
  dtemp = -jnp.sum(q * dq) / temperature
  return dq, dk, dtemp.astype(temperature.dtype), None, None, dw


_streaming_lse.defvjp(_streaming_lse_fwd, _streaming_lse_bwd)


def _pad_to(x: Array, size: int) -> Array:
  return jnp.pad(x, [(0, size - x.shape[0])] + [(0, 0)] * (x.ndim - 1))


def _contrastive_core(
  k: Array,
  n_rows: int,
  cw: Array,
  temperature,
  meta: _Meta,
  *,
  n_groups: int,
  block_size,
  den_w: Array | None = None,
) -> Array:
  """The loss for anchors k[:n_rows] against columns k; dense or blockwise. den_w [N] (None:
  ones) multiplies each column's term in every denominator."""
  temperature = jnp.asarray(temperature, k.dtype)
  if block_size is None:
    return _dense_core(k, n_rows, cw, temperature, meta, n_groups, den_w)
  acc_l, acc_w, acc_n = _positive_sums(k, n_rows, cw, temperature, meta, n_groups)
  n_cols = k.shape[0]
  bs_r, bs_c = min(block_size, n_rows), min(block_size, n_cols)
  rows_p, cols_p = -(-n_rows // bs_r) * bs_r, -(-n_cols // bs_c) * bs_c
  # Padded columns are invalid; padded rows are not needed.
  q, k_p = _pad_to(k[:n_rows], rows_p), _pad_to(k, cols_p)
  col_valid, needed = _pad_to(meta.col_valid, cols_p), _pad_to(meta.anchor_w > 0, rows_p)
  col_w = _pad_to(jnp.ones(n_cols, k.dtype) if den_w is None else den_w, cols_p)
  lse = _streaming_lse(q, k_p, temperature, col_valid, needed, col_w, bs_r, bs_c)
  return _combine(lse[:n_rows], acc_l, acc_w, acc_n, meta.anchor_w)


def _simple_meta(keys: Array, n_rows: int, dtype, mask: Array | None = None) -> _Meta:
  """Every column valid, one positive group, the first n_rows columns are the anchors."""
  n = keys.shape[0]
  return _Meta(
    col_key=keys,
    col_group=jnp.zeros(n, jnp.int32),
    col_valid=jnp.ones(n, bool),
    anchor_w=jnp.ones(n_rows, dtype),
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
  valid: Array | None = None,
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
    valid: [batch] bool or None (all valid; SupContrast). Every view of an invalid sample
      (a placeholder slot) is neither anchor, positive nor in any denominator: the result
      equals the loss on the batch with those samples deleted.
    block_size: rows/columns per block for the memory-linear path; None builds the matrix.

  Returns:
    Scalar: mean over (valid) anchors of -(T / T_base) * mean over positives of log p; an
    anchor without positives contributes 0 and still counts in the mean.
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
  if valid is not None:
    valid = jnp.asarray(valid, bool)
    if valid.shape != (batch,):
      raise ValueError(f"valid must have shape ({batch},), got {valid.shape}")
    meta = meta._replace(col_valid=valid[sample], anchor_w=valid[sample][:n_rows].astype(dtype))
  loss = _contrastive_core(
    contrast, n_rows, jnp.ones((1, contrast.shape[0]), dtype), temperature, meta, n_groups=1,
    block_size=block_size,
  )  # fmt: skip
  return (temperature / base_temperature) * loss


# Where SynCon's synthetic rows sit in the denominators (objective.synthetic_denominator):
#   'all'       the proposal's literal form: every synthetic row counts 1 in every A(i), so a
#               class at w = 0 still pushes every anchor (its own class's too) away from it;
#   'weighted'  synthetic row u counts w_u in every denominator, so w = 0 is the same as removing
#               the row from the batch (and w = 1 is the literal form).
SYNTHETIC_DENOMINATORS = ("all", "weighted")


@_jit_loss("block_size", "synthetic_denominator")
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

  Returns:
    Scalar: (T / T_base) * mean over real valid anchors of loss_i (0 when there are none).
  """
  base_temperature = temperature if base_temperature is None else base_temperature
  _check_block_size(block_size)
  if synthetic_denominator not in SYNTHETIC_DENOMINATORS:
    raise ConfigError(
      f"objective.synthetic_denominator must be one of {list(SYNTHETIC_DENOMINATORS)}, "
      f"got {synthetic_denominator!r}"
    )
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
    col_key=labels,
    col_group=is_synthetic.astype(jnp.int32),
    col_valid=valid,
    anchor_w=(valid & ~is_synthetic).astype(dtype),
    mask=None,
  )
  features = features.astype(dtype)
  weights = jnp.stack([jnp.ones(n, dtype), jnp.asarray(synthetic_weight).astype(dtype)])
  den_w = None
  if synthetic_denominator == "weighted":
    den_w = jnp.where(is_synthetic, weights[1], 1)
  loss = _contrastive_core(
    features, n, weights, temperature, meta, n_groups=2, block_size=block_size, den_w=den_w
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
  n = z.shape[0]
  return _contrastive_core(
    z, n, jnp.ones((1, n), dtype), temperature, meta, n_groups=1, block_size=block_size
  )


@_jit_loss("block_size")
def multipos_loss(
  features: Array,
  labels: Array,
  *,
  temperature: float = 0.1,
  valid: Array | None = None,
  block_size: int | None = None,
) -> Array:
  """StableRep's `MultiPosConLoss` (single process), same numbers.

  Args:
    features: [n, dim], normalised inside.
    labels: [n] int; the target of row i is uniform over the other rows with i's label.
    valid: [n] bool or None (all valid). A row with valid=False is neither anchor, positive
      nor in any denominator: the result equals the loss with those rows deleted.
  Returns:
    Scalar mean over all (valid) rows of the cross-entropy against softmax over all rows but
    i (rows without a positive contribute 0).
  """
  _check_block_size(block_size)
  if features.ndim != 2 or jnp.shape(labels) != features.shape[:1]:
    raise ValueError(f"need features [n, dim] and labels [n], got {features.shape}, "
                     f"{jnp.shape(labels)}")  # fmt: skip
  dtype = _compute_dtype(features)
  z = l2_normalize(features.astype(dtype))
  meta = _simple_meta(jnp.asarray(labels), z.shape[0], dtype)
  if valid is not None:
    valid = jnp.asarray(valid, bool)
    if valid.shape != features.shape[:1]:
      raise ValueError(f"valid must have shape ({features.shape[0]},), got {valid.shape}")
    meta = meta._replace(col_valid=valid, anchor_w=valid.astype(dtype))
  n = z.shape[0]
  return _contrastive_core(
    z, n, jnp.ones((1, n), dtype), temperature, meta, n_groups=1, block_size=block_size
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
