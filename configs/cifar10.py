r"""SupCon (or SynCon) on CIFAR-10 (TFDS cifar10), ResNet-50 with the CIFAR stem at 32 px.

  python -m syncon_jax.main --config=configs/cifar10.py --workdir=$RUNS/cifar10_supcon \
    --config.data.data_dir=$TFDS
  python -m syncon_jax.linear_eval --config=configs/cifar10.py --workdir=$RUNS/cifar10_supcon \
    --config.data.data_dir=$TFDS

(TFDS: the TFDS data folder, e.g. ~/tensorflow_datasets or gs://tfds-data/datasets; add
--config.data.download=True to the first command to download and prepare cifar10 there once.)

(RUNS: a folder every host sees; gs:// workdirs are not supported yet, mount a bucket with
gcsfuse and use the mount point.)

Variants, comma separated after the colon:
  objective=supcon|supcon_syn|syncon    (default supcon; the others need data.synthetic_dir,
                                         <dir>/<class>/*.png with TFDS's names: airplane, ...;
                                         CIFAKE's FAKE images can serve, see configs/cifake.py)
  objective=moco|byol|byol_nn           self-supervised baselines (real images only)
  objective=simclr|triplet|supervised   baselines on real images only (stablerep and
                                        supervised_syn need data.synthetic_dir too)
  weighting=auto|fixed|learned|hypernet|proto_sim   (default auto)
  runlocal                              tiny model, 20 steps, for a CPU

What to compare with (ResNet-50, linear probe on all labels, top-1):
  SupCon (Khosla et al. 2020):                      96.0%
  SimCLR (Chen et al. 2020, CIFAR-10 linear eval):  94.0%  (objective=simclr)
"""

import ml_collections

from configs import common

NUM_TRAIN = 50_000
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = common.parse_arg(arg, objective="supcon", weighting="auto", runlocal=False)
  c = common.paper_config(
    arg,
    data_name="cifar10",
    num_train=NUM_TRAIN,
    epochs=1000,
    image_size=32,
    stem="cifar",
    mean=CIFAR10_MEAN,
    std=CIFAR10_STD,
  )
  if not c.runlocal:
    common.set_block_keys(c, queue_size=4096)  # MoCo's K on CIFAR (the MoCo authors' CIFAR demo)
  return c
