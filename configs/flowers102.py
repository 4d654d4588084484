r"""SynCon on Oxford Flowers-102 (TFDS oxford_flowers102), ResNet-50 at 224 px from scratch.

The data comes from TFDS (train+validation: 2,040 images to train on, test: 6,149):

  $TFDS: the TFDS data folder, e.g. ~/tensorflow_datasets or gs://tfds-data/datasets; add
  --config.data.download=True to the first command below to download and prepare it there once.

Run (synthetic images: <dir>/<flower name>/*.png, names as TFDS has them, e.g. "pink primrose"):

  python -m syncon_jax.main --config=configs/flowers102.py --workdir=$RUNS/flowers_syncon \
    --config.data.synthetic_dir=/data/flowers_dalle --config.data.data_dir=$TFDS
  python -m syncon_jax.linear_eval --config=configs/flowers102.py --workdir=$RUNS/flowers_syncon \
    --config.data.data_dir=$TFDS

(RUNS: a folder every host sees; gs:// workdirs are not supported yet, mount a bucket with
gcsfuse and use the mount point.)

Variants, comma separated after the colon:
  objective=supcon|supcon_syn|syncon    (default syncon; supcon needs no synthetic_dir)
  weighting=auto|fixed|learned|hypernet|proto_sim   (default auto)
  runlocal                              tiny model, 32 px, 20 steps, for a CPU

What to compare with: BYOL (Grill et al. 2020) reports 96.1% for a linear probe on
Flowers over a ResNet-50 pretrained with BYOL on ImageNet, as mean per-class
accuracy (following Kornblith et al. 2019); linear_eval.json reports top-1 over test images,
which for Flowers' unbalanced test set is a different number; eval.json's `linear` reports both
(headline: mean_per_class). This config pretrains on 2,040 flower
images only, so expect far less; compare the objectives with each other.
"""

import ml_collections

from configs import common

NUM_TRAIN = 2_040  # train + validation


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = common.parse_arg(arg, objective="syncon", weighting="auto", runlocal=False)
  return common.paper_config(
    arg,
    data_name="oxford_flowers102",
    num_train=NUM_TRAIN,
    epochs=1000,
    image_size=224,
    stem="imagenet",
    mean=common.IMAGENET_MEAN,
    std=common.IMAGENET_STD,
  )
