r"""Pretrains an encoder: python -m syncon_jax.main --config=configs/digits.py --workdir=runs/demo

Run the same command on every host of a TPU pod or GPU cluster; see launch/ and the README.
"""

import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from syncon_jax import metrics
from syncon_jax.errors import UserError

_CONFIG = config_flags.DEFINE_config_file("config", "configs/digits.py", "Training config.")
_WORKDIR = flags.DEFINE_string("workdir", "runs/demo", "Where checkpoints, logs and metrics go.")
_COORDINATOR = flags.DEFINE_string(
  "coordinator_address", None, "host:port of process 0, for multi-process runs."
)
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Processes in a multi-process run.")
_PROCESS_ID = flags.DEFINE_integer(
  "process_id", None, "This process's index in a multi-process run."
)


def initialize_distributed() -> None:
  """Joins the multi-process runtime when the flags or the environment (TPU pod, SLURM) ask."""
  import jax

  if _COORDINATOR.value:
    # Only the CPU backend reads this; it lets CPU processes run collectives over TCP.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
      coordinator_address=_COORDINATOR.value,
      num_processes=_NUM_PROCESSES.value,
      process_id=_PROCESS_ID.value,
    )
  elif int(os.environ.get("SLURM_NTASKS", "1")) > 1 or os.environ.get("TPU_WORKER_HOSTNAMES"):
    jax.distributed.initialize()


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  metrics.quiet_library_logs()
  # TensorFlow (tf.data, TFDS) must never grab the accelerators JAX trains on.
  if "tensorflow" in sys.modules:
    sys.modules["tensorflow"].config.set_visible_devices([], "GPU")
  from syncon_jax import train

  try:
    initialize_distributed()
    train.train_and_evaluate(_CONFIG.value, _WORKDIR.value)
  except UserError as e:
    logging.error("%s", e)
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
  app.run(main)
