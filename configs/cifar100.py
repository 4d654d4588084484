r"""SupCon (or SynCon) on CIFAR-100 (TFDS cifar100, 100 fine labels), ResNet-50, CIFAR stem, 32 px.

  python -m syncon_jax.main --config=configs/cifar100.py --workdir=$RUNS/cifar100_supcon \
    --config.data.data_dir=$TFDS
  python -m syncon_jax.linear_eval --config=configs/cifar100.py --workdir=$RUNS/cifar100_supcon \
    --config.data.data_dir=$TFDS

(TFDS: the TFDS data folder, e.g. ~/tensorflow_datasets or gs://tfds-data/datasets; add
--config.data.download=True to the first command to download and prepare cifar100 there once.)

(RUNS: a folder every host sees; gs:// workdirs are not supported yet, mount a bucket with
gcsfuse and use the mount point.)

Variants, comma separated after the colon:
  objective=supcon|supcon_syn|syncon    (default supcon; the others need data.synthetic_dir)
  weighting=auto|fixed|learned|hypernet|proto_sim   (default auto)
  runlocal                              tiny model, 20 steps, for a CPU

What to compare with: SupCon with ResNet-50 (Khosla et al. 2020): 76.5% top-1.
"""

import ml_collections

from configs import common

NUM_TRAIN = 50_000
CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = common.parse_arg(arg, objective="supcon", weighting="auto", runlocal=False)
  return common.paper_config(
    arg,
    data_name="cifar100",
    num_train=NUM_TRAIN,
    epochs=1000,
    image_size=32,
    stem="cifar",
    mean=CIFAR100_MEAN,
    std=CIFAR100_STD,
  )
