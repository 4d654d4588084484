"""The contrastive core that SupCon, SynCon, NT-Xent and StableRep's loss share: per-anchor
losses, on the full similarity matrix (dense) or without it (blockwise).

Blockwise (`block_size` an int), the [anchors, columns] similarity matrix is never built: the
log-sum-exp streams row blocks over column blocks with an online max, and a `jax.custom_vjp`
recomputes the blocks in the backward pass; the positive terms are linear in the similarities and
come from per-class feature sums. Memory is O(N * dim + block_size^2) instead of O(N^2), and in
benchmarks/loss_memory.py it is no slower than the dense path.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from syncon_jax.losses.numerics import PRECISION, reduce_rows

Array = jax.Array

# Finite stand-in for -inf as the initial running max: -inf - (-inf) would give NaN.
_NEG_SENTINEL = -1e30
# SupContrast's guard: an anchor whose positive weights sum below this divides by 1 instead.
_MIN_POSITIVES = 1e-6

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
#   per anchor anchor_w[r] loss_r (0 for a row that is not an anchor),
#   mean       sum_r anchor_w[r] loss_r / max(sum_r anchor_w, 1).
# ----------------------------------------------------------------------------------------------


class Meta(NamedTuple):
  """Non-differentiable row/column bookkeeping for the core; see the comment above."""

  col_key: Array  # [N] int; anchors use col_key[:R]
  col_group: Array  # [N] int in [0, n_groups)
  col_valid: Array  # [N] bool
  anchor_w: Array  # [R] float, 1 for rows that are anchors
  mask: Array | None  # [B, B] float indexed by keys in [0, B); None: positives by key equality


def _guarded(count: Array) -> Array:
  return jnp.where(count < _MIN_POSITIVES, 1, count)


def _combine(lse, acc_l, acc_w, acc_n, anchor_w) -> Array:
  """The per-anchor losses [R] from lse [R] and the per-group sums A, B, N [G, R]."""
  # A and B come from class sums minus the anchor's own term, so an anchor without positives
  # gets a round-off residue instead of 0: drop it. (With a user mask whose row sums to
  # below 1e-6 this drops a term SupContrast would keep at that tiny weight.)
  empty = acc_n < _MIN_POSITIVES
  terms = jnp.where(empty, 0, (lse[None] * acc_w - acc_l) / jnp.where(empty, 1, acc_n))
  loss_r = jnp.sum(terms, axis=0)
  return anchor_w * loss_r


def _dense_core(k, n_rows: int, cw, temperature, meta: Meta, n_groups: int, den_w=None) -> Array:
  """Per-anchor losses [R] on the full [R, N] matrix, written like the references; autodiff
  gradients.

  den_w [N] (None: ones) scales each column's exp in every denominator."""
  q = k[:n_rows]
  logits = jnp.matmul(q, k.T, precision=PRECISION) / temperature
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
  return meta.anchor_w * loss_r


def _dense_ranks(keys: Array) -> Array:
  """Ids in [0, n) with ids[i] == ids[j] iff keys[i] == keys[j] (labels may be any ints)."""
  order = jnp.argsort(keys)
  sorted_keys = keys[order]
  starts = jnp.concatenate([jnp.zeros(1, jnp.int32), (sorted_keys[1:] != sorted_keys[:-1])])
  return jnp.zeros_like(order).at[order].set(jnp.cumsum(starts.astype(jnp.int32)))


def _positive_sums(k, n_rows: int, cw, temperature, meta: Meta, n_groups: int):
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
    mix = lambda per_key: jnp.matmul(meta.mask, per_key, precision=PRECISION)[row_key]
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
  logits = jnp.matmul(q_i, k_j.T, precision=PRECISION) / temperature
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
      dq_i = dq_i + jnp.matmul(g, k_j, precision=PRECISION)
      return dq_i, (jnp.matmul(g.T, q_i, precision=PRECISION), jnp.sum(e, axis=0))

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


def contrastive_core(
  k: Array,
  n_rows: int,
  cw: Array,
  temperature,
  meta: Meta,
  *,
  n_groups: int,
  block_size,
  den_w: Array | None = None,
  reduction: str = "mean",
) -> Array:
  """The loss of anchors k[:n_rows] against columns k; dense (block_size None) or blockwise.

  den_w [N] (None: ones) multiplies each column's term in every denominator. reduction 'mean':
  the mean over anchors, a scalar (0 without anchors); 'none': [n_rows], 0 for a row that is
  not an anchor.
  """
  temperature = jnp.asarray(temperature, k.dtype)
  mean = lambda per_row: jnp.sum(per_row) / jnp.maximum(jnp.sum(meta.anchor_w), 1)
  if block_size is None:
    per_row = _dense_core(k, n_rows, cw, temperature, meta, n_groups, den_w)
    return reduce_rows(per_row, reduction, mean)
  acc_l, acc_w, acc_n = _positive_sums(k, n_rows, cw, temperature, meta, n_groups)
  n_cols = k.shape[0]
  bs_r, bs_c = min(block_size, n_rows), min(block_size, n_cols)
  rows_p, cols_p = -(-n_rows // bs_r) * bs_r, -(-n_cols // bs_c) * bs_c
  # Padded columns are invalid; padded rows are not needed.
  q, k_p = _pad_to(k[:n_rows], rows_p), _pad_to(k, cols_p)
  col_valid, needed = _pad_to(meta.col_valid, cols_p), _pad_to(meta.anchor_w > 0, rows_p)
  col_w = _pad_to(jnp.ones(n_cols, k.dtype) if den_w is None else den_w, cols_p)
  lse = _streaming_lse(q, k_p, temperature, col_valid, needed, col_w, bs_r, bs_c)
  per_row = _combine(lse[:n_rows], acc_l, acc_w, acc_n, meta.anchor_w)
  return reduce_rows(per_row, reduction, mean)


def simple_meta(keys: Array, n_rows: int, dtype, mask: Array | None = None) -> Meta:
  """Every column valid, one positive group, the first n_rows columns are the anchors."""
  n = keys.shape[0]
  return Meta(
    col_key=keys,
    col_group=jnp.zeros(n, jnp.int32),
    col_valid=jnp.ones(n, bool),
    anchor_w=jnp.ones(n_rows, dtype),
    mask=mask,
  )
