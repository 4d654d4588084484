"""Tests for syncon_jax.models: shapes, torchvision parameter counts, BatchNorm modes, bf16,
gradients and the functional (split/merge) round trips the trainer relies on."""

import functools
import re

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from syncon_jax import platform
from syncon_jax.errors import ConfigError
from syncon_jax.models import MODELS, ContrastiveModel, LinearClassifier, create_model, resnet
from syncon_jax.models.heads import ProjectionHead
from syncon_jax.models.resnet import Bottleneck, ResNet, resnet18, resnet50

EXPANSION = {"resnet18": 1, "resnet50": 4, "resnet_tiny": 1}
BN_MOMENTUM = 0.9
BN_EPS = 1e-5  # nnx.BatchNorm's default, which the models keep


def model_config(name="resnet_tiny", stem="cifar", dtype="float32", **overrides):
  c = ml_collections.ConfigDict(
    dict(
      name=name,
      stem=stem,
      width=4,
      proj_hidden_dim=16,
      proj_dim=8,
      dtype=dtype,
      bn_momentum=BN_MOMENTUM,
    )
  )
  c.update(overrides)
  return c


def images(batch=8, size=16, seed=0):
  return jax.random.normal(jax.random.key(seed), (batch, size, size, 3), jnp.float32)


def n_params(module) -> int:
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nnx.state(module, nnx.Param)))


def batch_stats(module) -> list[np.ndarray]:
  return [np.asarray(x) for x in jax.tree.leaves(nnx.state(module, nnx.BatchStat))]


@pytest.fixture(autouse=True, scope="module")
def _fast_cpu_prng():
  # With jax's default partitionable threefry, each new init shape takes seconds to compile on
  # CPU (about 0.4 s without); the random values differ, which these tests do not depend on.
  with jax.threefry_partitionable(False):
    yield


@nnx.jit(static_argnames="train")
def forward(model, x, *, train):
  return model(x, train=train)


def _abstract_forward(model, x, train):
  """Shapes and dtypes of a forward pass without compiling it (full-size nets are slow on CPU)."""
  graphdef, state = nnx.split(model)
  return jax.eval_shape(lambda s, x: nnx.merge(graphdef, s)(x, train=train), state, x)


@pytest.mark.parametrize("stem", ["cifar", "imagenet"])
@pytest.mark.parametrize("name", sorted(EXPANSION))  # the ResNets; the ViT: tests/test_vit.py
def test_output_shapes_and_dtypes(name, stem):
  # bfloat16 outputs are checked by test_bfloat16_computes_in_bf16_with_float32_params_and_outputs.
  cfg = model_config(name, stem)
  model = nnx.eval_shape(lambda: create_model(cfg, rngs=nnx.Rngs(0)))
  assert isinstance(model, ContrastiveModel)
  # Four stages double the width three times; bottlenecks expand the last one by 4.
  assert model.feat_dim == cfg.width * 8 * EXPANSION[name]
  x = jax.ShapeDtypeStruct((4, 32, 32, 3), jnp.float32)
  h, z = _abstract_forward(model, x, train=True)
  assert h.shape == (4, model.feat_dim) and z.shape == (4, cfg.proj_dim)
  assert h.dtype == jnp.float32 and z.dtype == jnp.float32


def test_stems_resolution():
  x = images(batch=2, size=16)
  cifar = nnx.eval_shape(lambda: create_model(model_config(stem="cifar"), rngs=nnx.Rngs(0))).encoder
  imnet = nnx.eval_shape(
    lambda: create_model(model_config(stem="imagenet"), rngs=nnx.Rngs(0))
  ).encoder

  def stem(m, x):
    return m.stem(x, train=False)

  assert nnx.eval_shape(stem, cifar, x).shape == (2, 16, 16, 4)
  # 7x7 stride-2 conv then 3x3 stride-2 max-pool.
  assert nnx.eval_shape(stem, imnet, x).shape == (2, 4, 4, 4)
  assert cifar.stem_conv.kernel.shape == (3, 3, 3, 4)
  assert imnet.stem_conv.kernel.shape == (7, 7, 3, 4)


@pytest.mark.parametrize(
  "ctor,expected",
  [
    # torchvision totals minus the 1000-way fc: 11,689,512 - 513,000; 25,557,032 - 2,049,000.
    (resnet18, 11_176_512),
    (resnet50, 23_508_032),
  ],
)
def test_param_counts_match_torchvision(ctor, expected):
  enc = nnx.eval_shape(
    lambda: ctor(stem="imagenet", width=64, bn_momentum=BN_MOMENTUM, rngs=nnx.Rngs(0))
  )
  assert n_params(enc) == expected
  cifar = nnx.eval_shape(
    lambda: ctor(stem="cifar", width=64, bn_momentum=BN_MOMENTUM, rngs=nnx.Rngs(0))
  )
  assert n_params(cifar) == expected - (7 * 7 - 3 * 3) * 3 * 64


def _head_numpy(h, fc1, gamma, beta, fc2_w, fc2_b, mean=None, var=None):
  """float64 reference of Linear -> BN -> ReLU -> Linear; batch stats when mean is None."""
  a = h @ fc1
  batch_mean, batch_var = a.mean(0), a.var(0)  # biased variance, as BN normalises with
  mu, v = (batch_mean, batch_var) if mean is None else (mean, var)
  y = np.maximum((a - mu) / np.sqrt(v + BN_EPS) * gamma + beta, 0.0)
  return y @ fc2_w + fc2_b, batch_mean, batch_var


def test_projection_head_batchnorm_train_and_eval_match_numpy():
  head = ProjectionHead(6, 5, 3, bn_momentum=BN_MOMENTUM, rngs=nnx.Rngs(1))
  # Non-trivial BN affine params so a mix-up of scale/bias or stats would show.
  head.bn.scale[...] = jnp.linspace(0.5, 1.5, 5)
  head.bn.bias[...] = jnp.linspace(-0.3, 0.3, 5)
  rng = np.random.default_rng(0)
  h = rng.normal(size=(10, 6)) * 2.0 + 0.7
  p = {
    "fc1": np.asarray(head.fc1.kernel[...], np.float64),
    "gamma": np.asarray(head.bn.scale[...], np.float64),
    "beta": np.asarray(head.bn.bias[...], np.float64),
    "fc2_w": np.asarray(head.fc2.kernel[...], np.float64),
    "fc2_b": np.asarray(head.fc2.bias[...], np.float64),
  }

  z_train = head(jnp.asarray(h, jnp.float32), train=True)
  ref, mu, var = _head_numpy(h, **p)
  np.testing.assert_allclose(z_train, ref, rtol=1e-4, atol=1e-4)
  run_mean = (1 - BN_MOMENTUM) * mu  # from the initial 0
  run_var = BN_MOMENTUM * 1.0 + (1 - BN_MOMENTUM) * var  # from the initial 1
  np.testing.assert_allclose(head.bn.mean[...], run_mean, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(head.bn.var[...], run_var, rtol=1e-5, atol=1e-6)

  h2 = rng.normal(size=(4, 6))
  z_eval = head(jnp.asarray(h2, jnp.float32), train=False)
  ref_eval, _, _ = _head_numpy(h2, **p, mean=run_mean, var=run_var)
  np.testing.assert_allclose(z_eval, ref_eval, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(head.bn.mean[...], run_mean, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(head.bn.var[...], run_var, rtol=1e-5, atol=1e-6)


def test_encoder_batchnorm_modes():
  model = create_model(model_config(), rngs=nnx.Rngs(0))
  x = images(batch=8)
  before = batch_stats(model)
  # Same first half, different second half: same shape, so one compilation per mode.
  x_mates = x.at[4:].set(images(batch=4, seed=1) * 3.0 + 1.0)
  h_train, _ = forward(model, x, train=True)
  after_train = batch_stats(model)
  assert len(before) == len(after_train) > 0
  # Every running mean/var moved: each BN layer saw a batch in train mode.
  for b, a in zip(before, after_train, strict=True):
    assert not np.allclose(a, b)
  # Train mode normalises with the batch: a sample's features depend on its batch mates.
  h_train_mates, _ = forward(model, x_mates, train=True)
  assert not np.allclose(h_train_mates[:4], h_train[:4], atol=1e-4)

  stats = batch_stats(model)
  h_eval, _ = forward(model, x, train=False)
  h_eval_mates, _ = forward(model, x_mates, train=False)
  for b, a in zip(stats, batch_stats(model), strict=True):
    np.testing.assert_array_equal(a, b)
  # Eval mode uses running stats: per-sample, independent of the batch.
  np.testing.assert_allclose(h_eval_mates[:4], h_eval[:4], rtol=1e-5, atol=1e-5)


def _conv_and_dot_operand_dtypes(model, x) -> set:
  """dtypes of every conv/matmul operand in the traced forward pass (eval mode)."""
  graphdef, state = nnx.split(model)
  jaxpr = jax.make_jaxpr(lambda s, x: nnx.merge(graphdef, s)(x, train=False))(state, x)
  dtypes = set()

  def visit(jpr):
    for eqn in jpr.eqns:
      if eqn.primitive.name in ("conv_general_dilated", "dot_general"):
        dtypes.update(v.aval.dtype for v in eqn.invars)
      for p in eqn.params.values():  # nested jaxprs (pjit, custom_jvp, ...)
        for sub in p if isinstance(p, tuple | list) else (p,):
          if hasattr(sub, "eqns"):
            visit(sub)
          elif hasattr(sub, "jaxpr") and hasattr(sub.jaxpr, "eqns"):
            visit(sub.jaxpr)

  visit(jaxpr.jaxpr)
  return dtypes


def test_bfloat16_computes_in_bf16_with_float32_params_and_outputs():
  x = images(batch=8)
  m16 = create_model(model_config(dtype="bfloat16"), rngs=nnx.Rngs(0))
  m32 = create_model(model_config(dtype="float32"), rngs=nnx.Rngs(0))
  for leaf in jax.tree.leaves(nnx.state(m16, nnx.Param)):
    assert leaf.dtype == jnp.float32
  for leaf in jax.tree.leaves(nnx.state(m16, nnx.BatchStat)):
    assert leaf.dtype == jnp.float32
  assert _conv_and_dot_operand_dtypes(m16, x) == {jnp.dtype(jnp.bfloat16)}
  assert _conv_and_dot_operand_dtypes(m32, x) == {jnp.dtype(jnp.float32)}

  def stem_and_block(m, x):
    y = m.encoder.stem(x, train=False)
    return y, m.encoder.blocks[0](y, train=False)

  for act in nnx.eval_shape(stem_and_block, m16, x):
    assert act.dtype == jnp.bfloat16

  h16, z16 = forward(m16, x, train=True)
  h32, z32 = forward(m32, x, train=True)
  assert h16.dtype == jnp.float32 and z16.dtype == jnp.float32
  # Same float32 parameters, so bf16 must compute the same function up to rounding.
  for a16, a32 in ((h16, h32), (z16, z32)):
    rel = np.linalg.norm(np.asarray(a16) - np.asarray(a32)) / np.linalg.norm(np.asarray(a32))
    assert rel < 0.05, rel


def _assert_no_dead_gradients(grads, model):
  flat = jax.tree_util.tree_leaves_with_path(grads)
  assert len(flat) == len(jax.tree.leaves(nnx.state(model, nnx.Param))) > 0
  dead = [jax.tree_util.keystr(p) for p, g in flat if not np.any(np.asarray(g) != 0)]
  assert not dead, f"all-zero gradients: {dead}"


def test_gradients_reach_every_parameter_bottleneck_imagenet():
  # resnet50's block (a projecting and an identity bottleneck) and stem at a size that compiles
  # fast on CPU; the basic-block model and the head are covered by test_functional_grad_step.
  encoder = ResNet(
    block=Bottleneck,
    stage_sizes=(2,),
    stem="imagenet",
    width=4,
    bn_momentum=BN_MOMENTUM,
    rngs=nnx.Rngs(0),
  )
  x = images(batch=8, size=16)
  r = jax.random.normal(jax.random.key(5), (8, encoder.feat_dim))

  @nnx.jit
  def grad_fn(encoder, x):
    return nnx.grad(lambda enc: jnp.sum(enc(x, train=True) * r))(encoder)

  _assert_no_dead_gradients(grad_fn(encoder, x), encoder)


def test_unknown_name_lists_valid_names():
  with pytest.raises(ConfigError) as e:
    create_model(model_config("resnet1000"), rngs=nnx.Rngs(0))
  for name in MODELS:
    assert name in str(e.value)
  assert "resnet1000" in str(e.value)


@pytest.mark.parametrize(
  "override,key",
  [({"stem": "tiny"}, "model.stem"), ({"dtype": "float16"}, "model.dtype")],
)
def test_bad_config_values_raise_config_error(override, key):
  with pytest.raises(ConfigError, match=key):
    create_model(model_config(**override), rngs=nnx.Rngs(0))


def test_missing_key_raises_config_error():
  cfg = model_config()
  del cfg["proj_dim"]
  with pytest.raises(ConfigError, match="proj_dim"):
    create_model(cfg, rngs=nnx.Rngs(0))


def test_jitted_functional_round_trip_matches_eager():
  x = images(batch=8)
  model = create_model(model_config(), rngs=nnx.Rngs(0))
  graphdef, state = nnx.split(model)

  @functools.partial(jax.jit, static_argnums=2)
  def fwd(state, x, train):
    m = nnx.merge(graphdef, state)
    h, z = m(x, train=train)
    return h, z, nnx.state(m)

  h_j, z_j, _ = fwd(state, x, False)
  h_e, z_e = model(x, train=False)
  np.testing.assert_allclose(model.encode(x), h_e, rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(h_j, h_e, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(z_j, z_e, rtol=1e-5, atol=1e-5)

  h_j, z_j, new_state = fwd(state, x, True)
  h_e, z_e = model(x, train=True)  # mutates `model`, not `state`
  np.testing.assert_allclose(h_j, h_e, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(z_j, z_e, rtol=1e-5, atol=1e-5)
  jitted_stats = [np.asarray(v) for v in jax.tree.leaves(nnx.state(new_state, nnx.BatchStat))]
  for a, b in zip(jitted_stats, batch_stats(model), strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_functional_grad_step():
  """The trainer's pattern: jax.jit over (params, batch_stats), grads w.r.t. params, updated
  batch stats returned as aux.

  nnx.merge(..., copy=True) inside the differentiated function: without the copy, BatchNorm's
  update mutates Variables created outside the grad trace (TraceContextError in flax 0.12.8).
  """
  x = images(batch=8)
  model = create_model(model_config(), rngs=nnx.Rngs(0))
  graphdef, params, stats = nnx.split(model, nnx.Param, nnx.BatchStat)
  stats_before = batch_stats(model)
  r = jax.random.normal(jax.random.key(3), (8, model.feat_dim))

  def loss_fn(params, stats, x):
    m = nnx.merge(graphdef, params, stats, copy=True)
    h, z = m(x, train=True)
    return jnp.sum(h * r) + jnp.sum(z**2), nnx.state(m, nnx.BatchStat)

  @jax.jit
  def step(params, stats, x):
    (loss, new_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, stats, x)
    return loss, grads, new_stats

  loss, grads, new_stats = step(params, stats, x)
  # The step is functional: its inputs keep the old statistics.
  for a, b in zip(jax.tree.leaves(stats), stats_before, strict=True):
    np.testing.assert_array_equal(a, b)
  _assert_no_dead_gradients(grads, model)

  def stateful_loss(params):
    """Loss and updated stats through the stateful NNX model (jitted forward, no grad)."""
    m = nnx.clone(model)
    nnx.update(m, params)
    h, z = forward(m, x, train=True)
    return float(jnp.sum(h * r) + jnp.sum(z**2)), batch_stats(m)

  loss_ref, stats_ref = stateful_loss(params)
  np.testing.assert_allclose(loss, loss_ref, rtol=1e-5)
  for a, b in zip(jax.tree.leaves(new_stats), stats_ref, strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  # Central finite difference along the unit gradient direction d: the slope there equals |g|
  # only if g is the true gradient. BN over a small batch is strongly curved, hence a small eps.
  leaves, treedef = jax.tree.flatten(params)
  g_leaves = jax.tree.leaves(grads)
  g_norm = np.sqrt(sum(float(jnp.sum(g**2)) for g in g_leaves))
  eps = 1e-3

  def shifted(sign):
    return jax.tree.unflatten(
      treedef, [p + sign * eps * g / g_norm for p, g in zip(leaves, g_leaves, strict=True)]
    )

  fd = (stateful_loss(shifted(1))[0] - stateful_loss(shifted(-1))[0]) / (2 * eps)
  np.testing.assert_allclose(fd, g_norm, rtol=1e-2)


def test_linear_classifier_matches_numpy():
  clf = LinearClassifier(6, 4, rngs=nnx.Rngs(0))
  h = np.random.default_rng(0).normal(size=(5, 6))
  logits = clf(jnp.asarray(h, jnp.float32))
  ref = h @ np.asarray(clf.fc.kernel[...], np.float64) + np.asarray(clf.fc.bias[...], np.float64)
  assert logits.shape == (5, 4) and logits.dtype == jnp.float32
  np.testing.assert_allclose(logits, ref, rtol=1e-5, atol=1e-5)


def _numpy_conv(x: np.ndarray, k: np.ndarray, stride: int, pad: int) -> np.ndarray:
  """float64 direct convolution: x [n, h, w, c], k [kh, kw, c, o] -> [n, ho, wo, o]."""
  n, h, w, _ = x.shape
  kh, kw, _, o = k.shape
  xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  ho, wo = (h + 2 * pad - kh) // stride + 1, (w + 2 * pad - kw) // stride + 1
  out = np.zeros((n, ho, wo, o))
  for i, j, a, b in np.ndindex(ho, wo, kh, kw):
    out[:, i, j] += xp[:, i * stride + a, j * stride + b] @ k[a, b]
  return out


@pytest.mark.parametrize(
  "h, w, stride, dense",
  [(2, 2, 1, True), (4, 4, 2, True), (3, 3, 2, True), (2, 3, 1, False), (4, 4, 1, False)],
)
def test_small_map_conv_is_the_convolution_and_its_gradient(h, w, stride, dense):
  # Up to DENSE_MAX_OUT_PIXELS (4) output pixels the convolution is one matmul; beyond it, or on
  # a 2x3 output (6 pixels), lax's convolution. Either way the numbers are the convolution's.
  from syncon_jax.models.resnet import DENSE_MAX_OUT_PIXELS, small_map_conv

  rng = np.random.default_rng(h * 10 + w + stride)
  x, k = rng.normal(size=(3, h, w, 5)), rng.normal(size=(3, 3, 5, 7))
  dn = jax.lax.conv_dimension_numbers(x.shape, k.shape, ("NHWC", "HWIO", "NHWC"))
  args = dict(window_strides=(stride, stride), padding=((1, 1), (1, 1)), dimension_numbers=dn)
  with jax.enable_x64(True):
    ours = lambda x, k: small_map_conv(x, k, **args)
    lax_conv = lambda x, k: jax.lax.conv_general_dilated(x, k, **args)
    y = np.asarray(ours(jnp.asarray(x), jnp.asarray(k)))
    np.testing.assert_allclose(y, _numpy_conv(x, k, stride, 1), rtol=1e-12, atol=1e-12)
    assert (y.shape[1] * y.shape[2] <= DENSE_MAX_OUT_PIXELS) == dense
    jaxpr = str(jax.make_jaxpr(ours)(x, k))
    assert ("conv_general_dilated" not in jaxpr) == dense
    cot = rng.normal(size=y.shape)
    grads = [
      jax.grad(lambda x, k, f=f: jnp.sum(f(x, k) * cot), argnums=(0, 1))(x, k)
      for f in (ours, lax_conv)
    ]
  for g_ours, g_lax in zip(*grads, strict=True):
    np.testing.assert_allclose(g_ours, g_lax, rtol=1e-12, atol=1e-12)


def test_resnet_uses_the_small_map_matmul_and_matches_lax_convolutions(monkeypatch):
  # resnet_tiny at 8 px ends on small maps: its last stages go through the matmul. The same
  # network with every convolution by lax agrees to float32 rounding.
  x = images(size=8)

  def run(model):
    graphdef, state = nnx.split(model)
    f = lambda s, x: nnx.merge(graphdef, s)(x, train=True)
    return jax.jit(f)(state, x), str(jax.make_jaxpr(f)(state, x)).count("conv_general_dilated")

  (h, z), convs = run(create_model(model_config(), rngs=nnx.Rngs(0)))
  monkeypatch.setattr(resnet, "DENSE_MAX_OUT_PIXELS", 0)
  (h_plain, z_plain), convs_plain = run(create_model(model_config(), rngs=nnx.Rngs(0)))
  assert 0 < convs < convs_plain
  np.testing.assert_allclose(h, h_plain, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(z, z_plain, rtol=1e-5, atol=1e-5)


def _fused_reads(hlo_text: str) -> dict[str, list[str]]:
  """{output shape: the opcodes each operand of a fusion of that shape is defined by} in a
  compiled program's HLO text."""
  op_of = dict(re.findall(r"^\s*(?:ROOT )?%?([\w.\-]+) = \S+ ([\w\-]+)\(", hlo_text, re.M))
  reads = {}
  for shape, operands in re.findall(r"= (\w+\[[\d,]*\])\S* fusion\(([^)]*)\)", hlo_text):
    names = [o.split("*/")[-1].strip().lstrip("%") for o in operands.split(",")]
    reads.setdefault(shape, []).extend(op_of.get(n, "?") for n in names)
  return reads


def test_fusion_fence_keeps_the_forward_chain_out_of_the_weight_gradient_transposes(monkeypatch):
  # conv -> BatchNorm -> ReLU -> conv. For the second convolution's weight gradient XLA:CPU
  # copies its input into [c, h, w, n] order (f32[3,5,7,6] here). Unfenced, that copy is fused
  # with the BatchNorm and ReLU, recomputed from the first convolution's output in transposed
  # order (the 12x slower copies of issue 18); behind the fence it reads one computed array.
  # If a jaxlib stops duplicating the chain, the first assertion fails: drop the fence.
  if jax.default_backend() != "cpu":
    pytest.skip("the fence is a CPU measure")
  dn = ("NHWC", "HWIO", "NHWC")
  args = dict(window_strides=(1, 1), padding=((1, 1), (1, 1)))

  def loss(z, k1, k2, conv):
    h = conv(z, k1, **args, dimension_numbers=jax.lax.conv_dimension_numbers(z.shape, k1.shape, dn))
    h = jax.nn.relu((h - h.mean((0, 1, 2))) * jax.lax.rsqrt(h.var((0, 1, 2)) + 1e-5))
    y = conv(h, k2, **args, dimension_numbers=jax.lax.conv_dimension_numbers(h.shape, k2.shape, dn))
    return jnp.mean(y**2)

  rng = np.random.default_rng(0)
  z, k1, k2 = (
    jnp.asarray(rng.normal(size=s), jnp.float32) for s in ((6, 5, 7, 2), (3, 3, 2, 3), (3, 3, 3, 4))
  )
  grads = {}
  for name, conv in (("plain", jax.lax.conv_general_dilated), ("fenced", resnet.fenced_conv)):
    g = lambda z, k1, k2, conv=conv: jax.grad(loss, argnums=(0, 1, 2))(z, k1, k2, conv)
    compiled = jax.jit(g).lower(z, k1, k2).compile()
    grads[name] = compiled(z, k1, k2)
    transposed = _fused_reads(compiled.as_text())["f32[3,5,7,6]"]
    assert ("convolution" in transposed) == (name == "plain"), (name, transposed)
  # The fence changes no number: a division by exactly 1, forward and backward.
  for a, b in zip(grads["plain"], grads["fenced"], strict=True):
    np.testing.assert_array_equal(a, b)
  # Off with the project's other CPU defaults: then it is the identity, no division traced.
  x = jnp.ones((2, 3))
  assert "div" in str(jax.make_jaxpr(resnet.fusion_fence)(x, k1))
  monkeypatch.setenv(platform.DEFAULTS_ENV, "0")
  assert "div" not in str(jax.make_jaxpr(lambda x, k: resnet.fusion_fence(x, k))(x, k1))
