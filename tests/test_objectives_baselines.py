"""The baseline objectives simclr, stablerep, triplet, supervised(_syn): their losses against numpy,
a method invariant each, a few steps of the real trainer, and the supervised classifier's state."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import StepInputs, stopped_after
from flax import nnx

from configs import cifar10, digits
from syncon_jax import losses, objectives, train
from syncon_jax.errors import ConfigError
from syncon_jax.objectives import align_uniform

B, S, V, D, F, C = 6, 2, 2, 5, 7, 3


def _inputs(seed=0, prompts=None, valid=None, labels=None):
  """Tiny StepInputs: b=6 real images, S=2 synthetic each, 2 views, dim 5, feat_dim 7, 3 classes."""
  rng = np.random.default_rng(seed)
  z = rng.normal(size=(B, 1 + S, V, D))
  z /= np.linalg.norm(z, axis=-1, keepdims=True)
  if prompts is None:
    prompts = np.array([[0, 1], [0, -1], [2, 1], [3, -1], [2, 4], [5, 0]])
  if valid is None:
    valid = np.ones((B, S), bool)
    valid[3, 1] = False
  if labels is None:
    labels = np.array([0, 1, 0, 2, 1, 0])
  return StepInputs(
    None,
    jnp.asarray(z, jnp.float32),
    labels,
    valid,
    features=jnp.asarray(rng.normal(size=(B, 1 + S, V, F)), jnp.float32),
    synthetic_prompt=prompts,
  )


def _cfg(name):
  return objectives.settings(digits.get_config(f"objective={name},runlocal").objective)


def _init(name, cfg, num_classes=C, feat_dim=F):
  return objectives.init(objectives.get_objective(name), num_classes, feat_dim, None, cfg)


def _loss(name, inputs, cfg=None, state=None):
  """-> (loss, metrics) of objective `name` on the inputs."""
  obj = objectives.get_objective(name)
  cfg = _cfg(name) if cfg is None else cfg
  state = _init(name, cfg) if state is None else state
  out = inputs.replace(config=cfg).loss(obj, state)
  return out.value, out.metrics


def _lse(x):
  x = np.asarray(x, np.float64)
  return x.max() + np.log(np.sum(np.exp(x - x.max())))


def _np_multipos(rows, keys, temperature):
  """Per row: -mean over the other rows of its key of log softmax over all other rows."""
  x = np.asarray(rows, np.float64)
  x /= np.linalg.norm(x, axis=1, keepdims=True)
  n = len(x)
  out = []
  for i in range(n):
    others = [j for j in range(n) if j != i]
    lse = _lse([x[i] @ x[j] / temperature for j in others])
    pos = [j for j in others if keys[j] == keys[i]]
    out.append(-np.mean([x[i] @ x[j] / temperature - lse for j in pos]) if pos else 0.0)
  return float(np.mean(out)) if out else 0.0


# ----------------------------------------------------------------------------------------------
# simclr


def test_simclr_is_ntxent_on_the_real_views():
  inp = _inputs()
  loss, _ = _loss("simclr", inp)
  z = np.asarray(inp.z[:, 0], np.float64)  # [b, 2, d]
  rows = np.concatenate([z[:, 0], z[:, 1]])  # view-major: row v * b + i
  n = len(rows)
  per_anchor = []
  for a in range(n):
    logits = [rows[a] @ rows[j] / 0.1 for j in range(n) if j != a]
    per_anchor.append(_lse(logits) - rows[a] @ rows[(a + B) % n] / 0.1)
  assert float(loss) == pytest.approx(np.mean(per_anchor), rel=1e-5)
  # supcon_loss without labels (base_temperature = temperature) gives the same numbers.
  supcon = losses.supcon_loss(inp.z[:, 0], temperature=0.1, base_temperature=0.1)
  np.testing.assert_allclose(loss, supcon, rtol=1e-5)


def test_simclr_ignores_labels_and_synthetic_slots():
  inp = _inputs()
  loss, _ = _loss("simclr", inp)
  other = inp._replace(
    labels=inp.labels[::-1],
    z=inp.z.at[:, 1:].set(_inputs(seed=1).z[:, 1:]),
    synthetic_valid=~inp.synthetic_valid,
  )
  assert float(_loss("simclr", other)[0]) == float(loss)
  assert not objectives.get_objective("simclr").uses_synthetic(_cfg("simclr"))


def test_simclr_needs_two_views():
  cfg = _cfg("simclr")
  cfg.n_views = 4
  with pytest.raises(ConfigError, match="n_views=2"):
    _init("simclr", cfg)


# ----------------------------------------------------------------------------------------------
# stablerep


def _np_stablerep(inp, temperature=0.1):
  """Every view of every valid synthetic slot; key = prompt, or the slot itself for prompt -1."""
  z, prompts, valid = (np.asarray(a) for a in (inp.z, inp.synthetic_prompt, inp.synthetic_valid))
  rows, keys = [], []
  for i in range(B):
    for j in range(S):
      if not valid[i, j]:
        continue
      key = ("prompt", prompts[i, j]) if prompts[i, j] >= 0 else ("own", i, j)
      for v in range(V):
        rows.append(z[i, 1 + j, v])
        keys.append(key)
  return _np_multipos(np.array(rows), keys, temperature)


def test_stablerep_is_multipos_over_prompt_groups():
  inp = _inputs()
  loss, aux = _loss("stablerep", inp)
  assert float(loss) == pytest.approx(_np_stablerep(inp), rel=1e-5)
  # Valid slots: prompts 0 1 0 -1 2 1 3 2 4 5 0 (slot [3, 1] is a placeholder): 0 has 3 images,
  # 1 and 2 have 2 each, the rest 1 -> (3 * 2 + 2 * 1 + 2 * 1) / 11 others per image.
  assert float(aux["prompt_positives"]) == pytest.approx(10 / 11)
  assert objectives.get_objective("stablerep").uses_synthetic(_cfg("stablerep"))


def test_stablerep_blockwise_config_gives_the_same_loss():
  inp = _inputs()
  cfg = objectives.settings(cifar10.get_config("objective=stablerep,runlocal").objective)
  assert cfg.block_size == 1024
  np.testing.assert_allclose(_loss("stablerep", inp, cfg)[0], _loss("stablerep", inp)[0], rtol=1e-5)


def test_stablerep_images_of_one_prompt_are_positives():
  inp = _inputs()
  loss = float(_loss("stablerep", inp)[0])
  # Slot [2, 0] (prompt 2) joins prompt 5's group: the loss changes, and follows numpy.
  moved = inp._replace(synthetic_prompt=inp.synthetic_prompt.at[2, 0].set(5))
  moved_loss = float(_loss("stablerep", moved)[0])
  assert moved_loss != pytest.approx(loss, rel=1e-4)
  assert moved_loss == pytest.approx(_np_stablerep(moved), rel=1e-5)
  # Slots [2, 0] and [4, 0] (prompt 2) with the same embedding: cheap as positives, costly once
  # [2, 0] belongs to another prompt and [4, 0] is its most similar negative.
  same = inp._replace(z=inp.z.at[2, 1].set(inp.z[4, 1]))
  grouped = float(_loss("stablerep", same)[0])
  apart = float(_loss("stablerep", same._replace(synthetic_prompt=moved.synthetic_prompt))[0])
  assert grouped < apart


def test_stablerep_prompt_minus_one_and_placeholders():
  inp = _inputs()
  loss = float(_loss("stablerep", inp)[0])
  # Two images without a prompt are not one group: as if each had a prompt of its own.
  fresh = inp._replace(synthetic_prompt=inp.synthetic_prompt.at[1, 1].set(98).at[3, 0].set(99))
  assert float(_loss("stablerep", fresh)[0]) == pytest.approx(loss, rel=1e-6)
  # A placeholder slot's embedding and prompt do not matter; the real slot is never read.
  other = inp._replace(
    z=inp.z.at[3, 2].set(inp.z[0, 1]).at[:, 0].set(inp.z[:, 1]),
    synthetic_prompt=inp.synthetic_prompt.at[3, 1].set(0),
    labels=inp.labels[::-1],
  )
  assert float(_loss("stablerep", other)[0]) == pytest.approx(loss, rel=1e-6)
  # No valid slot at all: 0, not NaN.
  none = inp._replace(synthetic_valid=jnp.zeros((B, S), bool))
  assert float(_loss("stablerep", none)[0]) == 0.0


# ----------------------------------------------------------------------------------------------
# triplet


def _np_dist(a, b, metric):
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  if metric == "euclidean":
    return float(np.linalg.norm(a - b))
  if metric == "squared_euclidean":
    return float(np.sum((a - b) ** 2))
  return float(1 - a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def _np_triplet(inp, mining, margin, metric, average="positive"):
  z, labels = np.asarray(inp.z[:, 0], np.float64), np.asarray(inp.labels)
  if mining == "plain":
    hinges = []
    for i in range(B):
      later = [(i + o) % B for o in range(1, B)]
      pos = next((j for j in later if labels[j] == labels[i]), i)
      neg = next((j for j in later if labels[j] != labels[i]), None)
      if neg is not None:
        d = _np_dist(z[i, 0], z[pos, 1], metric) - _np_dist(z[i, 0], z[neg, 0], metric)
        hinges.append(max(0.0, d + margin))
    return float(np.mean(hinges))
  rows = z.reshape(B * V, D)
  row_labels = np.repeat(labels, V)
  n = len(rows)
  dist = np.array([[_np_dist(rows[a], rows[b], metric) for b in range(n)] for a in range(n)])
  if mining == "batch_hard":
    per = []
    for a in range(n):
      pos = [p for p in range(n) if p != a and row_labels[p] == row_labels[a]]
      neg = [q for q in range(n) if row_labels[q] != row_labels[a]]
      if pos and neg:
        per.append(max(0.0, max(dist[a, pos]) - min(dist[a, neg]) + margin))
    return float(np.mean(per))
  hinges = [
    max(0.0, dist[a, p] - dist[a, q] + margin)
    for a in range(n)
    for p in range(n)
    for q in range(n)
    if p != a and row_labels[p] == row_labels[a] and row_labels[q] != row_labels[a]
  ]
  assert average == "positive"
  return float(sum(hinges) / max(sum(h > 1e-16 for h in hinges), 1))


@pytest.mark.parametrize(
  "mining, metric",
  [("batch_hard", "euclidean"), ("batch_all", "euclidean"), ("plain", "euclidean"),
   ("plain", "cosine"), ("batch_hard", "squared_euclidean")],
)  # fmt: skip
def test_triplet_matches_numpy(mining, metric):
  inp = _inputs()
  cfg = _cfg("triplet")
  cfg.mining, cfg.metric, cfg.margin = mining, metric, 0.5
  loss, _ = _loss("triplet", inp, cfg)
  assert float(loss) == pytest.approx(_np_triplet(inp, mining, 0.5, metric), rel=1e-5)


def test_triplet_reads_labels_and_only_the_real_slot():
  inp = _inputs()
  loss = float(_loss("triplet", inp)[0])
  ignored = inp._replace(z=inp.z.at[:, 1:].set(0.5), synthetic_valid=~inp.synthetic_valid)
  assert float(_loss("triplet", ignored)[0]) == loss
  relabelled = inp._replace(labels=jnp.asarray([0, 0, 1, 1, 2, 2], jnp.int32))
  assert float(_loss("triplet", relabelled)[0]) != pytest.approx(loss, rel=1e-4)
  # plain: a batch of one class has no negative and gives 0.
  cfg = _cfg("triplet")
  cfg.mining = "plain"
  one_class = inp._replace(labels=jnp.zeros((B,), jnp.int32))
  assert float(_loss("triplet", one_class, cfg)[0]) == 0.0


def test_triplet_bad_names_list_the_valid_ones():
  cfg = _cfg("triplet")
  cfg.mining = "semi_hard"
  with pytest.raises(ConfigError, match="'batch_all'.*'batch_hard'.*'plain'"):
    _init("triplet", cfg)
  cfg.mining, cfg.metric = "plain", "l1"
  with pytest.raises(ConfigError, match="'cosine'"):
    _init("triplet", cfg)


# ----------------------------------------------------------------------------------------------
# supervised


def _classifier(seed=3):
  rng = np.random.default_rng(seed)
  params = {
    "classifier": {
      "kernel": jnp.asarray(rng.normal(size=(F, C)), jnp.float32),
      "bias": jnp.asarray(rng.normal(size=(C,)), jnp.float32),
    }
  }
  return objectives.ObjectiveState(params=params, buffers={})


def _np_supervised(inp, state, with_synthetic, smoothing):
  """-> (loss, d loss / d kernel, d loss / d bias) of cross-entropy over the counted views."""
  w = np.asarray(state.params["classifier"]["kernel"], np.float64)
  bias = np.asarray(state.params["classifier"]["bias"], np.float64)
  feats, labels, valid = (np.asarray(a) for a in (inp.features, inp.labels, inp.synthetic_valid))
  loss, g_w, g_b, n = 0.0, np.zeros_like(w), np.zeros_like(bias), 0
  for i in range(B):
    for slot in range(1 + S if with_synthetic else 1):
      if slot > 0 and not valid[i, slot - 1]:
        continue
      for v in range(V):
        f = feats[i, slot, v].astype(np.float64)
        logits = f @ w + bias
        log_p = logits - _lse(logits)
        target = (1 - smoothing) * np.eye(C)[labels[i]] + smoothing / C
        loss -= target @ log_p
        g_w += np.outer(f, np.exp(log_p) - target)
        g_b += np.exp(log_p) - target
        n += 1
  return loss / n, g_w / n, g_b / n


@pytest.mark.parametrize("name, smoothing", [("supervised", 0.0), ("supervised_syn", 0.1)])
def test_supervised_cross_entropy_and_its_classifier_step(name, smoothing):
  inp, state = _inputs(), _classifier()
  obj = objectives.get_objective(name)
  cfg = _cfg(name)
  cfg.label_smoothing = smoothing
  inp = inp.replace(config=cfg)
  (loss, aux), grads = jax.value_and_grad(
    lambda p: _loss(name, inp, cfg, state._replace(params=p)), has_aux=True
  )(state.params)
  want, g_w, g_b = _np_supervised(inp, state, name == "supervised_syn", smoothing)
  assert float(loss) == pytest.approx(want, rel=1e-5)
  assert 0 <= float(aux["train_accuracy"]) <= 1
  # The classifier's step: the objective's optimiser (plain SGD) on its gradient.
  tx = obj.optimizer(cfg)
  updates, _ = tx.update(grads, tx.init(state.params), state.params)
  new = optax.apply_updates(state.params, updates)
  lr = cfg.learning_rate
  before = state.params["classifier"]
  np.testing.assert_allclose(
    new["classifier"]["kernel"], before["kernel"] - lr * g_w, rtol=1e-5, atol=1e-6
  )
  np.testing.assert_allclose(
    new["classifier"]["bias"], before["bias"] - lr * g_b, rtol=1e-5, atol=1e-6
  )
  assert float(optax.tree.norm(grads)) > 0
  assert obj.uses_synthetic(cfg) == (name == "supervised_syn")


def test_supervised_reads_the_slots_it_should():
  inp, state = _inputs(), _classifier()
  noise = inp.features.at[:, 1:].set(0.0)
  real = _loss("supervised", inp, state=state)[0]
  assert float(_loss("supervised", inp._replace(features=noise), state=state)[0]) == float(real)
  with_syn = float(_loss("supervised_syn", inp, state=state)[0])
  assert with_syn != pytest.approx(float(real), rel=1e-4)
  # The placeholder slot [3, 1] counts for nothing.
  placeholder = inp.features.at[3, 2].set(100.0)
  changed = _loss("supervised_syn", inp._replace(features=placeholder), state=state)[0]
  assert float(changed) == pytest.approx(with_syn, rel=1e-6)


def test_supervised_classifier_starts_at_zero_with_the_feature_width():
  state = _init("supervised", _cfg("supervised"), 10, 32)
  assert state.params["classifier"]["kernel"].shape == (32, 10)
  assert not np.any(np.asarray(state.params["classifier"]["kernel"]))


# ----------------------------------------------------------------------------------------------
# The real trainer on tiny data.


def _config(name, synthetic_dir, **overrides):
  config = digits.get_config(f"objective={name},runlocal")
  config.data.synthetic_dir = synthetic_dir
  config.log_every_steps = 1  # the first and the last loss are both logged
  for key, value in overrides.items():
    *sections, field = key.split("__")
    node = config
    for section in sections:
      node = node[section]
    node[field] = value
  return config


def _logged(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


@pytest.mark.parametrize("name", ["simclr", "stablerep", "triplet"])
def test_a_few_trainer_steps_lower_the_loss(name, synthetic_dir, tmp_path):
  config = _config(name, synthetic_dir, total_steps=6, checkpoint_every_steps=6)
  state = train.train_and_evaluate(config, str(tmp_path))
  rows = _logged(str(tmp_path))
  assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]
  assert rows[-1]["loss"] < rows[0]["loss"], [r["loss"] for r in rows]
  assert int(state.step) == 6
  if name == "stablerep":
    assert rows[-1]["prompt_positives"] > 0  # images of one prompt did meet in the batches


def _all_leaves(state):
  leaves = (
    state.params,
    state.model_state,
    state.opt_state,
    state.objective_params,
    state.objective,
  )
  return [np.asarray(x) for x in jax.tree.leaves(leaves)]


def test_supervised_trains_and_resumes_its_classifier_exactly(synthetic_dir, tmp_path):
  # Batch 64 and a classifier rate of 1.0: at batch 16 and 0.1 the loss only wanders in 12 steps.
  config = _config(
    "supervised_syn",
    synthetic_dir,
    batch_size=64,
    objective__supervised_syn__learning_rate=1.0,
  )
  assert (config.total_steps, config.checkpoint_every_steps) == (12, 6)
  straight = train.train_and_evaluate(config, str(tmp_path / "straight"))
  rows = _logged(str(tmp_path / "straight"))
  assert rows[0]["loss"] == pytest.approx(np.log(10), rel=1e-5)  # the zero classifier
  assert rows[-1]["loss"] < rows[0]["loss"], [r["loss"] for r in rows]
  assert all(r["objective_grad_norm"] > 0 for r in rows)
  kernel = np.asarray(straight.objective_params["classifier"]["kernel"])
  feat_dim = nnx.merge(*train.init_model(config)).feat_dim
  assert kernel.shape == (feat_dim, 10) and np.any(kernel)

  resumed = train.train_and_evaluate(
    config, stopped_after(str(tmp_path / "straight"), str(tmp_path / "resumed"), 6)
  )
  assert int(resumed.step) == 12
  for a, b in zip(_all_leaves(straight), _all_leaves(resumed), strict=True):
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
  "name", ["simclr", "stablerep", "triplet", "supervised", "supervised_syn", "align_uniform"]
)
def test_configs_accept_every_baseline(name):
  for module in (digits, cifar10):
    config = module.get_config(f"objective={name},runlocal")
    assert config.objective.name == name
    _init(name, objectives.settings(config.objective), 10, 8)


# ----------------------------------------------------------------------------------------------
# align_uniform


def _np_align_uniform(x, y, alpha, t, weight):
  """Wang and Isola 2020's align_loss + weight * mean of the two uniform_loss, in float64."""
  x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
  align = np.mean([np.linalg.norm(a - b) ** alpha for a, b in zip(x, y, strict=True)])

  def uniform(u):
    pairs = [(i, j) for i in range(len(u)) for j in range(i + 1, len(u))]
    return np.log(np.mean([np.exp(-t * np.sum((u[i] - u[j]) ** 2)) for i, j in pairs]))

  return align + weight * (uniform(x) + uniform(y)) / 2


@pytest.mark.parametrize("alpha, t, weight", [(2.0, 2.0, 1.0), (1.0, 3.0, 0.5)])
def test_align_uniform_matches_numpy(alpha, t, weight):
  inp = _inputs()
  cfg = _cfg("align_uniform")
  cfg.alpha, cfg.t, cfg.uniform_weight = alpha, t, weight
  loss, metrics = _loss("align_uniform", inp, cfg)
  z = np.asarray(inp.z[:, 0], np.float64)
  assert float(loss) == pytest.approx(
    _np_align_uniform(z[:, 0], z[:, 1], alpha, t, weight), rel=1e-5
  )
  assert float(metrics["align"]) == pytest.approx(_np_align_uniform(z[:, 0], z[:, 1], alpha, t, 0))
  with jax.enable_x64(True):  # the formula itself, to float64 rounding
    x, y = jnp.asarray(z[:, 0]), jnp.asarray(z[:, 1])
    got = (
      align_uniform.align(x, y, alpha)
      + weight * (align_uniform.uniform(x, t) + align_uniform.uniform(y, t)) / 2
    )
    np.testing.assert_allclose(
      got, _np_align_uniform(z[:, 0], z[:, 1], alpha, t, weight), rtol=1e-12
    )


def test_align_uniform_ignores_labels_and_synthetic_slots():
  inp = _inputs()
  loss, _ = _loss("align_uniform", inp)
  other = inp._replace(
    labels=inp.labels[::-1],
    z=inp.z.at[:, 1:].set(_inputs(seed=1).z[:, 1:]),
    synthetic_valid=~inp.synthetic_valid,
  )
  assert float(_loss("align_uniform", other)[0]) == float(loss)
  assert not objectives.get_objective("align_uniform").uses_synthetic(_cfg("align_uniform"))


def test_align_uniform_config_block_and_its_checks():
  config = digits.get_config("objective=align_uniform")
  assert dict(config.objective.align_uniform) == {"alpha": 2.0, "t": 2.0, "uniform_weight": 1.0}
  cfg = _cfg("align_uniform")
  cfg.n_views = 3
  with pytest.raises(ConfigError, match="n_views=2"):
    _init("align_uniform", cfg)
  cfg = _cfg("align_uniform")
  cfg.t = 0.0
  with pytest.raises(ConfigError, match=r"objective\.align_uniform\.t must be > 0"):
    _init("align_uniform", cfg)


def test_align_uniform_trains(synthetic_dir, tmp_path):
  """24 trainer steps at batch 64 (on the runlocal batch of 16 the uniformity term is too noisy
  for a short run): the loss over steps 21-24 is below steps 1-4, and so is uniformity."""
  config = _config(
    "align_uniform", synthetic_dir, total_steps=24, checkpoint_every_steps=24, batch_size=64
  )
  train.train_and_evaluate(config, str(tmp_path))
  rows = _logged(str(tmp_path))
  first, last = rows[:4], rows[-4:]
  assert np.mean([r["loss"] for r in last]) < np.mean([r["loss"] for r in first]) - 0.2, rows
  assert np.mean([r["uniform"] for r in last]) < np.mean([r["uniform"] for r in first])
