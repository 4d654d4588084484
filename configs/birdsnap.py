r"""SynCon on Birdsnap 1.1 (500 North American bird species), ResNet-50 at 224 px from scratch.

Birdsnap is a manual download (see syncon_jax/data/birdsnap.py, or the error message):

  wget http://thomasberg.org/datasets/birdsnap/1.1/birdsnap.tgz && tar xzf birdsnap.tgz
  (cd birdsnap && python get_birdsnap.py)     # Flickr images; dead URLs are skipped

Run (synthetic images: <dir>/<common name>/*.png, e.g. "Black-footed Albatross/0001.png"):

  python -m syncon_jax.main --config=configs/birdsnap.py --workdir=$RUNS/birdsnap_syncon \
    --config.data.manual_dir=/data/birdsnap --config.data.synthetic_dir=/data/birdsnap_dalle
  python -m syncon_jax.linear_eval --config=configs/birdsnap.py --workdir=$RUNS/birdsnap_syncon \
    --config.data.manual_dir=/data/birdsnap

(RUNS: a folder every host sees; gs:// workdirs are not supported yet, mount a bucket with
gcsfuse and use the mount point.)

Variants, comma separated after the colon:
  objective=supcon|supcon_syn|syncon    (default syncon; supcon needs no synthetic_dir)
  weighting=auto|fixed|learned|hypernet|proto_sim   (default auto)
  runlocal                              tiny model, 32 px, 20 steps, for a CPU

What to compare with: BYOL (Grill et al. 2020) reports 57.2% top-1 for a linear probe on
Birdsnap over a ResNet-50 pretrained with BYOL on ImageNet. That encoder saw 1.28M ImageNet
images; this config pretrains on Birdsnap's ~47k training images only, so expect less. What
matters here is the gap between objective=supcon, supcon_syn and syncon under the same
protocol. Birdsnap copies differ (Flickr links die): report the image counts the loader logs.
"""

import ml_collections

from configs import common

NUM_TRAIN = 47_386  # 49,829 listed minus 2,443 test images; fewer once dead links are skipped


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = common.parse_arg(arg, objective="syncon", weighting="auto", runlocal=False)
  c = common.paper_config(
    arg,
    data_name="birdsnap",
    num_train=NUM_TRAIN,
    epochs=500,
    image_size=224,
    stem="imagenet",
    mean=common.IMAGENET_MEAN,
    std=common.IMAGENET_STD,
  )
  # ~47k photos stored at 256 px are 9 GB decoded on every host: decode the batch's rows on
  # access.
  c.data.lazy = True
  return c
