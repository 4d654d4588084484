r"""Train on synthetic, test on real: the StableRep/CIFAKE replication's study, and the SynCon row.

  python -m syncon_jax.tools.cifake_experiment --config=configs/cifake_study.py \
    --workdir=runs/cifake_digits                                  (make cifake-study)
  python -m syncon_jax.tools.cifake_experiment --config=configs/cifake_study.py:data=cifake \
    --workdir=runs/cifake --config.data.manual_dir=/data/cifake

For each architecture of study.architectures (a small CNN and a small ViT, each an encoder of
the model registry plus a linear classifier, trained end to end from scratch with AdamW and no
augmentation) and each training set of study.conditions (real, synthetic, real+synthetic), one
classifier per seed of study.seeds, tested on the *real* test images. All (condition, seed)
replicas of an architecture train at once, vmapped in one compiled step (one compilation).
Then CIFAKE's own task: real versus synthetic detection, trained on both train halves, tested
on held-out images of both. Then the row the replication lacked: SynCon pretrained by the one
trainer on the same real + synthetic images (study.syncon_*), frozen, and linearly probed on
the real train labels; beside it, the same probe on raw pixels.

Data: digits (the real digits' split of configs/digits.py; synthetic = clean renders of
tools/render_digits, train renders and held-out renders of another seed) or CIFAKE (REAL and
FAKE of the Kaggle layout, train/ and test/; configs/cifake.py). Intervals: mean and 95%
Student-t interval over the seeds.

Output: <workdir>/report/results.json and results.md (the table); <workdir>/syncon/<arch>/seed<k>
the SynCon runs (a finished run is restored, not retrained).
"""

import copy
import json
import os
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import scipy.stats
from absl import flags, logging
from flax import nnx
from ml_collections import config_flags

from syncon_jax import losses, models, platform, train
from syncon_jax.data import cifake, folders, load_real
from syncon_jax.errors import ConfigError, exit_on_user_error
from syncon_jax.evaluators import linear_probe
from syncon_jax.tools import render_digits

CONDITIONS = ("real", "synthetic", "real+synthetic")


class StudyData:
  """The four image sets of the study: uint8 [N, S, S, 3] images and int32 [N] class labels."""

  def __init__(self, real_train, real_test, syn_train, syn_test, class_names):
    self.real_train, self.real_test = real_train, real_test
    self.syn_train, self.syn_test = syn_train, syn_test
    self.class_names = list(class_names)

  def condition(self, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Training images and labels of one condition of CONDITIONS."""
    parts = {"real": [self.real_train], "synthetic": [self.syn_train]}
    parts["real+synthetic"] = parts["real"] + parts["synthetic"]
    if name not in parts:
      raise ConfigError(f"study.conditions: unknown {name!r}; valid: {list(CONDITIONS)}")
    return (
      np.concatenate([np.asarray(p.images) for p in parts[name]]),
      np.concatenate([p.labels for p in parts[name]]).astype(np.int32),
    )

  def detection(self, role: str) -> tuple[np.ndarray, np.ndarray]:
    """Real (label 0) and synthetic (label 1) images of 'train' or 'test'."""
    real, syn = (
      (self.real_train, self.syn_train)
      if role == "train"
      else (
        self.real_test,
        self.syn_test,
      )
    )
    images = np.concatenate([np.asarray(real.images), np.asarray(syn.images)])
    labels = np.concatenate([np.zeros(len(real.labels)), np.ones(len(syn.labels))])
    return images, labels.astype(np.int32)


def render_synthetic(config, root: str) -> tuple[str, str]:
  """Renders the digits' synthetic half (clean) into <root>/synthetic/{train,test}."""
  s = config.study
  dirs = (os.path.join(root, "synthetic", "train"), os.path.join(root, "synthetic", "test"))
  for out, per_class, seed in (
    (dirs[0], s.render_per_class, s.render_seed),
    (dirs[1], s.render_test_per_class, s.render_test_seed),
  ):
    render_digits.render_dataset(
      out,
      per_class=per_class,
      seed=seed,
      image_size=s.render_image_size,
      prompts_per_class=s.render_prompts_per_class,
    )
  return dirs


def load_study_data(config, root: str) -> tuple[StudyData, str]:
  """-> (the study's images, the synthetic train folder SynCon reads as data.synthetic_dir)."""
  dc = config.data
  if dc.name == "digits":
    real_train, real_test, names = load_real(dc)
    train_dir, test_dir = render_synthetic(config, root)
    syn = [
      folders.load_synthetic(d, names, image_size=dc.image_size) for d in (train_dir, test_dir)
    ]
    syn = [folders.Split(np.asarray(x.images), np.asarray(x.labels, np.int32)) for x in syn]
    return StudyData(real_train, real_test, syn[0], syn[1], names), train_dir
  if dc.name == "cifake":
    kw = dict(image_size=dc.image_size, task="cifar10", num_threads=dc.get("decode_threads"))
    real_train, real_test, names = cifake.load(dc.manual_dir, **kw)
    syn_train, syn_test, _ = cifake.load(
      dc.manual_dir, train_sources=("FAKE",), test_sources=("FAKE",), **kw
    )
    # SynCon reads FAKE as a synthetic support set of the REAL classes: links, no copies.
    syn_dir = os.path.join(root, "synthetic", "train")
    cifake.export_class_folders(dc.manual_dir, syn_dir)
    return StudyData(real_train, real_test, syn_train, syn_test, names), syn_dir
  raise ConfigError(f"data.name={dc.name!r}: the CIFAKE study runs on 'digits' or 'cifake'")


# ----------------------------------------------------------------------------------------------
# Supervised classifiers, many replicas at once.


class Classifier(nnx.Module):
  """An encoder of the model registry and a linear classifier: images -> logits float32."""

  def __init__(self, model_config, num_classes: int, *, rngs: nnx.Rngs):
    dtype = models.DTYPES[model_config.dtype]
    if model_config.name not in models.MODELS:
      raise ConfigError(
        f"study model.name={model_config.name!r} is not known; valid: {sorted(models.MODELS)}"
      )
    self.encoder = models.MODELS[model_config.name](model_config, dtype=dtype, rngs=rngs)
    self.head = nnx.Linear(self.encoder.feat_dim, num_classes, rngs=rngs)

  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    return self.head(self.encoder(x, train=train)).astype(jnp.float32)


def _preprocess(images: np.ndarray, config) -> jax.Array:
  return train.preprocess(jnp.asarray(images, jnp.float32) / 255.0, config)


def train_replicas(
  config,
  model_config,
  pools: Sequence[tuple[np.ndarray, np.ndarray]],
  seeds: Sequence[int],
  num_classes: int,
  test: tuple[np.ndarray, np.ndarray],
) -> np.ndarray:
  """Trains one classifier per (pool, seed), all vmapped in one step; -> test accuracy
  [len(pools), len(seeds)].

  pools: (images uint8 [N_p, S, S, 3], labels int32 [N_p]) training sets; test: the same for
  the test set every replica is scored on. Replica (p, s) initialises from seed s and draws
  its batches (without replacement within a step) from a generator seeded (s, p).
  """
  s = config.study
  n_rep = len(pools) * len(seeds)
  rep_seeds = [int(seed) for _ in pools for seed in seeds]
  graphdef = nnx.graphdef(
    nnx.eval_shape(lambda: Classifier(model_config, num_classes, rngs=nnx.Rngs(0)))
  )

  def init(key):
    model = Classifier(model_config, num_classes, rngs=nnx.Rngs(params=key))
    return nnx.split(model, nnx.Param, ...)[1:]

  keys = jnp.stack([jax.random.key_data(jax.random.key(seed)) for seed in rep_seeds])
  with jax.threefry_partitionable(False):  # as train.init_model: fast to compile on CPU
    params, rest = jax.jit(jax.vmap(lambda k: init(jax.random.wrap_key_data(k))))(keys)
  schedule = optax.warmup_cosine_decay_schedule(
    0.0, s.learning_rate, s.warmup_steps, max(s.steps, s.warmup_steps + 1), 0.0
  )
  if s.optimizer != "adamw":
    raise ConfigError(f"study.optimizer={s.optimizer!r}; valid: ['adamw']")
  tx = optax.adamw(schedule, weight_decay=s.weight_decay, mask=lambda p: train._decay_mask(p))
  opt_state = jax.vmap(tx.init)(params)

  def step(params, rest, opt_state, images, labels):
    def loss_fn(p):
      model = nnx.merge(graphdef, p, rest, copy=True)
      logits = model(_preprocess(images, config), train=True)
      return losses.softmax_cross_entropy(logits, labels), nnx.state(model, nnx.Not(nnx.Param))

    (loss, rest), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), rest, opt_state, loss

  step_fn = jax.jit(jax.vmap(step), donate_argnums=(0, 1, 2))
  rngs = [np.random.default_rng((seed, p)) for p in range(len(pools)) for seed in seeds]
  pool_of = [p for p in range(len(pools)) for _ in seeds]
  for i in range(s.steps):
    idx = [
      rngs[r].choice(len(pools[pool_of[r]][1]), s.batch_size, replace=False) for r in range(n_rep)
    ]
    images = np.stack([pools[pool_of[r]][0][idx[r]] for r in range(n_rep)])
    labels = np.stack([pools[pool_of[r]][1][idx[r]] for r in range(n_rep)])
    params, rest, opt_state, loss = step_fn(params, rest, opt_state, images, labels)
    if (i + 1) % max(1, s.steps // 5) == 0 or i + 1 == s.steps:
      logging.info("step %d/%d: mean loss %.4f", i + 1, s.steps, float(jnp.mean(loss)))

  @jax.jit
  def predict(params, rest, images):
    def one(p, r):
      return jnp.argmax(
        nnx.merge(graphdef, p, r, copy=True)(_preprocess(images, config), train=False), -1
      )

    return jax.vmap(one)(params, rest)

  test_images, test_labels = test
  bs = s.eval_batch_size
  hits = np.zeros(n_rep)
  for j in range(0, len(test_labels), bs):
    chunk = test_images[j : j + bs]
    pad = np.zeros((bs - len(chunk), *chunk.shape[1:]), chunk.dtype)  # one compiled shape
    pred = np.asarray(predict(params, rest, np.concatenate([chunk, pad])))[:, : len(chunk)]
    hits += (pred == test_labels[None, j : j + bs]).sum(axis=1)
  return (hits / len(test_labels)).reshape(len(pools), len(seeds))


# ----------------------------------------------------------------------------------------------
# The SynCon row.


def syncon_config(config, arch: str, seed: int, synthetic_dir: str) -> ml_collections.ConfigDict:
  """The data set's SynCon config with the study's encoder, seed, schedule and synthetic set."""
  s = config.study
  c = copy.deepcopy(config)
  for key, value in s[arch].items():
    if c.model.get(key) != value:  # model.image_size is a reference to data.image_size
      c.model[key] = value
  c.seed = int(seed)
  c.total_steps = s.syncon_steps
  c.batch_size = s.syncon_batch_size
  c.checkpoint_every_steps = s.syncon_steps
  c.log_every_steps = max(1, s.syncon_steps // 4)
  c.optimizer.warmup_steps = min(c.optimizer.warmup_steps, max(1, s.syncon_steps // 10))
  c.objective.syncon.probation_steps = max(1, s.syncon_steps // 3)
  c.data.synthetic_dir = synthetic_dir
  return c


def _features(graphdef, state: train.TrainState, images: np.ndarray, config) -> np.ndarray:
  model = nnx.merge(graphdef, state.params, state.model_state)
  encode = nnx.jit(lambda m, x: m.encode(x, train=False))
  bs = config.study.eval_batch_size
  out = []
  for j in range(0, len(images), bs):
    chunk = images[j : j + bs]
    pad = np.zeros((bs - len(chunk), *chunk.shape[1:]), chunk.dtype)
    out.append(np.asarray(encode(model, _preprocess(np.concatenate([chunk, pad]), config))))
  return np.concatenate(out)[: len(images)]


def _probe(config, train_x, train_y, test_x, test_y, num_classes: int) -> float:
  ec = config.eval
  return linear_probe.linear_probe(
    train_x,
    train_y,
    test_x,
    test_y,
    l2_grid=tuple(ec.l2_grid),
    heldout_fraction=ec.heldout_fraction,
    seed=ec.probe_seed,
    num_classes=num_classes,
  )["top1"]


def syncon_row(config, data: StudyData, synthetic_dir: str, root: str, arch: str) -> list[float]:
  """SynCon pretraining per seed, then the linear probe on the real train labels -> top-1s."""
  accs = []
  for seed in config.study.syncon_seeds:
    c = syncon_config(config, arch, seed, synthetic_dir)
    state = train.train_and_evaluate(c, os.path.join(root, "syncon", arch, f"seed{seed}"))
    graphdef = train.init_model(c)[0]
    feats = [_features(graphdef, state, x.images, c) for x in (data.real_train, data.real_test)]
    n = len(data.class_names)
    accs.append(_probe(c, feats[0], data.real_train.labels, feats[1], data.real_test.labels, n))
    logging.info("SynCon %s seed %d: probe top-1 %.4f", arch, seed, accs[-1])
  return accs


# ----------------------------------------------------------------------------------------------
# Summary.


def interval(values: Sequence[float], confidence: float = 0.95) -> dict:
  """Mean and the half-width of the Student-t confidence interval of the mean (0 for one value)."""
  v = np.asarray(values, np.float64)
  half = 0.0
  if len(v) > 1:
    half = float(
      scipy.stats.t.ppf(0.5 + confidence / 2, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v))
    )
  return {"mean": float(v.mean()), "ci95": half, "n": len(v), "values": [float(x) for x in v]}


def finding(rows: dict, arch: str) -> str:
  """Whether real beats synthetic for `arch`: 'confirmed' when the intervals are disjoint with
  real above, 'reversed' when disjoint the other way, else 'not resolved'."""
  real, syn = rows["real"][arch], rows["synthetic"][arch]
  if real["mean"] - real["ci95"] > syn["mean"] + syn["ci95"]:
    return "confirmed"
  if syn["mean"] - syn["ci95"] > real["mean"] + real["ci95"]:
    return "reversed"
  return "not resolved"


def _cell(r: dict | None) -> str:
  if r is None:
    return "—"
  if r["n"] == 1:
    return f"{100 * r['mean']:.1f}"
  return f"{100 * r['mean']:.1f} ± {100 * r['ci95']:.1f}"


ARCH_NAMES = {"cnn": "CNN", "vit": "ViT"}


def markdown(summary: dict) -> str:
  archs = summary["architectures"]
  names = [ARCH_NAMES.get(a, a) for a in archs]
  head = "| trained on (tested on real) | " + " | ".join(names) + " |"
  lines = [
    f"Top-1 on the real test images (%), mean ± 95% t-interval over seeds "
    f"(data: {summary['data']}; {summary['sizes']}).",
    "",
    head,
    "|" + "---|" * (len(archs) + 1),
  ]
  labels = {
    "real": "real",
    "synthetic": "synthetic",
    "real+synthetic": "real + synthetic",
    "syncon_probe": "SynCon on real + synthetic, linear probe on real",
    "pixels_probe": "raw pixels (no network), linear probe on real",
  }
  for key, label in labels.items():
    if key in summary["rows"]:
      cells = [_cell(summary["rows"][key].get(a)) for a in archs]
      lines.append(f"| {label} | " + " | ".join(cells) + " |")
  if summary.get("detection"):
    lines.append(
      "| *real-vs-synthetic detection (CIFAKE's task; held-out real and synthetic)* | "
      + " | ".join(_cell(summary["detection"].get(a)) for a in archs)
      + " |"
    )
  lines.append("")
  for a, name in zip(archs, names, strict=True):
    if a in summary["finding"]:
      lines.append(f"- {name}: real beats synthetic — {summary['finding'][a]}.")
  return "\n".join(lines) + "\n"


def run_study(config, root: str) -> dict:
  """Runs every part of the study and writes <root>/report/; returns the summary."""
  s = config.study
  data, synthetic_dir = load_study_data(config, root)
  n_classes = len(data.class_names)
  logging.info(
    "Study data: %d real train, %d real test, %d synthetic train, %d synthetic test images.",
    len(data.real_train.labels),
    len(data.real_test.labels),
    len(data.syn_train.labels),
    len(data.syn_test.labels),
  )
  real_test = (np.asarray(data.real_test.images), data.real_test.labels)
  rows: dict = {c: {} for c in s.conditions}
  detection = {}
  for arch in s.architectures:
    if arch not in s:
      raise ConfigError(f"study.architectures names {arch!r}, which has no study.{arch} section")
    logging.info("Training %s on %s, seeds %s.", arch, list(s.conditions), list(s.seeds))
    acc = train_replicas(
      config, s[arch], [data.condition(c) for c in s.conditions], s.seeds, n_classes, real_test
    )
    for i, cond in enumerate(s.conditions):
      rows[cond][arch] = interval(acc[i])
    if s.detection:
      logging.info("Training %s on real-vs-synthetic detection.", arch)
      det = train_replicas(
        config, s[arch], [data.detection("train")], s.seeds, 2, data.detection("test")
      )
      detection[arch] = interval(det[0])
  if s.syncon_architectures:
    rows["syncon_probe"] = {
      a: interval(syncon_row(config, data, synthetic_dir, root, a)) for a in s.syncon_architectures
    }
  if s.pixels_probe:
    flat = lambda x: np.asarray(x.images).reshape(len(x.labels), -1).astype(np.float32) / 255.0
    pixels = _probe(
      config,
      flat(data.real_train),
      data.real_train.labels,
      flat(data.real_test),
      data.real_test.labels,
      n_classes,
    )
    # No network: the same number in every column, the floor any encoder should clear.
    rows["pixels_probe"] = {a: interval([pixels]) for a in s.architectures}
  summary = {
    "data": config.data.name,
    "architectures": list(s.architectures),
    "sizes": (
      f"{len(data.real_train.labels)} real and {len(data.syn_train.labels)} synthetic train "
      f"images, {len(data.real_test.labels)} real test; {len(s.seeds)} seeds, {s.steps} steps"
    ),
    "rows": rows,
    "detection": detection,
    "finding": {a: finding(rows, a) for a in s.architectures if {"real", "synthetic"} <= set(rows)},
    "config": json.loads(config.to_json()),
  }
  report = os.path.join(root, "report")
  os.makedirs(report, exist_ok=True)
  with open(os.path.join(report, "results.json"), "w") as f:
    json.dump(summary, f, indent=2)
  with open(os.path.join(report, "results.md"), "w") as f:
    f.write(markdown(summary))
  return summary


def dry_run(config, root: str) -> str:
  """Checks the study's SynCon config for each architecture (names, data paths) without loading
  or training anything; -> what the study would run."""
  from syncon_jax import validate

  s = config.study
  for arch in s.architectures:
    # The synthetic half is made by the study itself: stand in any existing folder for it.
    validate.check_config(
      syncon_config(config, arch, 0, os.path.dirname(os.path.abspath(__file__)))
    )
  return (
    f"data {config.data.name}: architectures {list(s.architectures)}, conditions "
    f"{list(s.conditions)}; report in {os.path.join(root, 'report')}"
  )


if __name__ == "__main__":
  from syncon_jax import cli

  def define_flags() -> None:
    config_flags.DEFINE_config_file(
      "config", "configs/cifake_study.py", f"The study's config file. {cli.CONFIG_HELP}"
    )
    flags.DEFINE_string("workdir", "runs/cifake_digits", "Root of the study's outputs.")
    flags.DEFINE_bool("dry_run", False, "Check the config and data paths, train nothing.")

  def main(argv) -> None:
    if len(argv) > 1:
      cli.fail(f"unexpected arguments {argv[1:]}: flags take the form --name=value")
    platform.start_jax_program()
    config, workdir = flags.FLAGS.config, flags.FLAGS.workdir
    with exit_on_user_error():
      if flags.FLAGS.dry_run:
        print(dry_run(config, workdir))
        return
      summary = run_study(config, workdir)
    print(markdown(summary))
    print(f"Report: {os.path.join(workdir, 'report')}")

  cli.run(main, define_flags)
