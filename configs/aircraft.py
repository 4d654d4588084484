r"""SynCon on FGVC-Aircraft 2013b (102 variants), ResNet-50 at 224 px from scratch.

FGVC-Aircraft is a manual download (2.75 GB):

  wget https://www.robots.ox.ac.uk/~vgg/data/fgvc-aircraft/archives/fgvc-aircraft-2013b.tar.gz
  tar xzf fgvc-aircraft-2013b.tar.gz

Run (synthetic images: <dir>/<variant>/*.png, e.g. "737-700/0001.png"):

  python -m syncon_jax.main --config=configs/aircraft.py --workdir=$RUNS/aircraft_syncon \
    --config.data.manual_dir=/data --config.data.synthetic_dir=/data/aircraft_dalle
  python -m syncon_jax.linear_eval --config=configs/aircraft.py --workdir=$RUNS/aircraft_syncon \
    --config.data.manual_dir=/data

(RUNS: a folder every host sees; gs:// workdirs are not supported yet, mount a bucket with
gcsfuse and use the mount point.)

Variants, comma separated after the colon:
  objective=supcon|supcon_syn|syncon    (default syncon; supcon needs no synthetic_dir)
  weighting=auto|fixed|learned|hypernet|proto_sim   (default auto)
  level=variant|family|manufacturer     data.label_level (default variant: 102 classes)
  runlocal                              tiny model, 32 px, 20 steps, for a CPU

Trains on trainval (6,667 images), probes on test (3,333), the copyright banner cut off.

What to compare with: BYOL (Grill et al. 2020) reports 60.6% for a linear probe on
Aircraft over a ResNet-50 pretrained with BYOL on ImageNet, as mean per-class
accuracy (following Kornblith et al. 2019); linear_eval.json reports top-1 over test images
(close here: the classes are balanced), eval.json's `linear` both (headline: mean_per_class).
This config pretrains on Aircraft only, so expect less; compare the objectives with each other.
"""

import ml_collections

from configs import common

NUM_TRAIN = 6_667  # trainval


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = common.parse_arg(arg, objective="syncon", weighting="auto", level="variant", runlocal=False)
  c = common.paper_config(
    arg,
    data_name="aircraft",
    num_train=NUM_TRAIN,
    epochs=1000,
    image_size=224,
    stem="imagenet",
    mean=common.IMAGENET_MEAN,
    std=common.IMAGENET_STD,
  )
  c.data.label_level = arg.level
  c.data.train_split = "trainval"
  c.data.test_split = "test"
  return c
