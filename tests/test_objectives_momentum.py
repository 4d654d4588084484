"""MoCo, BYOL and BYOL-NN: target networks, queues and neighbour positives in the one trainer."""

import json
import types

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import stopped_after

from configs import cifar10, digits
from syncon_jax import data, objectives, train
from syncon_jax.data import neighbors, sampler
from syncon_jax.errors import ConfigError, DataError
from syncon_jax.objectives import byol, momentum
from syncon_jax.tools import nearest_neighbors


def _config(objective: str, synthetic_dir: str, **objective_overrides):
  config = digits.get_config(f"objective={objective},runlocal")
  config.data.synthetic_dir = synthetic_dir
  config.log_every_steps = 1
  block = config.objective[objective]
  for key, value in objective_overrides.items():
    block[key] = value
  return config


def _state_leaves(state):
  return [np.asarray(x) for x in jax.tree.leaves(state)]


# ----------------------------------------------------------------------------------------------
# Pure invariants.


def test_tau_schedule_endpoints():
  assert float(momentum.cosine_tau(0, 0.996, 100)) == pytest.approx(0.996)
  assert float(momentum.cosine_tau(50, 0.996, 100)) == pytest.approx(0.998)
  assert float(momentum.cosine_tau(100, 0.996, 100)) == 1.0
  assert float(momentum.cosine_tau(150, 0.996, 100)) == 1.0  # past the end it stays at 1


def test_queue_holds_the_last_k_keys_in_order():
  size, dim, n = 7, 2, 3  # 7 is no multiple of 3: writes wrap around mid-batch
  state = momentum.init_queue(size, dim, seed=0, random=False)
  assert int(state["count"]) == 0
  written = []
  for step in range(5):
    keys = jnp.arange(n * dim, dtype=jnp.float32).reshape(n, dim) + 100 * step
    written.extend(np.asarray(keys))
    state = momentum.enqueue(state, keys)
    held = min(len(written), size)
    assert int(state["count"]) == held
    oldest_first = np.roll(np.asarray(state["queue"]), -int(state["ptr"]), axis=0)
    if len(written) >= size:
      np.testing.assert_array_equal(oldest_first, np.stack(written[-size:]))
    else:
      np.testing.assert_array_equal(np.asarray(state["queue"])[:held], np.stack(written))
  with pytest.raises(ConfigError, match="queue_size"):
    momentum.enqueue(state, jnp.zeros((size + 1, dim)))


def test_ema_with_m_1_never_changes_the_target():
  rng = np.random.default_rng(0)
  part = lambda: {"w": jnp.asarray(rng.normal(size=(3, 4)), jnp.float32)}
  target = {"encoder": part(), "head": part()}
  online = {"encoder": part(), "head": part(), "predictor": part()}
  same = momentum.ema_update(target, online, 1.0)
  for a, b in zip(jax.tree.leaves(same), jax.tree.leaves(target), strict=True):
    np.testing.assert_array_equal(a, b)
  half = momentum.ema_update(target, online, 0.5)
  np.testing.assert_allclose(
    half["head"]["w"], (target["head"]["w"] + online["head"]["w"]) / 2, rtol=1e-6
  )
  assert "predictor" not in half  # BYOL's target has no predictor


def test_configs_have_the_variants():
  for name in ("moco", "byol", "byol_nn"):
    for config in (digits.get_config(f"objective={name}"), cifar10.get_config(f"objective={name}")):
      assert config.objective.name == name and name in objectives.OBJECTIVES
      assert (config.model.predictor_hidden_dim > 0) == name.startswith("byol")
  config = digits.get_config("objective=byol,runlocal")
  assert config.objective.byol.total_steps == config.total_steps == 12
  config.total_steps = 40  # the tau schedule follows a changed run length
  assert config.objective.byol.total_steps == 40
  # BYOL's predictor is as wide as the projector's hidden layer, and follows it.
  assert config.model.predictor_hidden_dim == config.model.proj_hidden_dim == 16
  config.model.proj_hidden_dim = 32
  assert config.model.predictor_hidden_dim == 32
  assert objectives.settings(cifar10.get_config("objective=moco").objective).queue_size == 4096
  assert objectives.settings(digits.get_config("objective=moco").objective).temperature == 0.2


def test_byol_nn_config_errors():
  config = objectives.settings(digits.get_config("objective=byol_nn,runlocal").objective)
  obj = objectives.get_objective("byol_nn")
  with pytest.raises(ConfigError, match="neighbors_file"):
    objectives.init(obj, 10, 8, None, _with(config, "table"))
  with pytest.raises(ConfigError, match="nn_approach"):
    objectives.init(obj, 10, 8, None, _with(config, "queue", nn_approach="mean"))


def _with(config, source, **overrides):
  config = config.copy_and_resolve_references()
  config.neighbor_source = source
  for key, value in overrides.items():
    config[key] = value
  return config


# ----------------------------------------------------------------------------------------------
# The neighbour table on the host.


def _write_neighbors(path, config, k=3):
  """Neighbours by raw pixels (a stand-in for a latent model), in tools/nearest_neighbors' format."""
  train_split, _, _ = data.load_real(config.data)
  flat = np.asarray(train_split.images, np.float32).reshape(len(train_split.labels), -1)
  idx, dist = nearest_neighbors.knn(flat, k, "cosine", block_size=512)
  ids = np.arange(len(flat), dtype=np.int64)
  # Stored in a shuffled row order: the loader must key rows by `ids`, not by position.
  order = np.random.default_rng(0).permutation(len(ids))
  np.savez(path, ids=ids[order], neighbors=idx[order], distances=dist[order], metric="cosine")
  return idx


def test_byol_nn_host_inputs_carry_neighbor_images(tmp_path):
  rng = np.random.default_rng(0)
  n, k = 10, 3
  images = rng.integers(0, 256, (n, 2, 2, 3), dtype=np.uint8)
  labels = np.arange(n) % 2
  nb_ids = np.stack([(np.arange(n) + j + 1) % n for j in range(k)], axis=1)
  order = rng.permutation(n)
  path = str(tmp_path / "nn.npz")
  np.savez(path, ids=np.arange(n)[order], neighbors=nb_ids[order], distances=np.zeros((n, k)))
  table = neighbors.load_neighbor_table(path, n, 2)
  np.testing.assert_array_equal(table, nb_ids[:, :2])
  s = sampler.BatchSampler(
    labels, np.zeros((0,), np.int32), num_classes=2, batch_size=4, synthetic_per_real=0, seed=0
  )
  config = digits.get_config("objective=byol_nn,runlocal")
  config.batch_size, config.seed = 4, 0
  config.objective.byol_nn.neighbor_source = "table"
  config.objective.byol_nn.neighbors_file = path
  config.objective.byol_nn.neighbor_k = 2
  add = byol.host_inputs(config, types.SimpleNamespace(images=images, labels=labels))
  shards = [s.host_batch(5, images, images[:0], process_index=p, process_count=2) for p in range(2)]
  for sh in shards:
    sh["neighbor_id"] = neighbors.draw(
      table, sh["real_id"], sh["index"], step=5, batch_size=4, seed=0
    )
    sh["neighbor_images"] = add(5, sh)["byol_nn"]["neighbor_images"]
  batch = {key: np.concatenate([sh[key] for sh in shards]) for key in shards[0]}
  np.testing.assert_array_equal(batch["real_id"], s.global_indices(5)[0])
  np.testing.assert_array_equal(batch["real_images"], images[batch["real_id"]])
  assert all(nb in table[r] for r, nb in zip(batch["real_id"], batch["neighbor_id"], strict=True))
  np.testing.assert_array_equal(batch["neighbor_images"], images[batch["neighbor_id"]])
  # The draw is one global draw: one process drawing the whole batch draws the same neighbours.
  whole = s.host_batch(5, images, images[:0], process_index=0, process_count=1)
  np.testing.assert_array_equal(
    add(5, whole)["byol_nn"]["neighbor_images"], batch["neighbor_images"]
  )
  with pytest.raises(DataError, match="real train split has 11"):
    neighbors.load_neighbor_table(path, n + 1, 1)
  with pytest.raises(ConfigError, match="neighbor_k"):
    neighbors.load_neighbor_table(path, n, k + 1)


# ----------------------------------------------------------------------------------------------
# Through the trainer.


def test_target_gets_no_gradient_and_m_1_keeps_it(synthetic_dir, monkeypatch):
  """Two real train steps of MoCo with m = 1: the target's gradient is 0 and it stays the
  initial model, while the online network moves and the queue takes the keys."""
  config = _config("moco", synthetic_dir, momentum=1.0)
  moco = objectives.get_objective("moco")

  def loss(outputs, batch, state, ctx):
    # The target is a buffer, never differentiated by the trainer; its gradient through the
    # loss must be zero too.
    def of_target(target):
      buffers = {**state.buffers, "target": target}
      return moco.loss(outputs, batch, state._replace(buffers=buffers), ctx).value

    out = moco.loss(outputs, batch, state, ctx)
    grad = jax.grad(of_target)(state.buffers["target"])
    return out._replace(metrics={**out.metrics, "target_grad_norm": optax.tree.norm(grad)})

  monkeypatch.setitem(objectives.OBJECTIVES, "moco", moco._replace(loss=loss))
  real, _, _ = train.load_data(config, False)
  s = sampler.BatchSampler(
    real.labels,
    np.zeros((0,), np.int32),
    num_classes=10,
    batch_size=16,
    synthetic_per_real=0,
    seed=0,
  )
  tx, _ = train.make_optimizer(config)
  graphdef, state = train.create_train_state(config, 10, tx)
  initial = _state_leaves({p: state.params[p] for p in momentum.TARGET_PARTS})
  initial_online = _state_leaves(state.params)
  step = jax.jit(train.make_train_step(graphdef, tx, config))
  for i in range(2):
    host = s.host_batch(i, real.images, real.images[:0], process_index=0, process_count=1)
    state, metrics = step(state, {k: jnp.asarray(v) for k, v in host.items()})
    assert float(metrics["target_grad_norm"]) == 0.0
  for a, b in zip(_state_leaves(state.objective["target"]), initial, strict=True):
    np.testing.assert_array_equal(a, b)
  assert any(
    not np.array_equal(a, b)
    for a, b in zip(_state_leaves(state.params), initial_online, strict=True)
  )
  # Two steps of both views' keys of 16 images fill the 64-row queue once.
  assert int(state.objective["count"]) == 64 and int(state.objective["ptr"]) == 0


def _train_and_resume(config, tmp_path):
  """-> (metrics rows of an uninterrupted run, its state, the state of the run resumed from its
  step-6 checkpoint)."""
  straight = train.train_and_evaluate(config, str(tmp_path / "straight"))
  rows = [json.loads(line) for line in open(tmp_path / "straight" / "metrics.jsonl")]
  resumed = train.train_and_evaluate(
    config, stopped_after(str(tmp_path / "straight"), str(tmp_path / "resumed"), 6)
  )
  return rows, straight, resumed


def _mean_loss(rows, steps):
  return np.mean([row["loss"] for row in rows if row["step"] in steps])


@pytest.mark.parametrize(
  "objective, overrides, extra_state",
  [
    ("moco", {}, ("target", "queue", "ptr", "count")),
    ("byol", {}, ("target",)),
    ("byol_nn", {"nn_approach": "probabilistic"}, ("target", "queue", "ptr", "count")),
  ],
)
def test_trains_and_resumes_exactly(objective, overrides, extra_state, synthetic_dir, tmp_path):
  """12 steps lower the loss; 6 steps + resume to 12 equals 12 uninterrupted steps, target
  network, queue and predictor included.

  The loss is compared over steps 3-5 and 10-12: MoCo's first two steps score against the random
  initial queue (easy negatives), and single steps of a 16-image batch are noisy.
  """
  config = _config(objective, synthetic_dir, **overrides)
  rows, straight, resumed = _train_and_resume(config, tmp_path)
  assert [row["step"] for row in rows] == list(range(1, 13))
  assert _mean_loss(rows, (10, 11, 12)) < _mean_loss(rows, (3, 4, 5)), rows
  assert set(extra_state) <= set(straight.objective)
  if objective.startswith("byol"):
    assert "predictor" in straight.params and rows[-1]["tau"] > config.objective[objective].tau_base
  assert int(resumed.step) == 12
  for a, b in zip(_state_leaves(straight), _state_leaves(resumed), strict=True):
    np.testing.assert_array_equal(a, b)
  # The target follows the online network but is not it.
  online = _state_leaves({p: straight.params[p] for p in momentum.TARGET_PARTS})
  target = _state_leaves(straight.objective["target"])
  assert any(not np.array_equal(a, b) for a, b in zip(online, target, strict=True))


def test_byol_nn_with_a_neighbor_table(synthetic_dir, tmp_path):
  """Neighbour images from a neighbours file (weighted targets): trains and resumes exactly."""
  config = _config("byol_nn", synthetic_dir, nn_approach="weighted", neighbor_source="table")
  config.objective.byol_nn.neighbors_file = str(tmp_path / "neighbors.npz")
  config.objective.byol_nn.neighbor_k = 2
  _write_neighbors(config.objective.byol_nn.neighbors_file, config)
  rows, straight, resumed = _train_and_resume(config, tmp_path)
  assert _mean_loss(rows, (10, 11, 12)) < _mean_loss(rows, (3, 4, 5)), rows
  assert "queue" not in straight.objective
  assert all(-1.0 <= row["neighbor_cos"] <= 1.0 for row in rows)
  for a, b in zip(_state_leaves(straight), _state_leaves(resumed), strict=True):
    np.testing.assert_array_equal(a, b)
