"""Tests for syncon_jax.losses: loop-based float64 numpy references written from each reference
implementation's definition, identities between the losses, central differences, numerical
hardening, and the blockwise path against the dense one."""

import inspect
import math
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from syncon_jax import losses
from syncon_jax.errors import ConfigError

# ------------------------------------------------------------------------------------------------
# Independent numpy references (float64, explicit loops).
# ------------------------------------------------------------------------------------------------


def _np_normalize(x):
  x = np.asarray(x, np.float64)
  return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def _np_logsumexp(values):
  m = max(values)
  return m + math.log(sum(math.exp(v - m) for v in values))


def np_supcon(features, labels=None, mask=None, temperature=0.07, base_temperature=0.07,
              contrast_mode="all", per_row=False):  # fmt: skip
  """SupContrast SupConLoss, anchor by anchor (per_row: the anchors' losses, not their mean)."""
  feats = np.asarray(features, np.float64)
  batch, n_views = feats.shape[:2]
  feats = feats.reshape(batch, n_views, -1)
  rows = [feats[r % batch, r // batch] for r in range(batch * n_views)]  # view-major
  if labels is None and mask is None:
    pos = np.eye(batch)
  elif labels is not None:
    pos = np.array([[float(labels[i] == labels[j]) for j in range(batch)] for i in range(batch)])
  else:
    pos = np.asarray(mask, np.float64)
  anchors = range(len(rows)) if contrast_mode == "all" else range(batch)
  out = []
  for a in anchors:
    logits = {c: float(rows[a] @ rows[c]) / temperature for c in range(len(rows)) if c != a}
    lse = _np_logsumexp(list(logits.values()))
    num = sum(pos[a % batch, c % batch] * (lg - lse) for c, lg in logits.items())
    den = sum(pos[a % batch, c % batch] for c in logits)
    out.append(-(temperature / base_temperature) * num / (1.0 if den < 1e-6 else den))
  return np.array(out) if per_row else float(np.mean(out))


def np_syncon(features, labels, is_syn, weight, temperature=0.1, base_temperature=None,
              valid=None, synthetic_denominator="all", per_row=False):  # fmt: skip
  """The SynCon formula of DESIGN.md with explicit sets A, P, U; 'weighted': synthetic row j
  counts weight[j] in the denominator sum over A. per_row: [n], 0 on rows that are not anchors."""
  base_temperature = temperature if base_temperature is None else base_temperature
  x = np.asarray(features, np.float64)
  n = x.shape[0]
  valid = np.ones(n, bool) if valid is None else np.asarray(valid)
  out, rows = [], np.zeros(n)
  for i in range(n):
    if is_syn[i] or not valid[i]:
      continue
    a_set = [j for j in range(n) if j != i and valid[j]]
    p_set = [j for j in a_set if not is_syn[j] and labels[j] == labels[i]]
    u_set = [j for j in a_set if is_syn[j] and labels[j] == labels[i]]
    den = lambda j: weight[j] if synthetic_denominator == "weighted" and is_syn[j] else 1.0
    terms = [den(j) * np.exp(x[i] @ x[j] / temperature) for j in a_set]
    lse = float(np.log(np.sum(terms))) if a_set else 0.0
    log_p = lambda j, i=i, lse=lse: x[i] @ x[j] / temperature - lse
    loss = 0.0
    if p_set:
      loss -= sum(log_p(j) for j in p_set) / len(p_set)
    if u_set:
      loss -= sum(weight[j] * log_p(j) for j in u_set) / len(u_set)
    out.append(loss)
    rows[i] = (temperature / base_temperature) * loss
  if per_row:
    return rows
  return (temperature / base_temperature) * (float(np.mean(out)) if out else 0.0)


def np_ntxent(z1, z2, temperature=0.5, per_row=False):
  """lightly NTXentLoss (no memory bank): rows [out_v . other view, out_v . same view but self]."""
  out0, out1 = _np_normalize(z1), _np_normalize(z2)
  batch = out0.shape[0]
  losses_ = []
  for mine, other in ((out0, out1), (out1, out0)):
    for i in range(batch):
      row = [mine[i] @ other[j] / temperature for j in range(batch)]
      row += [mine[i] @ mine[j] / temperature for j in range(batch) if j != i]
      losses_.append(_np_logsumexp(row) - row[i])
  return np.array(losses_) if per_row else float(np.mean(losses_))


def np_multipos(features, labels, temperature=0.1, per_row=False):
  """StableRep MultiPosConLoss: self logit minus 1e9, target uniform over same-label others."""
  x = _np_normalize(features)
  n = x.shape[0]
  out = []
  for i in range(n):
    logits = [x[i] @ x[j] / temperature - (1e9 if j == i else 0.0) for j in range(n)]
    lse = _np_logsumexp(logits)
    targets = [float(labels[j] == labels[i] and j != i) for j in range(n)]
    norm = max(sum(targets), 1.0)
    out.append(-sum(t / norm * (lg - lse) for t, lg in zip(targets, logits, strict=True)))
  return np.array(out) if per_row else float(np.mean(out))


def np_moco(q, k, queue, temperature=0.07, per_row=False):
  q, k = _np_normalize(q), _np_normalize(k)
  queue = np.asarray(queue, np.float64)
  out = []
  for i in range(q.shape[0]):
    logits = [q[i] @ k[i] / temperature] + [
      q[i] @ queue[j] / temperature for j in range(len(queue))
    ]
    out.append(_np_logsumexp(logits) - logits[0])
  return np.array(out) if per_row else float(np.mean(out))


def np_dist(a, b, metric):
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  if metric == "euclidean":
    return float(np.sqrt(np.sum((a - b) ** 2)))
  if metric == "squared_euclidean":
    return float(np.sum((a - b) ** 2))
  return float(1 - a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def np_batch_hard(x, labels, margin, metric, per_row=False):
  n = len(labels)
  out, rows = [], np.zeros(n)
  for a in range(n):
    d_pos = [np_dist(x[a], x[p], metric) for p in range(n) if p != a and labels[p] == labels[a]]
    d_neg = [np_dist(x[a], x[j], metric) for j in range(n) if labels[j] != labels[a]]
    if d_pos and d_neg:
      out.append(max(0.0, max(d_pos) - min(d_neg) + margin))
      rows[a] = out[-1]
  if per_row:
    return rows
  return float(np.mean(out)) if out else 0.0


def np_batch_all(x, labels, margin, metric, average):
  n = len(labels)
  hinges = []
  for a in range(n):
    for p in range(n):
      for j in range(n):
        if p != a and labels[p] == labels[a] and labels[j] != labels[a]:
          d = np_dist(x[a], x[p], metric) - np_dist(x[a], x[j], metric) + margin
          hinges.append(max(0.0, d))
  counted = [h for h in hinges if h > 1e-16] if average == "positive" else hinges
  return sum(hinges) / len(counted) if counted else 0.0


# ------------------------------------------------------------------------------------------------
# Helpers.
# ------------------------------------------------------------------------------------------------


def _jit(fn):
  """fn under jax.jit with its named options static: the losses are traced inside their caller's
  jit, and the tests are their caller here, so each shape and setting compiles once."""
  options = ("contrast_mode", "block_size", "synthetic_denominator", "metric", "average",
             "reduction")  # fmt: skip
  return jax.jit(fn, static_argnames=[o for o in options if o in inspect.signature(fn).parameters])


jl = types.SimpleNamespace(**{fn.__name__: _jit(fn) for fn in losses.LOSSES.values()})


@pytest.fixture
def x64():
  with jax.enable_x64(True):
    yield


def _unit(rng, shape, dtype=np.float64):
  return _np_normalize(rng.normal(size=shape)).astype(dtype)


def _syncon_batch(rng, n=12, dim=4, n_classes=3, dtype=np.float64):
  x = _unit(rng, (n, dim), dtype)
  labels = rng.integers(0, n_classes, n)
  is_syn = rng.random(n) < 0.4
  weight = rng.uniform(0.1, 1.0, n).astype(dtype)
  return x, labels, is_syn, weight


def _central_grad(f, x, eps=1e-6):
  """Full central-difference gradient of scalar f at float64 array x."""
  x = np.asarray(x, np.float64)
  grad = np.zeros_like(x)
  for idx in np.ndindex(x.shape):
    step = np.zeros_like(x)
    step[idx] = eps
    grad[idx] = (float(f(x + step)) - float(f(x - step))) / (2 * eps)
  return grad


def _finite(tree):
  return all(bool(jnp.all(jnp.isfinite(leaf))) for leaf in jax.tree.leaves(tree))


# ------------------------------------------------------------------------------------------------
# Exactness against the references (float64, 1e-10).
# ------------------------------------------------------------------------------------------------

# The float64 tests share shapes (6 samples x 2 views x dim 4 = 12 rows, blocks of 5, which
# divide neither 12 nor 6) so that the jitted loss core compiles once per variant and is reused.
BATCH, VIEWS, DIM, BLOCK = 6, 2, 4, 5
LABELS6 = np.array([0, 1, 0, 2, 1, 0])
LABELS12 = np.array([0, 1, 0, 2, 1, 0, 3, 2, 2, 4, 1, 0])  # 3 and 4 have no positive

SUPCON_CASES = {
  "simclr": dict(),
  "labels": dict(labels=LABELS6),
  "one": dict(labels=LABELS6, contrast_mode="one"),
  "asym_mask": dict(mask=(np.random.default_rng(7).random((6, 6)) < 0.4).astype(float)),
  "fractional_mask_one": dict(mask=np.random.default_rng(8).random((6, 6)) * 0.5,
                              contrast_mode="one"),
  "no_positive_anchor": dict(labels=np.arange(6)),
  "base_temperature": dict(labels=LABELS6, base_temperature=0.2),
}  # fmt: skip


# Blockwise: the label path with fewer anchors than columns and both mask paths (label
# positives over all anchors run blockwise in the ntxent and multipos tests).
@pytest.mark.parametrize(
  "case,block_size",
  [(case, None) for case in sorted(SUPCON_CASES)]
  + [(case, BLOCK) for case in ("one", "asym_mask", "fractional_mask_one")],
)
def test_supcon_matches_reference(x64, case, block_size):
  rng = np.random.default_rng(0)
  features = _unit(rng, (BATCH, VIEWS, DIM))
  kwargs = SUPCON_CASES[case]
  mine = jl.supcon_loss(features, temperature=0.1, block_size=block_size, **kwargs)
  ref_kwargs = dict(kwargs, temperature=0.1)
  ref_kwargs.setdefault("base_temperature", 0.07)
  assert float(mine) == pytest.approx(np_supcon(features, **ref_kwargs), rel=1e-10, abs=1e-12)


def test_supcon_unnormalised_features_match_reference_unchanged(x64):
  # SupContrast does not normalise; neither do we, so raw features give its numbers too.
  features = np.random.default_rng(1).normal(size=(BATCH, VIEWS, DIM))
  mine = jl.supcon_loss(features, labels=LABELS6, temperature=0.5)
  ref = np_supcon(features, labels=LABELS6, temperature=0.5)
  assert float(mine) == pytest.approx(ref, rel=1e-10)


@pytest.mark.parametrize("block_size", [None, BLOCK])
def test_syncon_matches_reference(x64, block_size):
  x, labels, is_syn, weight = _syncon_batch(np.random.default_rng(2))
  valid = np.random.default_rng(3).random(len(labels)) > 0.2
  for kwargs in (dict(), dict(base_temperature=0.07), dict(valid=valid)):
    mine = jl.syncon_loss(x, labels, is_syn, weight, temperature=0.2, block_size=block_size,
                              **kwargs)  # fmt: skip
    ref = np_syncon(x, labels, is_syn, weight, temperature=0.2, **kwargs)
    assert float(mine) == pytest.approx(ref, rel=1e-10)


@pytest.mark.parametrize("block_size", [None, BLOCK])
def test_ntxent_matches_reference(x64, block_size):
  rng = np.random.default_rng(4)
  z1 = rng.normal(size=(BATCH, DIM)) * 3  # not unit: normalised inside
  z2 = rng.normal(size=(BATCH, DIM))
  mine = jl.ntxent_loss(z1, z2, temperature=0.3, block_size=block_size)
  assert float(mine) == pytest.approx(np_ntxent(z1, z2, 0.3), rel=1e-10)


@pytest.mark.parametrize("block_size", [None, BLOCK])
def test_multipos_matches_reference(x64, block_size):
  features = np.random.default_rng(5).normal(size=(2 * BATCH, DIM)) * 2
  mine = jl.multipos_loss(features, LABELS12, temperature=0.1, block_size=block_size)
  assert float(mine) == pytest.approx(np_multipos(features, LABELS12, 0.1), rel=1e-10)


def test_moco_matches_reference(x64):
  rng = np.random.default_rng(6)
  q, k = rng.normal(size=(5, 4)), rng.normal(size=(5, 4))
  queue = _unit(rng, (9, 4))
  mine = jl.moco_loss(q, k, queue, temperature=0.2)
  assert float(mine) == pytest.approx(np_moco(q, k, queue, 0.2), rel=1e-10)
  rows = jl.moco_loss(q, k, queue, temperature=0.2, reduction="none")
  np.testing.assert_allclose(rows, np_moco(q, k, queue, 0.2, per_row=True), rtol=1e-10)


def test_byol_matches_reference(x64):
  rng = np.random.default_rng(7)
  p, t = rng.normal(size=(5, 4)), rng.normal(size=(5, 4)) * 5
  ref = [2 - 2 * float(_np_normalize(p[i]) @ _np_normalize(t[i])) for i in range(5)]
  np.testing.assert_allclose(jl.byol_loss(p, t), ref, rtol=1e-10)
  assert jl.byol_loss(p, t).shape == (5,)


@pytest.mark.parametrize("block_size", [None, BLOCK])
def test_reduction_none_gives_the_rows_that_mean_averages(x64, block_size):
  rng = np.random.default_rng(26)
  features = _unit(rng, (BATCH, VIEWS, DIM))
  x, labels, is_syn, weight = _syncon_batch(rng)
  valid = rng.random(len(labels)) > 0.2
  z1, z2 = rng.normal(size=(2, BATCH, DIM))
  rows12 = rng.normal(size=(2 * BATCH, DIM))
  kw = dict(block_size=block_size)
  # name: (loss(reduction), the reference's per-anchor losses, the number of anchors)
  cases = {
    "supcon_all": (
      lambda r: jl.supcon_loss(features, LABELS6, temperature=0.1, reduction=r, **kw),
      np_supcon(features, LABELS6, temperature=0.1, per_row=True),
      BATCH * VIEWS,
    ),
    "supcon_one_mask": (
      lambda r: jl.supcon_loss(features, mask=SUPCON_CASES["asym_mask"]["mask"],
                                   contrast_mode="one", temperature=0.1, base_temperature=0.2,
                                   reduction=r, **kw),
      np_supcon(features, mask=SUPCON_CASES["asym_mask"]["mask"], contrast_mode="one",
                temperature=0.1, base_temperature=0.2, per_row=True),
      BATCH,
    ),
    "syncon": (
      lambda r: jl.syncon_loss(x, labels, is_syn, weight, temperature=0.2, valid=valid,
                                   reduction=r, **kw),
      np_syncon(x, labels, is_syn, weight, temperature=0.2, valid=valid, per_row=True),
      np.sum(valid & ~is_syn),
    ),
    "ntxent": (
      lambda r: jl.ntxent_loss(z1, z2, temperature=0.3, reduction=r, **kw),
      np_ntxent(z1, z2, 0.3, per_row=True),
      2 * BATCH,
    ),
    "multipos": (
      lambda r: jl.multipos_loss(rows12, LABELS12, temperature=0.1, reduction=r, **kw),
      np_multipos(rows12, LABELS12, 0.1, per_row=True),
      2 * BATCH,
    ),
  }  # fmt: skip
  for name, (loss, ref_rows, n_anchors) in cases.items():
    rows = loss("none")
    np.testing.assert_allclose(rows, ref_rows, rtol=1e-10, atol=1e-12, err_msg=name)
    assert float(loss("mean")) == pytest.approx(float(np.sum(rows)) / n_anchors, rel=1e-12), name


# ------------------------------------------------------------------------------------------------
# Identities.
# ------------------------------------------------------------------------------------------------


def test_supcon_without_labels_is_ntxent(x64):
  rng = np.random.default_rng(9)
  z = _unit(rng, (BATCH, VIEWS, DIM))
  supcon = jl.supcon_loss(z, temperature=0.5, base_temperature=0.5)
  assert float(supcon) == pytest.approx(float(jl.ntxent_loss(z[:, 0], z[:, 1])), rel=1e-12)


def test_multipos_is_one_view_supcon_with_base_temperature_equal(x64):
  rng = np.random.default_rng(10)
  x = _unit(rng, (2 * BATCH, DIM))
  supcon = jl.supcon_loss(x[:, None], LABELS12, temperature=0.1, base_temperature=0.1)
  assert float(jl.multipos_loss(x, LABELS12)) == pytest.approx(float(supcon), rel=1e-12)


def test_syncon_without_synthetic_is_supcon_all(x64):
  rng = np.random.default_rng(11)
  features = _unit(rng, (BATCH, VIEWS, DIM))
  n = BATCH * VIEWS
  flat = np.swapaxes(features, 0, 1).reshape(n, DIM)  # view-major, as supcon concatenates
  syn = jl.syncon_loss(flat, np.tile(LABELS6, VIEWS), np.zeros(n, bool), np.ones(n),
                           temperature=0.1, base_temperature=0.07)  # fmt: skip
  supcon = jl.supcon_loss(features, LABELS6, temperature=0.1, base_temperature=0.07)
  assert float(syn) == pytest.approx(float(supcon), rel=1e-12)


def test_syncon_zero_weight_ignores_synthetic_positives_keeps_denominators(x64):
  x, labels, is_syn, _ = _syncon_batch(np.random.default_rng(12))
  zero = jl.syncon_loss(x, labels, is_syn, np.zeros(len(labels)))
  # Same batch with the synthetic rows moved to a class of their own: no longer positives of
  # any real anchor, still in every denominator.
  relabelled = np.where(is_syn, labels.max() + 1, labels)
  expected = jl.syncon_loss(x, relabelled, is_syn, np.ones(len(labels)))
  assert float(zero) == pytest.approx(float(expected), rel=1e-12)
  real = ~is_syn
  dropped = jl.syncon_loss(x[real], labels[real], is_syn[real], np.zeros(real.sum()))
  assert abs(float(zero) - float(dropped)) > 1e-3  # the synthetic rows did count below


@pytest.mark.parametrize("block_size", [None, BLOCK])
def test_syncon_weighted_denominator_matches_reference(x64, block_size):
  x, labels, is_syn, weight = _syncon_batch(np.random.default_rng(22))
  valid = np.random.default_rng(23).random(len(labels)) > 0.2
  for kwargs in (dict(), dict(valid=valid)):
    mine = jl.syncon_loss(x, labels, is_syn, weight, temperature=0.2, block_size=block_size,
                              synthetic_denominator="weighted", **kwargs)  # fmt: skip
    ref = np_syncon(x, labels, is_syn, weight, temperature=0.2, synthetic_denominator="weighted",
                    **kwargs)  # fmt: skip
    assert float(mine) == pytest.approx(ref, rel=1e-10)
    literal = np_syncon(x, labels, is_syn, weight, temperature=0.2, **kwargs)
    assert abs(ref - literal) > 1e-3  # the two forms differ where some w < 1
  # At w = 1 the two forms are the same loss.
  ones = np.ones(len(labels))
  a = jl.syncon_loss(x, labels, is_syn, ones, block_size=block_size)
  b = jl.syncon_loss(x, labels, is_syn, ones, block_size=block_size,
                         synthetic_denominator="weighted")  # fmt: skip
  assert float(a) == pytest.approx(float(b), rel=1e-12)


@pytest.mark.parametrize("block_size", [None, BLOCK])
def test_syncon_weighted_zero_weight_equals_removing_the_class(x64, block_size):
  x, labels, is_syn, weight = _syncon_batch(np.random.default_rng(24))
  # Class 1's synthetic rows at w = 0; every other synthetic row keeps its weight.
  gone = is_syn & (labels == 1)
  assert gone.any() and (is_syn & ~gone).any()
  w = np.where(gone, 0.0, weight)
  for den in ("weighted", "all"):
    # Removal in either form (the other synthetic rows keep their weights): the weighted form
    # at w = 0 equals it, the literal form does not (the class stays in every denominator).
    kw = dict(temperature=0.2, block_size=block_size)
    zero = jl.syncon_loss(x, labels, is_syn, w, synthetic_denominator="weighted", **kw)
    keep = ~gone
    removed = jl.syncon_loss(x[keep], labels[keep], is_syn[keep], w[keep],
                                 synthetic_denominator=den, **kw)  # fmt: skip
    ref = np_syncon(x[keep], labels[keep], is_syn[keep], w[keep], temperature=0.2,
                    synthetic_denominator=den)  # fmt: skip
    assert float(removed) == pytest.approx(ref, rel=1e-10)
    literal = jl.syncon_loss(x, labels, is_syn, w, **kw)
    if den == "weighted":
      assert float(zero) == pytest.approx(float(removed), rel=1e-12)
    else:
      # All remaining weights 1: the literal form of the removed batch is the weighted one.
      ones = np.where(gone, 0.0, 1.0)
      zero1 = jl.syncon_loss(x, labels, is_syn, ones, synthetic_denominator="weighted", **kw)
      removed1 = jl.syncon_loss(x[keep], labels[keep], is_syn[keep], ones[keep], **kw)
      assert float(zero1) == pytest.approx(float(removed1), rel=1e-12)
      literal1 = jl.syncon_loss(x, labels, is_syn, ones, **kw)
      assert abs(float(literal1) - float(removed1)) > 1e-3
    assert abs(float(literal) - float(zero)) > 1e-3
  # And the features of the zero-weight rows get no gradient in the weighted form.
  g = jax.grad(lambda f: jl.syncon_loss(f, labels, is_syn, w, synthetic_denominator="weighted",
                                            **kw))(x)  # fmt: skip
  assert np.all(np.asarray(g)[gone] == 0)


@pytest.mark.parametrize("block_size", [None, BLOCK])
def test_syncon_invalid_rows_are_deleted_rows(x64, block_size):
  x, labels, is_syn, weight = _syncon_batch(np.random.default_rng(13))
  valid = np.ones(len(labels), bool)
  valid[[1, 4, 5, 11]] = False
  with_valid = jl.syncon_loss(x, labels, is_syn, weight, valid=valid, block_size=block_size)
  deleted = jl.syncon_loss(x[valid], labels[valid], is_syn[valid], weight[valid])
  assert float(with_valid) == pytest.approx(float(deleted), rel=1e-12)
  # Gradients reach only valid rows (same call as the central-difference test: reuses its build).
  grad = _SYNCON_GRAD(x, weight, np.array(0.2), labels, is_syn, valid, block_size)[0]
  assert np.all(np.asarray(grad)[~valid] == 0) and np.any(np.asarray(grad)[valid] != 0)


@pytest.mark.parametrize("block_size", [None, BLOCK])
def test_supcon_invalid_samples_are_deleted_samples(x64, block_size):
  features = _unit(np.random.default_rng(19), (BATCH, VIEWS, DIM))
  valid = np.array([True, False, True, True, False, True])
  for mode in ("all", "one"):
    with_valid = jl.supcon_loss(features, LABELS6, valid=valid, contrast_mode=mode,
                                    block_size=block_size)  # fmt: skip
    deleted = jl.supcon_loss(features[valid], LABELS6[valid], contrast_mode=mode)
    assert float(with_valid) == pytest.approx(float(deleted), rel=1e-12)


# ------------------------------------------------------------------------------------------------
# Gradients against central differences (float64).
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("block_size", [None, BLOCK])
def test_supcon_gradient_matches_central_differences(x64, block_size):
  features = _unit(np.random.default_rng(14), (BATCH, VIEWS, DIM))
  mask = SUPCON_CASES["asym_mask"]["mask"]
  f = lambda z: jl.supcon_loss(z, mask=mask, temperature=0.2, block_size=block_size)
  np.testing.assert_allclose(jax.grad(f)(features), _central_grad(f, features), atol=1e-7)


def _syncon_for_grad(feats, w, temperature, labels, is_syn, valid, block_size, den="all"):
  return jl.syncon_loss(feats, labels, is_syn, w, valid=valid, temperature=temperature,
                            base_temperature=0.1, block_size=block_size,
                            synthetic_denominator=den)  # fmt: skip


_SYNCON_GRAD = jax.jit(jax.grad(_syncon_for_grad, argnums=(0, 1, 2)), static_argnums=(6, 7))


@pytest.mark.parametrize("block_size,den", [(None, "all"), (BLOCK, "all"), (None, "weighted"),
                                            (BLOCK, "weighted")])  # fmt: skip
def test_syncon_gradient_matches_central_differences(x64, block_size, den):
  # Features, synthetic weights and temperature (the blockwise path has its own backward).
  x, labels, _, weight = _syncon_batch(np.random.default_rng(15))
  # Synthetic rows last: the row block 10..14 (2 rows + padding) has no anchor and is skipped.
  is_syn = np.arange(len(labels)) >= 8
  valid = np.arange(len(labels)) != 4
  t = np.array(0.2)
  f = lambda feats, w, t: _syncon_for_grad(feats, w, t, labels, is_syn, valid, block_size, den)
  g_x, g_w, g_t = _SYNCON_GRAD(x, weight, t, labels, is_syn, valid, block_size, den)
  np.testing.assert_allclose(g_x, _central_grad(lambda z: f(z, weight, t), x), atol=1e-7)
  np.testing.assert_allclose(g_w, _central_grad(lambda w: f(x, w, t), weight), atol=1e-7)
  assert float(g_t) == pytest.approx(float(_central_grad(lambda t: f(x, weight, t), t)), rel=1e-6)
  assert np.any(np.asarray(g_w)[is_syn & valid] != 0)
  assert np.all(np.asarray(g_w)[~is_syn] == 0)


@pytest.mark.parametrize("name", ["ntxent", "multipos", "triplet", "batch_hard", "batch_all", "ce"])
def test_other_gradients_match_central_differences(x64, name):
  rng = np.random.default_rng(17)
  a, b, c = rng.normal(size=(3, 5, 3))
  labels = np.array([0, 1, 0, 1, 1])
  fns = {
    "ntxent": lambda z: jl.ntxent_loss(z, b, temperature=0.3),
    "multipos": lambda z: jl.multipos_loss(z, labels),
    "triplet": lambda z: jl.triplet_loss(z, b, c, margin=0.5),
    "batch_hard": lambda z: jl.batch_hard_triplet_loss(z, labels, margin=0.5),
    "batch_all": lambda z: jl.batch_all_triplet_loss(z, labels, margin=2.0, average="all"),
    "ce": lambda z: jl.softmax_cross_entropy(z, np.array([0, 2, 1, 1, 0]), label_smoothing=0.1),
  }
  f = fns[name]
  np.testing.assert_allclose(jax.grad(f)(a), _central_grad(f, a), atol=1e-7)


def test_moco_and_byol_gradients_and_stop_gradients(x64):
  rng = np.random.default_rng(18)
  q, k, queue = rng.normal(size=(4, 3)), rng.normal(size=(4, 3)), _unit(rng, (6, 3))
  g_q, g_k, g_queue = jax.grad(jl.moco_loss, argnums=(0, 1, 2))(q, k, queue)
  assert not np.any(g_k) and not np.any(g_queue)
  np.testing.assert_allclose(g_q, _central_grad(lambda z: jl.moco_loss(z, k, queue), q),
                             atol=1e-7)  # fmt: skip
  byol = lambda p, t: jnp.sum(jl.byol_loss(p, t))
  g_p, g_t = jax.grad(byol, argnums=(0, 1))(q, k)
  assert not np.any(g_t)
  np.testing.assert_allclose(g_p, _central_grad(lambda z: byol(z, k), q), atol=1e-7)


# ------------------------------------------------------------------------------------------------
# No NaN or inf, and blockwise == dense in float32 (loss and gradients).
# ------------------------------------------------------------------------------------------------


# One batch of 50 rows with blocks of 16 (dividing neither the 50 columns nor supcon 'one''s
# 25 anchors) for every case, so each loss compiles once per dtype and path.
HARDENING_CASES = ["plain", "no_positive", "norm_1e3", "temperature_0.01", "bf16", "zero_rows"]


@pytest.mark.parametrize("case", HARDENING_CASES)
def test_finite_and_blockwise_equals_dense_float32(case):
  rng = np.random.default_rng(20)
  n, dim, block_size = 50, 16, 16
  x = _unit(rng, (n, dim), np.float32)
  labels = np.arange(n) if case == "no_positive" else rng.integers(0, 6, n)
  syn = rng.random(n) < 0.4
  weight = rng.uniform(0, 1, n).astype(np.float32)
  valid = rng.random(n) > 0.1
  mask = (rng.random((25, 25)) < 0.3).astype(np.float32) * (case != "no_positive")
  queue = _unit(rng, (5, dim), np.float32)
  t = 0.01 if case == "temperature_0.01" else 0.1
  if case == "norm_1e3":
    x = x * 1e3
  elif case == "bf16":
    x = jnp.asarray(x, jnp.bfloat16)
  elif case == "zero_rows":  # where features are normalised inside: x / max(|x|, eps)
    x[:3] = 0
    x[25:28] = 0
  # fn(features, weights, block_size); syncon and the mask path get every option at once.
  blockable = {
    "supcon_one_mask": lambda f, w, bs: jl.supcon_loss(
      f.reshape(25, 2, dim), mask=mask, contrast_mode="one", temperature=t, base_temperature=0.1,
      block_size=bs,
    ),
    "syncon": lambda f, w, bs: jl.syncon_loss(f, labels, syn, w, valid=valid, temperature=t,
                                                  block_size=bs),
    "multipos": lambda f, w, bs: jl.multipos_loss(f, labels, temperature=t, block_size=bs),
  }  # fmt: skip
  dense_only = {
    "ntxent": lambda f, w, bs: jl.ntxent_loss(f[:25], f[25:], temperature=t),
    "moco": lambda f, w, bs: jl.moco_loss(f, f[::-1], queue, temperature=t),
    "byol": lambda f, w, bs: jnp.sum(jl.byol_loss(f, f[::-1])),
    "batch_hard": lambda f, w, bs: jl.batch_hard_triplet_loss(f, labels, margin=0.2),
  }
  dense_values = {}
  for name, fn in {**blockable, **dense_only}.items():
    value_and_grad = jax.value_and_grad(fn, argnums=(0, 1))
    dense, g_dense = value_and_grad(x, weight, None)
    dense_values[name] = float(dense)
    assert _finite(dense) and _finite(g_dense), (case, name)
    assert dense.dtype == jnp.float32 and g_dense[0].dtype == x.dtype, name
    if case == "no_positive" and (name in blockable or name == "batch_hard"):
      assert float(dense) == 0.0, name
    if name not in blockable:
      continue
    blockwise, g_block = value_and_grad(x, weight, block_size)
    assert float(blockwise) == pytest.approx(float(dense), rel=1e-5), (case, name)
    # Feature gradients come back in the input dtype: bf16 rounding allows a last-bit flip.
    tol = 1e-2 if case == "bf16" else 1e-5
    for gd, gb in zip(g_dense, g_block, strict=True):
      gd, gb = np.asarray(gd, np.float32), np.asarray(gb, np.float32)
      np.testing.assert_allclose(gb, gd, rtol=tol, atol=tol * np.max(np.abs(gd)) + 1e-12)
    if name == "syncon" and case in ("plain", "bf16"):
      assert np.any(g_block[1] != 0)  # the synthetic weights do get a gradient
  if case == "plain":  # float32 against the float64 loops
    ref = np_supcon(
      x.reshape(25, 2, dim), mask=mask, temperature=t, base_temperature=0.1, contrast_mode="one"
    )
    assert dense_values["supcon_one_mask"] == pytest.approx(ref, rel=1e-5)
    ref = np_syncon(x, labels, syn, weight, temperature=t, valid=valid)
    assert dense_values["syncon"] == pytest.approx(ref, rel=1e-5)
  if case == "bf16":  # same bf16-rounded values, float32 input
    fn = blockable["syncon"]
    f32, _ = jax.value_and_grad(fn, argnums=(0, 1))(jnp.asarray(x, jnp.float32), weight, None)
    assert dense_values["syncon"] == pytest.approx(float(f32), rel=1e-5)


def test_blockwise_never_builds_the_matrix():
  # The compiled blockwise step's temporaries stay far below one n x n float32 matrix.
  n, dim, block = 2048, 8, 128
  x = jnp.ones((n, dim)) / math.sqrt(dim)
  labels = jnp.arange(n) % 10
  step = jax.grad(lambda z: losses.multipos_loss(z, labels, block_size=block))
  temp = lambda fn: jax.jit(fn).lower(x).compile().memory_analysis().temp_size_in_bytes
  matrix_bytes = n * n * 4
  assert temp(step) < matrix_bytes / 4
  # The measurement does see the matrix where there is one (dense forward alone).
  assert temp(lambda z: losses.multipos_loss(z, labels)) >= matrix_bytes


# ------------------------------------------------------------------------------------------------
# Triplet losses and cross-entropy.
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("metric", sorted(losses.TRIPLET_METRICS))
def test_triplet_losses_match_loops(x64, metric):
  rng = np.random.default_rng(22)
  a, p, n = rng.normal(size=(3, 6, 4))
  margin = {"euclidean": 0.5, "squared_euclidean": 1.0, "cosine": 0.3}[metric]
  ref_rows = [max(0.0, np_dist(a[i], p[i], metric) - np_dist(a[i], n[i], metric) + margin)
              for i in range(6)]  # fmt: skip
  mine = jl.triplet_loss(a, p, n, margin=margin, metric=metric)
  assert float(mine) == pytest.approx(np.mean(ref_rows), rel=1e-10)
  rows = jl.triplet_loss(a, p, n, margin=margin, metric=metric, reduction="none")
  np.testing.assert_allclose(rows, ref_rows, rtol=1e-10, atol=1e-12)

  x = rng.normal(size=(9, 4))
  labels = np.array([0, 1, 0, 2, 1, 0, 3, 2, 1])  # label 3: no positive, not an anchor
  hard = jl.batch_hard_triplet_loss(x, labels, margin=margin, metric=metric)
  assert float(hard) == pytest.approx(np_batch_hard(x, labels, margin, metric), rel=1e-10)
  rows = jl.batch_hard_triplet_loss(x, labels, margin=margin, metric=metric, reduction="none")
  np.testing.assert_allclose(rows, np_batch_hard(x, labels, margin, metric, per_row=True),
                             rtol=1e-10, atol=1e-12)  # fmt: skip
  for average in losses.BATCH_ALL_AVERAGES:
    mine = jl.batch_all_triplet_loss(x, labels, margin=margin, metric=metric, average=average)
    ref = np_batch_all(x, labels, margin, metric, average)
    assert float(mine) == pytest.approx(ref, rel=1e-10)


def test_softmax_cross_entropy_matches_numpy(x64):
  rng = np.random.default_rng(24)
  logits, labels = rng.normal(size=(5, 4)), np.array([0, 3, 1, 1, 2])
  for eps in (0.0, 0.1):
    rows = []
    for i in range(5):
      lse = _np_logsumexp(list(logits[i]))
      target = np.full(4, eps / 4)
      target[labels[i]] += 1 - eps
      rows.append(-sum(target[c] * (logits[i, c] - lse) for c in range(4)))
    mine = jl.softmax_cross_entropy(logits, labels, label_smoothing=eps)
    assert float(mine) == pytest.approx(np.mean(rows), rel=1e-10)
    mine = jl.softmax_cross_entropy(logits, labels, label_smoothing=eps, reduction="none")
    np.testing.assert_allclose(mine, rows, rtol=1e-10)


# ------------------------------------------------------------------------------------------------
# Errors.
# ------------------------------------------------------------------------------------------------


def test_unknown_options_fail_and_the_registry_names_the_valid_losses():
  # The settings a config holds are checked once by validate.check_config (tests/test_cli.py);
  # the losses themselves look a named option up, so a wrong name fails instead of running.
  x = jnp.zeros((4, 2, 3))
  labels, is_syn, w = jnp.zeros(8, int), jnp.zeros(8, bool), jnp.ones(8)
  with pytest.raises(ValueError, match="labels or mask"):
    jl.supcon_loss(x, labels=jnp.zeros(4), mask=jnp.eye(4))
  wrong = {
    "both": lambda: jl.supcon_loss(x, contrast_mode="both"),
    "own": lambda: jl.syncon_loss(x.reshape(8, 3), labels, is_syn, w,
                                  synthetic_denominator="own"),
    "l1": lambda: jl.triplet_loss(x[:, 0], x[:, 0], x[:, 0], margin=1.0, metric="l1"),
    "mean_all": lambda: jl.batch_all_triplet_loss(x[:, 0], labels[:4], margin=1.0,
                                                  average="mean_all"),
    "sum": lambda: jl.multipos_loss(x[:, 0], labels[:4], reduction="sum"),
  }  # fmt: skip
  for name, call in wrong.items():
    with pytest.raises(KeyError, match=name):
      call()
  with pytest.raises(ConfigError, match="syncon"):
    losses.get_loss("sincon")
  assert losses.get_loss("syncon") is losses.syncon_loss
