"""What the paper configs share: ResNet-50, LARS at batch 1024 with warmup and cosine, SupCon-style
augmentations, the full-label linear probe, and the `runlocal` shrink for a CPU.

Each configs/<dataset>.py calls `paper_config(...)` with the facts of its data set and then sets
its own data keys. Commands are run from the repository root (configs/ is imported from there).
"""

import math

import ml_collections
from ml_collections import config_dict

from syncon_jax import objectives
from syncon_jax.errors import ConfigError

__all__ = [
  "AUGMENT_OPS",
  "IMAGENET_MEAN",
  "IMAGENET_STD",
  "objective_config",
  "paper_config",
  "optional",
  "parse_arg",
  "set_block_keys",
  "vit_config",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def optional(kind: type):
  """An unset key of type `kind` (None until given). A plain None default cannot be overridden
  from the command line (ml_collections refuses --config.KEY=... on a NoneType field); a typed
  placeholder can, and still reads as None in the code."""
  return config_dict.placeholder(kind)


def parse_arg(arg: str | None, **defaults) -> ml_collections.ConfigDict:
  """Parses 'k=v,flag' into a ConfigDict over `defaults`; a bare name sets a bool to True."""
  out = ml_collections.ConfigDict(defaults)
  for part in filter(None, (arg or "").split(",")):
    key, eq, value = part.partition("=")
    if key not in out:
      raise ConfigError(
        f"Unknown config variant {key!r} in {arg!r}; valid variants: {sorted(out.keys())}"
      )
    out[key] = value if eq else True
  return out


def objective_config(
  c: ml_collections.ConfigDict, arg: ml_collections.ConfigDict, *, block_size: int | None
) -> None:
  """Sets c.objective: the keys every objective shares, then arg.objective's own block from its
  module (objectives.configure); `arg` is the parsed variant string. Call it after c.model and
  c.augment exist: an objective's block may set keys there (BYOL's predictor and views).

  block_size: None builds the [views, views] similarity matrix; an int streams it in blocks of
  that many rows (memory linear in the global batch, see benchmarks/README.md).
  """
  c.objective = ml_collections.ConfigDict()
  c.objective.name = arg.objective
  c.objective.n_views = 2
  c.objective.temperature = 0.1
  c.objective.base_temperature = 0.1
  c.objective.block_size = config_dict.placeholder(int) if block_size is None else block_size
  objectives.configure(c, arg.objective)
  # The variant's weighting=, for the objectives that have one (SynCon).
  set_block_keys(c, weighting=arg.weighting)


def set_block_keys(c: ml_collections.ConfigDict, **values) -> None:
  """Sets each key that the chosen objective's block has (a data set's fact such as the queue
  size, a variant's value) and leaves the others: a config states its facts once for whichever
  objective it is built for."""
  block = c.objective.get(c.objective.name)
  for key, value in values.items():
    if block is not None and key in block:
      block[key] = value


def vit_config(c: ml_collections.ConfigDict, *, variant: str) -> None:
  """Adds the keys model.name='vit' reads (syncon_jax/models/vit.py); ResNets ignore them.

  variant: big_vision's '<size>/<patch>' (Ti, S, B; 'tiny' for tests), e.g. 'S/16' at 224 px.
  """
  c.model.variant = variant
  c.model.pool = "gap"  # 'gap' (mean of the tokens, big_vision's default) | 'cls' (class token)
  c.model.posemb = "learn"  # 'learn' | 'sincos2d' (fixed, MoCo v3)
  c.model.image_size = c.data.get_ref("image_size")  # the learned posemb's grid follows the data


# BYOL's projector, 4096 -> 256 (Grill et al. 2020); the other objectives keep SupCon's.
PAPER_PROJECTORS = {"byol": (4096, 256), "byol_nn": (4096, 256)}

# The augmentation pipeline, in order (names from syncon_jax.augment.OPS).
AUGMENT_OPS = ("crop", "flip", "color_jitter", "grayscale", "blur", "solarize")


def paper_config(
  arg: ml_collections.ConfigDict,
  *,
  data_name: str,
  num_train: int,
  epochs: int,
  image_size: int,
  stem: str,
  mean: tuple[float, float, float],
  std: tuple[float, float, float],
  warmup_epochs: int = 10,
) -> ml_collections.ConfigDict:
  """The shared config; `arg` is the parsed variant string (objective, weighting, runlocal).

  num_train: training images per epoch (sets total_steps from epochs at batch 1024).
  stem: 'imagenet' for 224 px photos, 'cifar' for 32 px images.
  """
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.runlocal = bool(arg.runlocal)
  c.batch_size = 1024  # global real images per step
  c.epochs = epochs
  c.total_steps = math.ceil(epochs * num_train / c.batch_size)
  c.log_every_steps = 100
  c.checkpoint_every_steps = 1000
  c.keep_checkpoints = 3

  small = stem == "cifar"
  c.data = ml_collections.ConfigDict()
  c.data.name = data_name
  # TFDS data directory, local or gs:// (None: ~/tensorflow_datasets).
  c.data.data_dir = optional(str)
  c.data.manual_dir = optional(str)  # manually downloaded sets (Birdsnap, FGVC-Aircraft, CIFAKE)
  c.data.download = False  # let a TFDS source download and prepare itself
  # None: the source's default (e.g. train+validation for Flowers).
  c.data.train_split = optional(str)
  c.data.test_split = optional(str)
  c.data.lazy = False  # True: keep files/bytes, decode the rows of each batch on access
  c.data.decode_threads = optional(int)  # None: min(8, cores)
  c.data.synthetic_dir = optional(str)  # <dir>/<class name>/*.png, for supcon_syn and syncon
  c.data.synthetic_per_real = 1
  c.data.image_size = image_size
  # The stored square the views are cropped from (evaluation: its centred image_size square):
  # photos at 8/7 of the view, ImageNet's "resize 256, crop 224"; small images as they are.
  # References, so that an image_size override (runlocal's 32 px) moves it too.
  c.data.decode_size = c.data.get_ref("image_size") * (7 if small else 8) // 7
  c.data.resize = "crop"  # "crop": shorter side to decode_size, centred square; "squash"
  c.data.mean = mean
  c.data.std = std

  c.augment = ml_collections.ConfigDict()  # syncon_jax/augment/pipeline.py
  c.augment.ops = AUGMENT_OPS
  # SupContrast's recipe: crops from 20% of a 32 px image, from 8% of a photo (SimCLR).
  c.augment.crop_scale = (0.2, 1.0) if small else (0.08, 1.0)
  c.augment.crop_ratio = (0.75, 1.3333)
  c.augment.flip = True
  c.augment.jitter_prob = 0.8
  c.augment.brightness = 0.4
  c.augment.contrast = 0.4
  c.augment.saturation = 0.4
  c.augment.hue = 0.1
  c.augment.grayscale_prob = 0.2
  c.augment.blur_prob = 0.0 if small else 0.5  # SimCLR blurs ImageNet-size images only
  c.augment.blur_sigma = (0.1, 2.0)
  c.augment.solarize_prob = 0.0
  c.augment.solarize_threshold = 0.5
  c.augment.views = ()  # per-view overrides: one {key: value} per view (BYOL_AUGMENT)

  c.model = ml_collections.ConfigDict()
  c.model.name = "resnet50"
  c.model.stem = stem
  c.model.width = 64
  # The projector of the objective's paper at ResNet-50 scale (SupCon's for the others).
  c.model.proj_hidden_dim, c.model.proj_dim = PAPER_PROJECTORS.get(arg.objective, (2048, 128))
  c.model.predictor_hidden_dim = 0  # BYOL's predictor MLP (objectives/byol.py sets it)
  c.model.dtype = "bfloat16"  # compute in bf16 on GPU/TPU; the loss stays float32
  c.model.bn_momentum = 0.9

  # Paper batches (1024 real + 1024 synthetic, 2 views: 4096 rows) stream the similarity
  # matrix in blocks, so memory grows linearly in the global batch (benchmarks/README.md).
  objective_config(c, arg, block_size=1024)

  c.optimizer = ml_collections.ConfigDict()
  c.optimizer.name = "lars"
  c.optimizer.learning_rate = 0.3 * c.batch_size / 256  # SimCLR's LARS scaling rule
  c.optimizer.momentum = 0.9
  c.optimizer.weight_decay = 1e-6
  # warmup_epochs of the run, as a share of total_steps so that a shorter run keeps it in
  # proportion (a reference: it follows --config.total_steps).
  c.optimizer.warmup_steps = c.get_ref("total_steps") * warmup_epochs // epochs
  c.optimizer.schedule = "cosine"

  # BYOL's linear evaluation: every train label, an L2-regularised multinomial logistic
  # regression on frozen, unaugmented features, L2 chosen on held-out train images.
  c.eval = ml_collections.ConfigDict()
  c.eval.labels_per_class = 0  # 0: all labelled train images
  c.eval.probe_seed = 0
  c.eval.l2_grid = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0)
  c.eval.heldout_fraction = 0.2
  c.eval.batch_size = 512
  # linear_eval's protocols (syncon_jax/evaluators/protocols.py); see configs/digits.py.
  c.eval.protocols = ("linear", "linear_few_label", "knn", "fewshot", "finetune")
  c.eval.linear_splits = 1  # one held-out split: the all-label probe is the expensive one
  # Flowers102's and Aircraft's linear-probe results are mean per-class accuracy (Kornblith et
  # al. 2019, BYOL); the others report top-1.
  c.eval.mean_per_class = data_name in ("oxford_flowers102", "aircraft")
  c.eval.raw_pixels_size = 32  # the pixel baseline of 224 px photos: 3,072 values, not 150,528
  c.eval.knn_k = 20  # DINO's weighted kNN
  c.eval.knn_temperature = 0.07
  c.eval.fewshot_shots = (1, 5, 10, 25)  # big_vision's fewshot_lsr
  c.eval.fewshot_draws = 5
  c.eval.fewshot_l2 = 2.0**10
  c.eval.fewshot_seed = 0
  c.eval.finetune_steps = 2000
  c.eval.finetune_batch_size = 256
  c.eval.finetune_learning_rate = 0.01
  c.eval.finetune_momentum = 0.9
  c.eval.finetune_weight_decay = 5e-4
  c.eval.finetune_augment = True
  c.eval.finetune_seed = 0
  c.eval.health_max_samples = 4096
  c.eval.health_seed = 0
  c.eval.map_method = "tsne"
  c.eval.map_max_points = 3000
  c.eval.online_probe = True  # logged during pretraining (evaluators/online.py)
  c.eval.online_probe_learning_rate = 0.1
  c.eval.online_health = True

  if c.runlocal:
    # Minutes on a laptop CPU: a tiny ResNet on 32 px images, a few dozen steps (total_steps
    # decides; epochs is then only what the full run would do).
    c.total_steps = 20
    c.batch_size = 16
    c.log_every_steps = 5
    c.checkpoint_every_steps = 10
    c.keep_checkpoints = 2
    c.data.image_size = 32
    c.augment.blur_prob = 0.0
    c.model.name = "resnet_tiny"
    c.model.stem = "cifar"
    c.model.width = 4
    c.model.proj_hidden_dim = 16
    c.model.proj_dim = 8
    c.model.dtype = "float32"
    c.optimizer.learning_rate = 0.3 * c.batch_size / 256
    c.optimizer.warmup_steps = 2
    c.eval.labels_per_class = 10
    c.eval.heldout_fraction = 0.3
    c.eval.batch_size = 64
    c.eval.fewshot_draws = 2
    c.eval.finetune_steps = 4
    c.eval.finetune_batch_size = 16
    c.eval.map_method = "pca"
  # ViT-S/16 on photos; 32 px images (cifar stem) take 4 px patches, 64 tokens.
  vit_config(c, variant="tiny/4" if c.runlocal else ("S/4" if small else "S/16"))
  set_block_keys(c, queue_size=64 if c.runlocal else 65536)
  return c
