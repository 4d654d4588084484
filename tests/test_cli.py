"""The command line as users meet it: overrides of every key, values that follow the run length,
one-line errors (exit 2, no traceback), --dry_run, --help, and the logs of a restarted run."""

import glob
import importlib
import json
import os
import sys

import pytest
from absl import flags
from ml_collections import config_flags

from configs import common, digits
from syncon_jax import metrics, objectives, validate
from syncon_jax.errors import ConfigError, DataError
from tests.conftest import REPO, run_cli

CONFIG_FILES = sorted(
  os.path.basename(p)[:-3]
  for p in glob.glob(os.path.join(REPO, "configs", "*.py"))
  if not p.endswith("common.py")
)
# Variants that change which keys exist or what they default to.
VARIANTS = {
  "digits": [
    "",
    "runlocal",
    *(f"objective={name}" for name in ("byol_nn", "moco", "triplet", "rotation")),
  ]
}


def parse(argv: list[str], monkeypatch):
  """Parses argv with a fresh config flag the way main does; -> the resolved config.

  config_flags reads the --config.* overrides from sys.argv when the flag is defined."""
  monkeypatch.setattr(sys, "argv", argv)
  fv = flags.FlagValues()
  config_flags.DEFINE_config_file("config", "configs/digits.py", "", flag_values=fv)
  fv(argv)
  return fv.config


def _type(config, key: str) -> type:
  """The declared type of a key (a typed placeholder's, for a key whose value is None)."""
  *sections, name = key.split(".")
  for section in sections:
    config = config[section]
  return config.get_ref(name).get_type()


def leaves(config, prefix=""):
  for key, value in config.items():
    if hasattr(value, "items"):
      yield from leaves(value, f"{prefix}{key}.")
    else:
      yield f"{prefix}{key}", value


@pytest.mark.parametrize("name", CONFIG_FILES)
def test_every_unset_key_can_be_set_on_the_command_line(name, monkeypatch):
  """A key whose default is None (a path, a split, a count) takes a value from the command line
  (ml_collections refuses a plain None default: the bug of every manual data set)."""
  monkeypatch.chdir(REPO)
  for variant in VARIANTS.get(name, [""]):
    path = f"configs/{name}.py" + (f":{variant}" if variant else "")
    config = importlib.import_module(f"configs.{name}").get_config(variant or None)
    unset = [key for key, value in leaves(config) if value is None]
    if not unset:
      continue
    values = {key: "7" if _type(config, key) is int else "/x/y" for key in unset}
    config = parse(
      ["prog", f"--config={path}", *[f"--config.{k}={v}" for k, v in values.items()]], monkeypatch
    )
    for key, value in values.items():
      node = config
      for part in key.split("."):
        node = node[part]
      assert str(node) == value, (path, key)


@pytest.mark.parametrize(
  "path, total, warmup, probation",
  [
    ("configs/digits.py", 30, 2, 10),  # 20 of 300 warmup, a third probation
    ("configs/digits.py", 600, 40, 200),
    ("configs/flowers102.py", 1000, 10, 333),  # 10 of 1000 epochs' warmup
    ("configs/digits.py:fewshot", 300, 20, 100),  # its own 150 steps, doubled
  ],
)
def test_derived_values_follow_the_run_length(path, total, warmup, probation, monkeypatch):
  monkeypatch.chdir(REPO)
  config = parse(["prog", f"--config={path}", f"--config.total_steps={total}"], monkeypatch)
  assert config.optimizer.warmup_steps == warmup
  assert config.objective.syncon.probation_steps == probation
  assert validate.phase_warnings(config) == []
  byol = f"{path}{',' if ':' in path else ':'}objective=byol"
  config = parse(["prog", f"--config={byol}", f"--config.total_steps={total}"], monkeypatch)
  assert config.objective.byol.total_steps == total  # BYOL's tau schedule
  # Set explicitly, a derived value keeps what it was given.
  config = parse(
    [
      "prog",
      f"--config={path}",
      f"--config.total_steps={total}",
      "--config.objective.syncon.probation_steps=5",
    ],
    monkeypatch,
  )
  assert config.objective.syncon.probation_steps == 5


def test_phase_warnings_name_the_empty_or_total_phase(monkeypatch):
  monkeypatch.chdir(REPO)
  config = parse(
    [
      "prog",
      "--config=configs/digits.py",
      "--config.total_steps=20",
      "--config.objective.syncon.probation_steps=100",
      "--config.optimizer.warmup_steps=20",
    ],
    monkeypatch,
  )
  warnings = validate.phase_warnings(config)
  assert len(warnings) == 2
  assert "warmup_steps=20 >= total_steps=20" in warnings[0]
  assert "probation_steps=100" in warnings[1] and "stays 0" in warnings[1]
  config.objective.syncon.probation_steps = 0
  assert "no probation" in validate.phase_warnings(config)[1]
  config.objective.syncon.weighting = "fixed"  # only auto has a probation
  assert len(validate.phase_warnings(config)) == 1


def _error_line(r) -> str:
  assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
  assert "Traceback" not in r.stderr, r.stderr[-2000:]
  lines = [line for line in r.stderr.splitlines() if line.startswith("error:")]
  assert len(lines) == 1, r.stderr  # printed once
  return lines[0]


@pytest.mark.parametrize(
  "args, expected",
  [
    (["--config.objective.temprature=0.1"], ["--config.objective.temprature", "temperature"]),
    (["--config=configs/nope.py"], ["configs/nope.py", "no such config file", "digits.py"]),
    (["--config=configs/digits.py:foo=1"], ["variant 'foo'", "objective", "weighting"]),
    (["--config.total_steps=abc"], ["--config.total_steps=abc"]),
    (["--config.total_steps=0"], ["total_steps must be a positive integer"]),
    (["--config.objective.name=simclrr"], ["'simclrr'", "simclr"]),
    (["--config.objective.syncon.weighting=mystery"], ["'mystery'", "auto"]),
    (
      ["--config=configs/digits.py:objective=byol", "--config.objective.n_views=3"],
      ["config.augment.views has 2 entries for 3 views"],
    ),
    (["--config.data.synthetic_dir=/no/such"], ["/no/such", "render_digits --out=/no/such"]),
    (
      ["--config=configs/flowers102.py:runlocal", "--config.data.resize=stretch"],
      ["data.resize must be one of ('crop', 'squash'), got 'stretch'"],
    ),
    (
      ["--config=configs/flowers102.py:runlocal", "--config.data.decode_size=16"],
      ["data.decode_size=16 is below data.image_size=32"],
    ),
    (["--bogus=1"], ["bogus", "--helpshort"]),
    (["extra"], ["unexpected arguments"]),
  ],
)
def test_bad_input_is_one_line_exit_2(args, expected, tmp_path):
  r = run_cli("syncon_jax.main", f"--workdir={tmp_path / 'w'}", *args, "--dry_run")
  line = _error_line(r)
  for piece in expected:
    assert piece in line, line
  assert not os.path.exists(tmp_path / "w")  # nothing written


def test_workdir_that_is_a_file(tmp_path):
  (tmp_path / "f").write_text("")
  for module in ("syncon_jax.main", "syncon_jax.linear_eval"):
    line = _error_line(run_cli(module, f"--workdir={tmp_path / 'f'}", "--dry_run"))
    assert f"--workdir={tmp_path / 'f'} is a file" in line


def test_linear_eval_without_a_run_says_so_first_and_creates_nothing(tmp_path):
  workdir = tmp_path / "never_trained"
  r = run_cli("syncon_jax.linear_eval", f"--workdir={workdir}")
  assert "holds no checkpoint" in _error_line(r)
  assert not os.path.exists(workdir)


def test_dry_run_prints_the_resolved_config_and_trains_nothing(tmp_path, synthetic_dir):
  r = run_cli(
    "syncon_jax.main",
    "--config=configs/digits.py:objective=syncon",
    f"--workdir={tmp_path / 'w'}",
    f"--config.data.synthetic_dir={synthetic_dir}",
    "--config.total_steps=45",
    "--dry_run",
  )
  assert r.returncode == 0, r.stderr
  assert "Unable to initialize backend" not in r.stderr  # jax's note on every TPU-less machine
  config = json.loads(r.stdout)
  assert config["objective"]["name"] == "syncon" and config["total_steps"] == 45
  assert config["optimizer"]["warmup_steps"] == 3
  assert config["objective"]["syncon"]["probation_steps"] == 15
  assert not os.path.exists(tmp_path / "w")


def test_failed_run_leaves_no_workdir(tmp_path):
  # The data set name is checked before anything is written.
  r = run_cli(
    "syncon_jax.main",
    f"--workdir={tmp_path / 'w'}",
    "--config=configs/digits.py:runlocal",
    "--config.data.name=digitz",
  )
  assert "'digitz'" in _error_line(r)
  assert not os.path.exists(tmp_path / "w")


def test_help_documents_variants_overrides_and_names():
  r = run_cli("syncon_jax.main", "--helpshort")  # absl's help exits 1
  text = r.stdout + r.stderr
  for piece in (
    ":objective=",
    "--config.KEY=VALUE",
    "--dry_run",
    "DESIGN.md",
    "byol_nn",
    "supcon_syn",
    "proto_sim",
    "configs/common.py",
  ):
    assert piece in text, piece


def test_validate_names_paths_of_manual_data_sets(tmp_path):
  config = importlib.import_module("configs.aircraft").get_config("runlocal")
  config.data.synthetic_dir = str(tmp_path)
  with pytest.raises(ConfigError, match="manual_dir"):
    validate.check_config(config)
  config.data.manual_dir = str(tmp_path / "nowhere")
  with pytest.raises(DataError, match="nowhere"):
    validate.check_config(config)
  (tmp_path / "fgvc-aircraft-2013b" / "data" / "images").mkdir(parents=True)
  config.data.manual_dir = str(tmp_path)
  validate.check_config(config)
  config = importlib.import_module("configs.aircraft").get_config("objective=byol_nn,runlocal")
  config.data.manual_dir = str(tmp_path)
  config.objective.byol_nn.neighbor_source = "table"
  config.objective.byol_nn.neighbors_file = str(tmp_path / "nn.npz")
  with pytest.raises(DataError, match="nearest_neighbors"):
    validate.check_config(config)


def test_checkpoint_is_logged_once_it_is_on_disk(tmp_path, monkeypatch):
  """'Saved checkpoint at step N' comes when the step's folder is final, not when saving starts."""
  import jax.numpy as jnp

  from syncon_jax import checkpoint, train

  seen = []

  def info(msg, *args):
    if str(msg).startswith("Saved checkpoint"):
      seen.append((msg % args, sorted(os.listdir(tmp_path / "checkpoints"))))

  monkeypatch.setattr(checkpoint.logging, "info", info)  # absl's, which orbax logs through too
  state = train.TrainState(
    step=jnp.int32(1),
    params={"encoder": {"w": jnp.ones(3)}},
    model_state={"encoder": {"m": jnp.zeros(2)}},
    opt_state={"o": jnp.zeros(1)},
    objective={"x": jnp.zeros(1)},
  )
  ckpt = checkpoint.Checkpointer(str(tmp_path), keep=2, every_steps=1)
  assert ckpt.save(1, state)
  ckpt.wait()
  ckpt.close()
  saved = [(m, listing) for m, listing in seen if m.startswith("Saved checkpoint at step 1")]
  assert len(saved) == 1
  assert saved[0][1] == ["1"]  # the final folder, no orbax tmp folder beside it
  assert checkpoint.has_checkpoint(str(tmp_path))


def test_restart_drops_rows_past_the_checkpoint(tmp_path):
  """metrics.jsonl keeps one row per step after a restart from an earlier checkpoint, and the
  new events file tells TensorBoard to purge the abandoned steps."""
  from tensorboard.backend.event_processing import event_accumulator

  path = tmp_path / "metrics.jsonl"
  w = metrics.MetricWriter(str(tmp_path))
  for step in (4, 8, 12):
    w.write(step, {"loss": float(step)})
  w.close()
  w = metrics.MetricWriter(str(tmp_path), start_step=8)  # resumed from the checkpoint at 8
  w.write(12, {"loss": -1.0})
  w.close()
  rows = [json.loads(line) for line in path.read_text().splitlines()]
  assert [(r["step"], r["loss"]) for r in rows] == [(4, 4.0), (8, 8.0), (12, -1.0)]
  acc = event_accumulator.EventAccumulator(str(tmp_path))
  acc.Reload()
  assert [(e.step, e.value) for e in acc.Scalars("loss")] == [(4, 4.0), (8, 8.0), (12, -1.0)]


@pytest.mark.parametrize(
  "objective,key,value,match",
  [
    ("syncon", "temperature", 0.0, "objective.temperature must be > 0"),
    ("syncon", "base_temperature", -1.0, "objective.base_temperature must be > 0"),
    ("syncon", "block_size", 0, "objective.block_size must be a positive integer or None"),
    (
      "syncon",
      "syncon.synthetic_denominator",
      "own",
      r"objective.syncon.synthetic_denominator 'own'; valid: \['all', 'weighted'\]",
    ),
    (
      "triplet",
      "triplet.average",
      "mean",
      r"objective.triplet.average 'mean'; valid: \['positive', 'all'\]",
    ),
    ("triplet", "triplet.margin", -0.1, "objective.triplet.margin must be >= 0"),
    (
      "supervised",
      "supervised.label_smoothing",
      1.0,
      r"objective.supervised.label_smoothing must be in \[0, 1\)",
    ),
  ],
)
def test_validate_checks_the_loss_settings(objective, key, value, match):
  """The losses check no setting themselves (they are traced inside the step): the config is
  checked once, before anything is loaded (an objective's own keys by its check_config hook)."""
  config = importlib.import_module("configs.digits").get_config(f"objective={objective},runlocal")
  *block, name = key.split(".")
  (config.objective[block[0]] if block else config.objective)[name] = value
  with pytest.raises(ConfigError, match=match):
    validate.check_config(config)


def test_a_config_holds_the_block_of_its_objective_only(monkeypatch):
  monkeypatch.chdir(REPO)
  simclr = parse(["prog", "--config=configs/digits.py:objective=simclr"], monkeypatch)
  assert sorted(simclr.objective) == [
    "base_temperature",
    "block_size",
    "n_views",
    "name",
    "temperature",
  ]
  syncon = parse(
    ["prog", "--config=configs/digits.py", "--config.objective.syncon.weighting=learned"],
    monkeypatch,
  )
  assert [k for k in syncon.objective if k in objectives.OBJECTIVES] == ["syncon"]
  settings = objectives.settings(syncon.objective)
  assert settings.weighting == "learned" and settings.temperature == syncon.objective.temperature
  # Naming another objective on the command line would train it under SynCon's block: an error
  # that names the variant to use; so is an objective whose block is missing.
  other = parse(
    ["prog", "--config=configs/digits.py", "--config.objective.name=triplet"], monkeypatch
  )
  with pytest.raises(ConfigError, match=r"block objective\.syncon.*:objective=triplet"):
    validate.check_config(other)
  with syncon.unlocked():
    del syncon.objective["syncon"]
  with pytest.raises(ConfigError, match=r"no block objective\.syncon"):
    objectives.settings(syncon.objective)
  # A block key may not hide a shared one.
  moco = digits.get_config("objective=moco")
  moco.objective.moco.temperature = 0.5
  with pytest.raises(ConfigError, match=r"objective\.moco\.temperature shadows"):
    objectives.settings(moco.objective)


def test_set_block_keys_sets_only_what_the_chosen_block_has():
  moco = digits.get_config("objective=moco")
  common.set_block_keys(moco, queue_size=7, weighting="fixed")
  assert moco.objective.moco.queue_size == 7 and "weighting" not in moco.objective.moco
  simclr = digits.get_config("objective=simclr")
  common.set_block_keys(simclr, queue_size=7)
  assert "queue_size" not in simclr.objective and "simclr" not in simclr.objective
  # configure swaps one block for another (the experiment's configs built in code).
  objectives.configure(moco, "triplet")
  assert "moco" not in moco.objective and moco.objective.triplet.margin == 0.2
