r"""Pretrains an encoder: python -m syncon_jax.main --config=configs/digits.py --workdir=runs/demo

  --config=FILE[:VARIANTS]   a config file, variants after a colon, comma separated:
                             configs/digits.py:objective=supcon_syn,runlocal (each config's
                             docstring lists its variants)
  --config.KEY=VALUE         overrides any key, e.g. --config.objective.temperature=0.07,
                             --config.data.synthetic_dir=/data/syn (keys: the config file and
                             configs/common.py; DESIGN.md "Configs")
  --dry_run                  resolve and check the config, print it, train nothing

Objectives (objective= as a variant: it also sets the objective's own keys, config.objective.<name>)
and SynCon's weighting schemes (weighting= as a variant, or --config.objective.syncon.weighting)
are listed under --config in --helpshort; README.md explains each.

A stopped run resumes from <workdir>/checkpoints when the same command runs again.
Run the same command on every host of a TPU pod or GPU cluster; see launch/ and the README section "Scaling out".
The process joins a multi-process run when the flags --coordinator_address, --num_processes and
--process_id ask for one, under SLURM with more than one task (srun), or on a Cloud TPU VM.
"""

import glob
import os
import sys
from collections.abc import Mapping
from typing import Any

from absl import flags, logging
from ml_collections import config_flags

from syncon_jax import cli, platform
from syncon_jax.errors import ConfigError, exit_on_user_error

FLAGS = flags.FLAGS


def define_flags() -> None:
  """The command line. Defined only when this module runs as the program, so that importing it
  (tests do) defines no absl flags to clash with linear_eval's --config and --workdir."""
  from syncon_jax import objectives, weighting

  config_flags.DEFINE_config_file(
    "config",
    "configs/digits.py",
    f"{cli.CONFIG_HELP} Objectives: {', '.join(sorted(objectives.OBJECTIVES))}. Weighting "
    f"schemes (syncon): {', '.join(sorted(weighting.SCHEMES))}.",
  )
  flags.DEFINE_string(
    "workdir", "runs/demo", "Where checkpoints, logs and metrics go (a POSIX path every host sees)."
  )
  flags.DEFINE_bool(
    "dry_run",
    False,
    "Resolve the config (file, variants, overrides), check every name and path, print the "
    "resolved config and exit 0 without loading data or compiling; exit 2 on a mistake.",
  )
  flags.DEFINE_string(
    "coordinator_address", None, "host:port of process 0, for multi-process runs."
  )
  flags.DEFINE_integer("num_processes", None, "Processes in a multi-process run.")
  flags.DEFINE_integer("process_id", None, "This process's index in a multi-process run.")


# The variables jax.distributed reads under SLURM; srun sets the step ones, so a plain `python`
# inside an sbatch script (one process) is not mistaken for a multi-process run.
SLURM_VARIABLES = (
  "SLURM_JOB_ID",
  "SLURM_STEP_NODELIST",
  "SLURM_NTASKS",
  "SLURM_PROCID",
  "SLURM_LOCALID",
)
# Set by GKE on TPU slices: the slice's hosts, comma separated.
TPU_HOSTS_VARIABLES = ("TPU_PROCESS_ADDRESSES", "TPU_WORKER_HOSTNAMES")


def on_cloud_tpu_vm() -> bool:
  """Whether TPU chips are attached: /dev/accel* (TPU v2-v4) or /dev/vfio/<n> (v5 and later)."""
  return bool(glob.glob("/dev/accel*") or glob.glob("/dev/vfio/[0-9]*"))


def distributed_setup(
  coordinator_address: str | None,
  num_processes: int | None,
  process_id: int | None,
  environ: Mapping[str, str],
  tpu_vm: bool,
) -> tuple[str, dict[str, Any]] | None:
  """How this process joins a multi-process run, or None when it runs alone.

  Returns (source, kwargs for jax.distributed.initialize): source is 'flags' (the three flags,
  which win over the environment), 'slurm' (srun with more than one task) or 'tpu' (a Cloud TPU
  VM or a GKE TPU slice); for the last two jax reads the rest from the environment.
  """
  given = {
    "--coordinator_address": coordinator_address,
    "--num_processes": num_processes,
    "--process_id": process_id,
  }
  if any(v is not None for v in given.values()):
    missing = [name for name, v in given.items() if v is None]
    if missing:
      raise ConfigError(
        "--coordinator_address, --num_processes and --process_id go together; missing: "
        + ", ".join(missing)
      )
    if num_processes < 1 or not 0 <= process_id < num_processes:
      raise ConfigError(
        f"--process_id={process_id} must lie in [0, --num_processes={num_processes})."
      )
    return "flags", {
      "coordinator_address": coordinator_address,
      "num_processes": num_processes,
      "process_id": process_id,
    }
  if all(v in environ for v in SLURM_VARIABLES) and int(environ["SLURM_NTASKS"]) > 1:
    return "slurm", {}
  if tpu_vm or any(len(environ.get(v, "").split(",")) > 1 for v in TPU_HOSTS_VARIABLES):
    return "tpu", {}
  return None


def initialize_distributed(
  coordinator_address: str | None = None,
  num_processes: int | None = None,
  process_id: int | None = None,
) -> None:
  """Joins the multi-process runtime when the flags or the environment (TPU pod, SLURM) ask."""
  import jax

  setup = distributed_setup(
    coordinator_address, num_processes, process_id, os.environ, on_cloud_tpu_vm()
  )
  if setup is None:
    return
  source, kwargs = setup
  # The CPU backend has no cross-process collectives of its own; gloo runs them over TCP.
  # Accelerator backends ignore the setting.
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  try:
    jax.distributed.initialize(**kwargs)
  except ValueError as e:
    if source != "tpu":
      raise
    # A TPU VM that is not part of a slice jax can discover (one host, or Colab): the TPU runtime
    # still sees every local chip, so one process is right.
    logging.warning("No TPU slice to join (%s); running as a single process.", e)
    return
  logging.info(
    "Process %d of %d (%s): %d local devices, %d in all.",
    jax.process_index(),
    jax.process_count(),
    source,
    jax.local_device_count(),
    jax.device_count(),
  )
  if jax.process_index() != 0:
    # Every host runs the same loop; process 0 alone reports it (warnings still show everywhere).
    logging.set_verbosity(logging.WARNING)


def main(argv) -> None:
  if len(argv) > 1:
    cli.fail(f"unexpected arguments {argv[1:]}: flags take the form --name=value (see --helpshort)")
  platform.start_jax_program()
  if FLAGS.dry_run:
    from syncon_jax import validate

    with exit_on_user_error():
      validate.check_config(FLAGS.config, workdir=FLAGS.workdir)
    for sentence in validate.phase_warnings(FLAGS.config):
      print(f"warning: {sentence}", file=sys.stderr)
    cli.print_config(FLAGS.config)
    return
  # TensorFlow (tf.data, TFDS) must never grab the accelerators JAX trains on.
  if "tensorflow" in sys.modules:
    sys.modules["tensorflow"].config.set_visible_devices([], "GPU")
  from syncon_jax import train

  with exit_on_user_error():
    initialize_distributed(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id)
    train.train_and_evaluate(FLAGS.config, FLAGS.workdir)


if __name__ == "__main__":
  cli.run(main, define_flags)
