r"""CIFAKE: CIFAR-10 photos (REAL) and their Stable Diffusion 1.4 counterparts (FAKE), 32 px.

The data of the StableRep CIFAKE replication (shared/seeds/stablerep-cifake-replication.md),
a manual download from Kaggle:

  kaggle datasets download -d birdy654/cifake-real-and-ai-generated-synthetic-images
  unzip cifake-real-and-ai-generated-synthetic-images.zip -d /data/cifake

Run:

  python -m syncon_jax.main --config=configs/cifake.py --workdir=$RUNS/cifake_supcon \
    --config.data.manual_dir=/data/cifake
  python -m syncon_jax.linear_eval --config=configs/cifake.py --workdir=$RUNS/cifake_supcon \
    --config.data.manual_dir=/data/cifake

(RUNS: a folder every host sees; gs:// workdirs are not supported yet, mount a bucket with
gcsfuse and use the mount point.)

Variants, comma separated after the colon:
  task=cifar10|real_fake      the CIFAR-10 class from the file names (default), or REAL vs FAKE
  train=REAL|FAKE|both        the images to pretrain on (test: REAL for cifar10, both for
                              real_fake). train=FAKE,task=cifar10 is train-on-synthetic,
                              test-on-real, the replication's question.
  objective=supcon|supcon_syn|syncon   (default supcon). For SynCon with FAKE as the synthetic
                              support set of the REAL images, link FAKE into class folders:
                                python -c "from syncon_jax.data import cifake; \
                                  cifake.export_class_folders('/data/cifake', '/data/cifake_fake')"
                              then --config.data.synthetic_dir=/data/cifake_fake.
  weighting=auto|fixed|learned|hypernet|proto_sim   (default auto)
  runlocal                    tiny model, 20 steps, for a CPU

What to compare with: the replication found classifiers trained on REAL beat those trained on
FAKE when tested on REAL, with a CNN and a ViT; it states no number for this protocol. The
same encoder on CIFAR-10 (configs/cifar10.py) reaches 96.0% with SupCon (Khosla et al. 2020).
"""

import ml_collections

from configs import common
from syncon_jax.errors import ConfigError

NUM_TRAIN = {"REAL": 50_000, "FAKE": 50_000, "both": 100_000}
# CIFAKE's REAL images are CIFAR-10's; its statistics serve both halves.
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = common.parse_arg(
    arg, objective="supcon", weighting="auto", task="cifar10", train="REAL", runlocal=False
  )
  if arg.train not in NUM_TRAIN:
    raise ConfigError(f"Unknown variant train={arg.train!r}; valid: {sorted(NUM_TRAIN)}")
  c = common.paper_config(
    arg,
    data_name="cifake",
    num_train=NUM_TRAIN[arg.train],
    epochs=1000,
    image_size=32,
    stem="cifar",
    mean=CIFAR10_MEAN,
    std=CIFAR10_STD,
  )
  c.data.task = arg.task
  c.data.train_sources = ("REAL", "FAKE") if arg.train == "both" else (arg.train,)
  c.data.test_sources = ("REAL",) if arg.task == "cifar10" else ("REAL", "FAKE")
  return c
