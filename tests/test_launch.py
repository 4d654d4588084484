"""launch/: the shell scripts pass shellcheck, tpu_pod.sh prints (and runs) the right gcloud
commands, slurm_gpu.sbatch hands its arguments to srun, and the Colab notebook runs top to
bottom on the runlocal config."""

import json
import os
import shlex
import stat
import subprocess
import sys

import pytest
from conftest import REPO

TPU_POD = os.path.join(REPO, "launch", "tpu_pod.sh")
SLURM = os.path.join(REPO, "launch", "slurm_gpu.sbatch")
NOTEBOOK = os.path.join(REPO, "launch", "colab.ipynb")
# An argument a shell would split or unquote if the scripts quoted it wrong.
AWKWARD = "--config.data.synthetic_dir=/data/it's a dir/$HOME"


@pytest.mark.parametrize("script", [TPU_POD, SLURM], ids=os.path.basename)
def test_shellcheck(script):
  shellcheck = os.path.join(os.path.dirname(sys.executable), "shellcheck")
  r = subprocess.run([shellcheck, script], capture_output=True, text=True)
  assert r.returncode == 0, r.stdout + r.stderr


def _recorder(directory, name: str) -> str:
  """An executable `name` in `directory` that appends its argv as a JSON line to <name>.calls."""
  path = os.path.join(directory, name)
  with open(path, "w") as f:
    f.write(
      f"#!{sys.executable}\n"
      "import json, os, sys\n"
      f"with open({path + '.calls'!r}, 'a') as f:\n"
      "  f.write(json.dumps(sys.argv[1:]) + '\\n')\n"
    )
  os.chmod(path, os.stat(path).st_mode | stat.S_IEXEC)
  return path + ".calls"


def _calls(path: str) -> list[list[str]]:
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f]


def _tpu_pod(tmp_path, *args: str):
  """Runs tpu_pod.sh with a recording `gcloud` first on PATH -> (result, gcloud calls)."""
  calls = _recorder(tmp_path, "gcloud")
  env = dict(os.environ, PATH=f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
  r = subprocess.run(["bash", TPU_POD, *args], capture_output=True, text=True, env=env)
  return r, _calls(calls)


BASE = [
  "--name=syncon-v4",
  "--zone=us-central2-b",
  "--workdir=/mnt/shared/run 1",
  "--repo=https://example.com/syncon_jax.git",
  "--ref=0123abcd",
]
MAIN_ARGS = ["--config=configs/digits.py:runlocal", AWKWARD]
SSH = ["compute", "tpus", "tpu-vm", "ssh", "syncon-v4", "--zone=us-central2-b", "--worker=all"]


def test_tpu_pod_dry_run_prints_the_commands_and_runs_nothing(tmp_path):
  r, calls = _tpu_pod(tmp_path, "--dry-run", *BASE, "--", *MAIN_ARGS)
  assert r.returncode == 0, r.stderr
  assert calls == []  # gcloud never ran
  lines = [shlex.split(line) for line in r.stdout.splitlines()]
  assert len(lines) == 3, r.stdout
  create, install, train = lines
  assert create == [
    "gcloud",
    "compute",
    "tpus",
    "tpu-vm",
    "create",
    "syncon-v4",
    "--zone=us-central2-b",
    "--accelerator-type=v4-32",
    "--version=tpu-ubuntu2204-base",
  ]
  for line in (install, train):
    assert line[:-2] == ["gcloud", *SSH] and line[-2] == "--command"

  # What each worker's shell runs, split as that shell would.
  steps = install[-1].split(" && ")
  assert "git clone https://example.com/syncon_jax.git syncon_jax; }" in steps[2]
  assert steps[4:6] == ["git fetch --quiet origin 0123abcd", "git checkout --quiet FETCH_HEAD"]
  assert "uv venv --python 3.11 .venv" in steps[-2]
  assert shlex.split(steps[-1]) == [
    *"uv pip install --quiet --python .venv/bin/python -e".split(),
    ".[tpu]",
  ]
  worker = shlex.split(train[-1])
  assert worker == [
    "cd",
    "syncon_jax",
    "&&",
    ".venv/bin/python",
    "-m",
    "syncon_jax.main",
    "--workdir=/mnt/shared/run 1",
    *MAIN_ARGS,
  ]


def test_tpu_pod_runs_what_the_dry_run_prints(tmp_path):
  args = [*BASE, "--project=my-proj", "--accelerator=v5litepod-16", "--spot", "--", *MAIN_ARGS]
  (tmp_path / "dry").mkdir()
  dry, _ = _tpu_pod(tmp_path / "dry", "--dry-run", *args)
  r, calls = _tpu_pod(tmp_path, *args)
  assert r.returncode == 0, r.stderr
  printed = [shlex.split(line)[1:] for line in dry.stdout.splitlines()]
  assert calls == printed
  assert calls[0][-4:] == [
    "--project=my-proj",
    "--accelerator-type=v5litepod-16",
    "--version=tpu-ubuntu2204-base",
    "--spot",
  ]
  assert all("--project=my-proj" in call for call in calls)


@pytest.mark.parametrize(
  "flags, commands",
  [(["--skip-create"], 2), (["--skip-install"], 2), (["--skip-create", "--skip-install"], 1)],
)
def test_tpu_pod_skips(tmp_path, flags, commands):
  r, calls = _tpu_pod(tmp_path, *BASE, *flags)
  assert r.returncode == 0, r.stderr
  assert len(calls) == commands
  assert ("create" in calls[0]) == ("--skip-create" not in flags)
  assert shlex.split(calls[-1][-1])[-1] == "--workdir=/mnt/shared/run 1"


def test_tpu_pod_checks_out_this_commit_by_default(tmp_path):
  head = subprocess.run(
    ["git", "-C", REPO, "rev-parse", "HEAD"], capture_output=True, text=True, check=True
  ).stdout.strip()
  r, _ = _tpu_pod(tmp_path, "--dry-run", *BASE[:-1])
  assert r.returncode == 0, r.stderr
  assert f"git fetch --quiet origin {head} && git checkout --quiet FETCH_HEAD" in r.stdout


@pytest.mark.parametrize("missing", ["--name", "--zone", "--workdir"])
def test_tpu_pod_requires_name_zone_workdir(tmp_path, missing):
  args = [a for a in BASE if not a.startswith(missing + "=")]
  r, calls = _tpu_pod(tmp_path, *args)
  assert r.returncode == 2 and calls == []
  assert f"{missing} is required" in r.stderr and "usage:" in r.stderr


def test_tpu_pod_rejects_unknown_options(tmp_path):
  r, calls = _tpu_pod(tmp_path, *BASE, "--zones=typo")
  assert r.returncode == 2 and calls == [] and "unknown option --zones=typo" in r.stderr


def _sbatch_options() -> dict[str, str]:
  with open(SLURM) as f:
    lines = [line.split(None, 1)[1].strip() for line in f if line.startswith("#SBATCH")]
  return dict((*line.lstrip("-").split("=", 1), "")[:2] for line in lines)  # --requeue -> ""


def test_slurm_script_hands_its_arguments_to_srun(tmp_path):
  options = _sbatch_options()
  assert options["ntasks-per-node"] == options["gpus-per-node"]  # one process per GPU
  calls = _recorder(tmp_path, "srun")
  env = dict(
    os.environ,
    PATH=f"{tmp_path}{os.pathsep}{os.environ['PATH']}",
    WORKDIR="/shared/runs/a b",
    CONFIG="configs/digits.py:runlocal",
    SLURM_SUBMIT_DIR=REPO,
    SLURM_CPUS_PER_TASK="6",
  )
  r = subprocess.run(["bash", SLURM, AWKWARD], capture_output=True, text=True, env=env)
  assert r.returncode == 0, r.stderr
  assert _calls(calls) == [
    [
      "--kill-on-bad-exit=1",
      "--cpus-per-task=6",
      ".venv/bin/python",
      "-m",
      "syncon_jax.main",
      "--config=configs/digits.py:runlocal",
      "--workdir=/shared/runs/a b",
      AWKWARD,
    ]
  ]
  env.pop("WORKDIR")
  r = subprocess.run(["bash", SLURM], capture_output=True, text=True, env=env)
  assert r.returncode != 0 and "set WORKDIR" in r.stderr


# ----------------------------------------------------------------------------------------------
# The notebook.


def test_colab_notebook_runs_top_to_bottom(tmp_path):
  import nbformat
  from nbclient import NotebookClient

  nb = nbformat.read(NOTEBOOK, as_version=4)
  tags = [cell.metadata.get("tags", []) for cell in nb.cells]
  assert sum("install" in t for t in tags) == 1
  # This checkout is installed already: drop the install cell, and shrink the run.
  nb.cells = [cell for cell, t in zip(nb.cells, tags, strict=True) if "install" not in t]
  at = next(i for i, cell in enumerate(nb.cells) if "parameters" in cell.metadata.get("tags", []))
  workdir, synthetic = str(tmp_path / "run"), str(tmp_path / "synthetic")
  nb.cells.insert(
    at + 1,
    nbformat.v4.new_code_cell(
      f"RUNLOCAL = True\nWORKDIR = {workdir!r}\nSYNTHETIC_DIR = {synthetic!r}\nPER_CLASS = 8"
    ),
  )
  NotebookClient(
    nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": REPO}}
  ).execute()

  with open(os.path.join(workdir, "linear_eval.json")) as f:
    result = json.load(f)
  assert result["step"] == 12 and 0.0 <= result["top1"] <= 1.0
  assert sorted(os.listdir(synthetic)) == [*map(str, range(10)), "metadata.jsonl"]
  images = {
    tag: [o for o in cell.outputs if "image/png" in o.get("data", {})]
    for cell in nb.cells
    for tag in cell.metadata.get("tags", [])
    if tag in ("loss_curve", "weights")
  }
  assert len(images["loss_curve"]) == 1 and len(images["weights"]) == 1
  text = "".join(o.get("text", "") for cell in nb.cells for o in cell.get("outputs", []))
  assert "JAX devices: [CpuDevice(id=0)]" in text and "top1" in text
