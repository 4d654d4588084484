"""Every command the documentation shows works as written: README.md, the config docstrings and
the comments of launch/.

The commands are collected from the text, not listed here, so a command added to the README later
is covered without editing this file. Each runs the way a user would type it, in a scratch folder
that looks like the repository root (configs/, launch/, Makefile, .venv are links), with three
changes that keep the suite fast:

- shortened: `:runlocal` added to every config, `--per_class=4` to render_digits;
- pointed at tiny data: `$RUNS`, `$TFDS`, `/data/...`, `/shared/...` and `/tmp/...` become
  folders of the scratch tree, with the manual data sets' official layouts made empty;
- the digits commands train and evaluate for real; a command on another data set, or one that
  joins a multi-process run, runs with --dry_run (the whole config resolved and checked, the data
  paths included, nothing trained), as do tools.experiment and the launch scripts' python.

Each must exit 0, and the README's demo workdir must then hold every output the README names
(metrics, weights, checkpoints, eval.json and its report). Then the paper-config commands run once
more exactly as written, data paths untouched: each must stop with the one-line data-missing error
(exit 2, no traceback).
"""

from __future__ import annotations

import ast
import glob
import itertools
import json
import math
import os
import re
import shlex
import stat
import subprocess
import sys

import pytest

from tests.conftest import REPO

DOCS = ["README.md", *sorted(glob.glob("configs/*.py", root_dir=REPO))] + sorted(
  glob.glob("launch/*.s*", root_dir=REPO)
)
# A line is a command when it starts (after VAR=value assignments) with one of these.
COMMAND = re.compile(
  r"^(?:[A-Z_]+=\S+\s+)*(python -m syncon_jax\.|python -c .*syncon_jax|make \w|launch/\S+\.sh|"
  r"sbatch |\.venv/bin/pip install )"
)
CIFAKES = ("cifake", "cifake_mini")  # the folders the docs point at, each a miniature CIFAKE
LINKS = ("configs", "launch", "syncon_jax", "Makefile", "setup.py", "pyproject.toml", ".venv")


def doc_text(path: str) -> str:
  """README as it is; a config's module docstring; a launch script's comment lines."""
  with open(os.path.join(REPO, path)) as f:
    text = f.read()
  if path.endswith(".py"):
    return ast.get_docstring(ast.parse(text)) or ""
  if path.startswith("launch/"):
    return "\n".join(line[1:] for line in text.splitlines() if line.startswith("#"))
  return text


def commands(text: str) -> list[str]:
  """The shell commands in a text: continuation lines joined, trailing comments dropped, a
  `for ...; do ... done` loop kept whole."""
  lines, out, loop = [], [], None
  for raw in text.replace("\\\n", " ").splitlines():
    lines.append(re.sub(r"\s+#\s.*$", "", raw).strip())
  for line in lines:
    if loop is not None:
      loop.append(line)
      if line.startswith("done"):
        out.append("\n".join(loop))
        loop = None
    elif re.match(r"^for \w+ in .*; do$", line):
      loop = [line]
    elif COMMAND.match(line):
      out.append(re.sub(r"\s+", " ", line))
  return out


def all_commands() -> list[tuple[str, int, str]]:
  return [(doc, i, cmd) for doc in DOCS for i, cmd in enumerate(commands(doc_text(doc)))]


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> str:
  """A scratch repository root with tiny data in the manual data sets' layouts."""
  root = tmp_path_factory.mktemp("readme")
  for name in LINKS:
    os.symlink(os.path.join(REPO, name), root / name)
  for folder in (
    "data/birdsnap",
    "data/fgvc-aircraft-2013b/data/images",
    "data/aircraft/fgvc-aircraft-2013b/data/images",
    "data/birdsnap_dalle",
    "data/aircraft_dalle",
    "data/flowers_dalle",
    "tfds",
    "bin",
  ):
    (root / folder).mkdir(parents=True)
  # Stand-ins for the cluster tools: gcloud records nothing (tpu_pod.sh runs with --dry-run),
  # sbatch runs its script, srun runs the python command it is given with --dry_run.
  # git answers tpu_pod.sh's questions about the checkout (the scratch root is none).
  fakes = {
    "gcloud": "exit 0",
    "git": 'case "$*" in *"remote get-url"*) echo https://example.com/x.git ;; '
    "*rev-parse*) echo 0123abcd ;; esac",
    "sbatch": 'while [[ "$1" == -* ]]; do shift; done; exec bash "$@"',
    "srun": 'while [[ "$1" == -* ]]; do shift; done; exec "$@" --dry_run',
  }
  from PIL import Image

  from syncon_jax.tools import render_digits

  # CIFAKE's file naming: "<n>.jpg" is an airplane, "<n> (k).jpg" class k.
  for cifake, split, source in itertools.product(CIFAKES, ("train", "test"), ("REAL", "FAKE")):
    folder = root / "data" / cifake / split / source
    folder.mkdir(parents=True, exist_ok=True)
    for file_name in ("1.jpg", "1 (2).jpg"):
      Image.new("RGB", (32, 32), (200, 40, 40)).save(folder / file_name)

  # The digits config's default synthetic folder, for commands that do not render their own.
  render_digits.render_dataset(
    str(root / "runs" / "synthetic_digits"), per_class=4, seed=0, image_size=32, prompts_per_class=2
  )
  for aircraft in ("data", "data/aircraft"):
    folder = root / aircraft / "fgvc-aircraft-2013b" / "data"
    (folder / "variants.txt").write_text("707-320\nF-16A/B\n")
    for split, image, variant in (("trainval", "0001", "707-320"), ("test", "0002", "F-16A/B")):
      Image.new("RGB", (48, 40), (90, 90, 90)).save(folder / "images" / f"{image}.jpg")
      (folder / f"images_variant_{split}.txt").write_text(f"{image} {variant}\n")
  # What a user writes for a set not prepared here (tools.generate --classes_file).
  (root / "birdsnap_classes.txt").write_text("Black-footed Albatross\nSooty Albatross\n")
  for name, body in fakes.items():
    path = root / "bin" / name
    path.write_text(f"#!/usr/bin/env bash\nset -euo pipefail\n{body}\n")
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
  return str(root)


def localize(cmd: str, root: str, *, data: bool = True) -> str:
  """Points the command's outputs (and, with data, its inputs) into the scratch root."""
  cmd = re.sub(r"(?<=[=\s])/(shared|mnt|tmp)/", f"{root}/\\1/", cmd)
  cmd = cmd.replace("$RUNS", f"{root}/runs").replace("$TFDS", f"{root}/tfds")
  cmd = cmd.replace("$RANK", "0")
  if data:
    cmd = re.sub(r"(?<=[=\s'])/data\b", f"{root}/data", cmd)
  return cmd


def shorten(cmd: str, *, dry: bool) -> str:
  """`:runlocal` on every config, small renders, --dry_run where the command must not train."""

  def runlocal(m: re.Match) -> str:
    path, _, variants = m.group(1).partition(":")
    if path.endswith("common.py"):
      return m.group(0)
    return f"--config={path}:{variants + ',' if variants else ''}runlocal"

  cmd = re.sub(r"--config=(\S+)", runlocal, cmd)
  cmd = re.sub(r"(render_digits)(?=\s)", r"\1 --per_class=4", cmd)
  if dry:
    cmd = re.sub(
      r"(-m syncon_jax\.(?:main|linear_eval|tools\.experiment|tools\.cifake_experiment|tools\.generate)\b[^&\n]*?)(\s*&?)$",
      r"\1 --dry_run\2",
      cmd,
      flags=re.M,
    )
  return cmd


# The digits objectives trained (and evaluated) for real so far in this session: each compiles
# its own programs (~20 s on CI), so a second command of the same objective is a --dry_run.
TRAINED: set[str] = set()


def is_dry(cmd: str) -> bool:
  """Whether a python command runs with --dry_run: anything but digits, multi-process, the
  experiment (hours), a digits objective already trained once, and the launch scripts (their
  python is dry in the fake srun)."""
  if any(
    s in cmd
    for s in (
      "tools.experiment",
      "tools.cifake_experiment",
      "tools.generate",
      "--coordinator_address",
    )
  ):
    return True
  configs = re.findall(r"--config=(\S+?)(?::|\s|$)", cmd)
  if any(not c.endswith(("digits.py", "latent.py")) for c in configs):
    return True
  for program in ("syncon_jax.main", "syncon_jax.linear_eval"):
    if program in cmd:
      objective = re.search(r"--config=\S+?:\S*?objective=(\w+)", cmd)
      key = f"{program}:{objective.group(1) if objective else 'syncon'}"
      if key in TRAINED:
        return True
      TRAINED.add(key)
  return False


def run(cmd: str, root: str, timeout: int = 600) -> subprocess.CompletedProcess:
  env = dict(os.environ)
  env["PATH"] = os.pathsep.join(
    [os.path.join(root, "bin"), os.path.dirname(sys.executable), env["PATH"]]
  )
  # A stand-in key: the images API is never called (tools.generate runs with --dry_run).
  env.update(JAX_PLATFORMS="cpu", SLURM_SUBMIT_DIR=root, OPENAI_API_KEY="sk-stand-in")
  return subprocess.run(
    ["bash", "-c", f"set -euo pipefail\n{cmd}"],
    cwd=root,
    env=env,
    capture_output=True,
    text=True,
    timeout=timeout,
  )


def make_recipe(target_cmd: str, root: str) -> list[str]:
  """`make X ...` -> the commands make would run (make -n), those of this project only."""
  # Under `make test` this is a sub-make: without --no-print-directory it prints "Entering".
  r = run(target_cmd.replace("make ", "make -n --no-print-directory ", 1), root)
  assert r.returncode == 0, f"{target_cmd}: {r.stderr}"
  recipe = r.stdout.replace("\\\n", " ").splitlines()
  lines = [re.sub(r"\s+", " ", line) for line in recipe if "syncon_jax" in line or "pytest" in line]
  assert lines, f"{target_cmd} runs none of this project's commands:\n{r.stdout}"
  return [re.sub(r"^\.venv/bin/python ", "python ", line) for line in lines]


def extras() -> set[str]:
  """The extras setup.py declares (it runs with setuptools.setup replaced by a recorder)."""
  import runpy
  from unittest import mock

  with mock.patch("setuptools.setup") as setup:
    runpy.run_path(os.path.join(REPO, "setup.py"))
  return set(setup.call_args.kwargs["extras_require"])


# The stderr of every command run for real in this session, by the command as run.
LOGS: dict[str, str] = {}


def check(cmd: str, root: str) -> None:
  """Runs one documented command (shortened, local) and asserts it succeeds."""
  if cmd.startswith(".venv/bin/pip install"):
    extra = re.search(r"\[(\w+)\]", cmd)
    assert extra and extra.group(1) in extras(), f"{cmd}: no such extra in setup.py"
    return
  if cmd.startswith("make "):
    if re.match(r"make test\b", cmd):  # this very suite: only check that the target exists
      make_recipe(cmd, root)
      return
    for line in make_recipe(cmd, root):
      check(line, root)
    return
  if re.match(r"^launch/tpu_pod\.sh", cmd):
    cmd = cmd.replace("launch/tpu_pod.sh", "launch/tpu_pod.sh --dry-run", 1)
  cmd = localize(cmd, root)
  cmd = shorten(cmd, dry=is_dry(cmd))
  r = run(cmd, root)
  workdir = re.search(r"--workdir=(\S+)", cmd)
  untrained = workdir and not os.path.isdir(os.path.join(root, workdir.group(1), "checkpoints"))
  if "syncon_jax.linear_eval" in cmd and untrained:
    # The run before it was a dry run: the probe must say so and stop, not fail otherwise.
    assert r.returncode == 2 and "holds no checkpoint" in r.stderr, f"{cmd}\n{r.stderr[-3000:]}"
    return
  assert r.returncode == 0, f"{cmd}\nexit {r.returncode}\n{r.stderr[-3000:]}"
  assert "Traceback" not in r.stderr, f"{cmd}\n{r.stderr[-3000:]}"
  LOGS[cmd] = r.stderr


def test_the_docs_hold_the_commands_users_need():
  found = [cmd for _, _, cmd in all_commands()]
  text = "\n".join(found)
  for expected in (
    "make demo",
    "make test",
    "python -m syncon_jax.main --config=configs/digits.py",
    "python -m syncon_jax.linear_eval",
    "--config.data.manual_dir=/data/birdsnap",
    "launch/tpu_pod.sh",
    "sbatch",
  ):
    assert expected in text, f"no documented command contains {expected!r}"
  # A loop is one command; a continuation line is part of its command.
  assert any(cmd.startswith("for i in 0 1; do") and "done" in cmd for cmd in found)
  assert not any(cmd.rstrip().endswith("\\") for cmd in found)


@pytest.mark.parametrize("doc", DOCS)
def test_documented_commands_work(doc, root):
  """Every command of one document, in order (later ones use what earlier ones wrote); the
  README's demo then holds what the README says a run writes."""
  cmds = commands(doc_text(doc))
  for cmd in cmds:
    check(cmd, root)
  if doc == "README.md":
    check_demo_workdir(os.path.join(root, "runs", "demo"))


def check_demo_workdir(workdir: str) -> None:
  """`make demo`'s workdir (digits, syncon with the auto scheme, :runlocal: 12 steps, logs every
  4, checkpoints at 6 and 12, keeping 2), trained and evaluated by the README's commands."""
  [train_log] = [
    log
    for cmd, log in LOGS.items()
    if "syncon_jax.main" in cmd and "--workdir=runs/demo" in cmd and "--dry_run" not in cmd
  ]

  def read_json(name):
    with open(os.path.join(workdir, name)) as f:
      return json.load(f)

  config = read_json("config.json")
  assert config["objective"]["name"] == "syncon" and config["total_steps"] == 12
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    rows = [json.loads(line) for line in f]
  assert [row["step"] for row in rows] == [4, 8, 12]
  # Throughput and utilisation (XLA's cost analysis, the CPU peak: syncon_jax/throughput.py) are
  # logged: the keys only, their values are the clock's (tests/test_throughput.py checks them
  # against a fake clock).
  assert all(math.isfinite(row["loss"]) for row in rows)
  assert all({"images_per_sec", "gflops_per_sec", "peak_share"} <= row.keys() for row in rows)
  assert "GFLOP (XLA cost analysis)" in train_log and "% of peak" in train_log
  assert "No checkpoint" in train_log and "ETA" in train_log and "img/s" in train_log
  # The auto scheme logs every class's weight and agreement, and writes the weights.
  assert all(f"agreement_nearest/{d}" in rows[-1] for d in range(10))
  weights = read_json("synthetic_weights.json")
  assert weights == {str(d): rows[-1][f"synthetic_weight/{d}"] for d in range(10)}
  assert all(0.0 <= w <= 1.0 for w in weights.values())
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["12", "6"]
  assert any(name.startswith("events.out.tfevents") for name in os.listdir(workdir))
  # The online probe and the health metrics are logged during training.
  assert {"online_probe/top1", "health/rankme", "health/alignment"} <= set(rows[-1])

  # The linear probe read the last checkpoint and wrote the contract's keys ...
  result = read_json("linear_eval.json")
  for key in ("top1", "raw_pixels_top1", "random_encoder_top1"):
    assert 0.0 <= result[key] <= 1.0
  assert result["labels_per_class"] == 10 and result["step"] == 12
  assert result["num_labelled"] == 100
  # ... and every protocol of eval.json, the report and its plots (tests/test_evaluators.py
  # checks the numbers).
  results = read_json("eval.json")
  names = ["linear", "linear_few_label", "knn", "fewshot_1", "fewshot_5", "fewshot_10"]
  for name in [*names, "fewshot_25", "finetune"]:
    for rep in ("encoder", "raw_pixels", "random_encoder"):
      assert 0.0 <= results[name][rep] <= 1.0, (name, rep)
  assert results["linear_few_label"]["encoder"] == result["top1"]
  assert results["health"]["encoder"]["rankme"] >= 1.0 and results["meta"]["step"] == 12
  assert "synthetic_to_own_prototype" in results["health"]["encoder"]
  with open(os.path.join(workdir, "eval_report.md")) as f:
    report = f.read()
  assert "| knn |" in report and "eval_map.png" in report and "eval_training.png" in report
  assert os.path.getsize(os.path.join(workdir, "eval_map.png")) > 0


PAPER = re.compile(r"--config=configs/(birdsnap|aircraft|cifake|cifar10|cifar100|flowers102)\.py")


@pytest.mark.skipif(os.path.exists("/data"), reason="this machine has a /data folder")
def test_paper_commands_as_written_say_what_data_is_missing(root):
  """The paper configs' commands with their data paths untouched: one clear line, exit 2."""
  cases = [
    cmd
    for _, _, cmd in all_commands()
    if PAPER.search(cmd) and "syncon_jax.main" in cmd and "/data" in cmd and "for " not in cmd
  ]
  assert len(cases) >= 4
  for cmd in cases:
    cmd = shorten(localize(cmd, root, data=False), dry=True)
    r = run(cmd, root)
    lines = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert r.returncode == 2, f"{cmd}\n{r.stderr[-2000:]}"
    assert "Traceback" not in r.stderr and len(lines) == 1, r.stderr
    assert "/data" in lines[0], lines[0]


def test_command_collection_rules():
  text = """
    make demo     # makes .venv
    python -m syncon_jax.main --config=configs/digits.py \\
      --config.seed=1   # a comment
    WORKDIR=/x CONFIG=y \\
      sbatch --nodes=4 launch/slurm_gpu.sbatch --config.batch_size=8
    for i in 0 1; do
      python -m syncon_jax.main --process_id=$i &
    done; wait
    tar xzf birds.tgz
  """
  assert commands(text) == [
    "make demo",
    "python -m syncon_jax.main --config=configs/digits.py --config.seed=1",
    "WORKDIR=/x CONFIG=y sbatch --nodes=4 launch/slurm_gpu.sbatch --config.batch_size=8",
    "for i in 0 1; do\npython -m syncon_jax.main --process_id=$i &\ndone; wait",
  ]
  assert shorten("python -m syncon_jax.main --config=configs/digits.py:objective=x", dry=True) == (
    "python -m syncon_jax.main --config=configs/digits.py:objective=x,runlocal --dry_run"
  )
  assert is_dry("python -m syncon_jax.main --config=configs/birdsnap.py")
  assert not is_dry("python -m syncon_jax.main --config=configs/digits.py:objective=triplet")
  assert is_dry("python -m syncon_jax.main --config=configs/digits.py:objective=triplet")
  TRAINED.discard("syncon_jax.main:triplet")
  assert shlex.split(
    localize("--workdir=/shared/runs/a --config.data.manual_dir=/data/b", "/r")
  ) == [
    "--workdir=/r/shared/runs/a",
    "--config.data.manual_dir=/r/data/b",
  ]
