"""ViT encoders (syncon_jax/models/vit.py): published parameter counts, shapes, the variant,
pooling and positional-embedding keys, bf16, and a tiny ViT training through the trainer."""

import json

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from conftest import run_cli
from flax import nnx

from configs import digits
from syncon_jax.errors import ConfigError
from syncon_jax.models import create_model, vit


@pytest.fixture(autouse=True, scope="module")
def _fast_cpu_prng():
  # As in test_models: the legacy threefry compiles initialisers far faster on CPU.
  with jax.threefry_partitionable(False):
    yield


def n_params(module) -> int:
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nnx.state(module, nnx.Param)))


def model_config(**overrides) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict(
    dict(
      name="vit",
      stem="cifar",
      width=4,
      proj_hidden_dim=16,
      proj_dim=8,
      dtype="float32",
      bn_momentum=0.9,
      variant="tiny/4",
      pool="gap",
      posemb="learn",
      image_size=16,
    )
  )
  c.update(overrides)
  return c


# timm's published totals of vit_{tiny,small,base}_patch16_224 (the "5.7M / 22M / 86M" of
# Touvron et al. 2021, DeiT Table 1), which include a 1000-class head and a positional-embedding
# row for the class token (197 rows; big_vision adds posemb before prepending the token: 196).
TIMM_TOTAL = {"Ti": 5_717_416, "S": 22_050_664, "B": 86_567_656}


@pytest.mark.parametrize("size", ["Ti", "S", "B"])
def test_param_counts_match_the_published_vits(size):
  enc = nnx.eval_shape(
    lambda: vit.ViT(variant=f"{size}/16", image_size=224, pool="cls", rngs=nnx.Rngs(0))
  )
  width = vit.SIZES[size].width
  head = width * 1000 + 1000
  assert n_params(enc) == TIMM_TOTAL[size] - head - width
  assert enc.feat_dim == width
  # Mean pooling has no class token; fixed sine-cosine embeddings are no parameters.
  gap = nnx.eval_shape(lambda: vit.ViT(variant=f"{size}/16", image_size=224, rngs=nnx.Rngs(0)))
  assert n_params(gap) == n_params(enc) - width
  sincos = nnx.eval_shape(
    lambda: vit.ViT(variant=f"{size}/16", image_size=224, posemb="sincos2d", rngs=nnx.Rngs(0))
  )
  assert n_params(sincos) == n_params(gap) - 196 * width


def test_patch_size_sets_the_token_grid():
  for variant, image_size, grid in [("tiny/4", 16, 4), ("tiny/8", 16, 2), ("S/16", 224, 14)]:
    enc = nnx.eval_shape(
      lambda v=variant, s=image_size: vit.ViT(variant=v, image_size=s, rngs=nnx.Rngs(0))
    )
    assert enc.grid == grid
    assert enc.pos_embedding.shape == (1, grid * grid, enc.feat_dim)
    patch = int(variant.split("/")[1])
    assert enc.embedding.kernel.shape == (patch, patch, 3, enc.feat_dim)


@pytest.mark.parametrize("pool", ["gap", "cls"])
def test_pooling_shapes_and_what_it_reads(pool):
  """'cls' reads the class token only: the output moves with the token and, through attention,
  with the patches; 'gap' is the mean of the normed tokens (checked against the blocks run by
  hand)."""
  model = create_model(model_config(pool=pool), rngs=nnx.Rngs(0))
  x = jax.random.normal(jax.random.key(1), (3, 16, 16, 3))
  h, z = model(x, train=True)
  assert h.shape == (3, 32) and z.shape == (3, 8)
  assert h.dtype == jnp.float32 and z.dtype == jnp.float32
  enc = model.encoder
  tokens = enc.embedding(x).reshape(3, 16, 32) + enc.pos_embedding[...]
  if pool == "cls":
    tokens = jnp.concatenate([jnp.broadcast_to(enc.cls[...], (3, 1, 32)), tokens], axis=1)
  for block in enc.blocks:
    tokens = block(tokens)
  normed = enc.encoder_norm(tokens)
  expected = normed[:, 0] if pool == "cls" else normed.mean(axis=1)
  np.testing.assert_allclose(h, expected, rtol=1e-5, atol=1e-5)


def test_block_is_pre_ln():
  """x + attn(LN1(x)), then + mlp(LN2(.)): recomputed from the block's own sublayers."""
  block = vit.EncoderBlock(vit.SIZES["tiny"], dtype=jnp.float32, rngs=nnx.Rngs(0))
  x = jax.random.normal(jax.random.key(2), (2, 5, 32))
  y = block.norm1(x)
  mid = x + block.attn(y, y, y)
  np.testing.assert_allclose(block(x), mid + block.mlp(block.norm2(mid)), rtol=1e-5, atol=1e-5)
  # Two token orders give the same tokens, permuted: no position enters inside a block.
  perm = jnp.array([3, 1, 4, 0, 2])
  np.testing.assert_allclose(block(x[:, perm]), block(x)[:, perm], rtol=1e-5, atol=1e-5)


def test_sincos_posemb_matches_its_formula():
  pe = vit.posemb_sincos_2d(2, 3, 8)
  assert pe.shape == (1, 6, 8)
  omega = 1.0 / 10_000.0 ** (np.arange(2) / 1.0)
  # Token 4 is row y=1, column x=1.
  y, x = 1, 1
  want = np.concatenate(
    [np.sin(x * omega), np.cos(x * omega), np.sin(y * omega), np.cos(y * omega)]
  )
  np.testing.assert_allclose(pe[0, 4], want, rtol=1e-6)


def test_bfloat16_computes_in_bf16_with_float32_params_and_outputs():
  model = create_model(model_config(dtype="bfloat16"), rngs=nnx.Rngs(0))
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(nnx.state(model, nnx.Param)))
  x = jax.random.normal(jax.random.key(0), (2, 16, 16, 3))
  assert model.encoder.embedding(x).dtype == jnp.bfloat16
  h, z = model(x, train=True)
  assert h.dtype == jnp.float32 and z.dtype == jnp.float32
  ref = create_model(model_config(), rngs=nnx.Rngs(0))(x, train=True)[0]
  np.testing.assert_allclose(h, ref, rtol=0.1, atol=0.1)


@pytest.mark.parametrize(
  "override,key",
  [
    ({"variant": "XL/16"}, "model.variant"),
    ({"variant": "S"}, "model.variant"),
    ({"pool": "map"}, "model.pool"),
    ({"posemb": "rope"}, "model.posemb"),
    ({"image_size": 18}, "model.image_size"),
  ],
)
def test_bad_vit_config_is_a_config_error(override, key):
  with pytest.raises(ConfigError, match=key):
    create_model(model_config(**override), rngs=nnx.Rngs(0))


def test_configs_carry_the_vit_keys():
  c = digits.get_config("runlocal")
  assert (c.model.variant, c.model.pool, c.model.posemb) == ("tiny/4", "gap", "learn")
  c.data.image_size = 32  # model.image_size follows the data
  assert c.model.image_size == 32


def test_tiny_vit_trains_two_steps_with_syncon(synthetic_dir, tmp_path):
  """What a user types: the digits runlocal config with --config.model.name=vit."""
  workdir = tmp_path / "vit"
  r = run_cli(
    "syncon_jax.main",
    "--config=configs/digits.py:runlocal",
    f"--workdir={workdir}",
    f"--config.data.synthetic_dir={synthetic_dir}",
    "--config.model.name=vit",
    "--config.model.pool=cls",
    "--config.total_steps=2",
    "--config.log_every_steps=1",
    "--config.checkpoint_every_steps=2",
  )
  assert r.returncode == 0, r.stderr[-3000:]
  rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
  assert [row["step"] for row in rows] == [1, 2]
  assert all(np.isfinite(row["loss"]) and row["grad_norm"] > 0 for row in rows)
  config = json.loads((workdir / "config.json").read_text())
  assert config["model"]["name"] == "vit" and config["model"]["image_size"] == 16
  # The probe restores the ViT encoder (no BatchNorm: an empty state item) from its checkpoint.
  r = run_cli(
    "syncon_jax.linear_eval",
    "--config=configs/digits.py:runlocal",
    f"--workdir={workdir}",
    "--config.model.name=vit",
    "--config.model.pool=cls",
    "--config.eval.protocols=('linear',)",  # the others' own tests run them on the ResNet
  )
  assert r.returncode == 0, r.stderr[-3000:]
  assert 0.0 <= json.loads((workdir / "linear_eval.json").read_text())["top1"] <= 1.0
  # Another variant in the same workdir is refused (its checkpoints would not restore).
  r = run_cli(
    "syncon_jax.main",
    "--config=configs/digits.py:runlocal",
    f"--workdir={workdir}",
    f"--config.data.synthetic_dir={synthetic_dir}",
    "--config.model.name=vit",
    "--config.model.variant=tiny/8",
  )
  assert r.returncode == 2 and "model.variant" in r.stderr, r.stderr[-2000:]
