"""What the paper configs share: ResNet-50, LARS at batch 1024 with warmup and cosine, SupCon-style
augmentations, the full-label linear probe, and the `runlocal` shrink for a CPU.

Each configs/<dataset>.py calls `paper_config(...)` with the facts of its data set and then sets
its own data keys. Commands are run from the repository root (configs/ is imported from there).
"""

import copy
import math

import ml_collections
from ml_collections import config_dict

from syncon_jax.errors import ConfigError

__all__ = [
  "AUGMENT_OPS",
  "BYOL_AUGMENT",
  "IMAGENET_MEAN",
  "IMAGENET_STD",
  "momentum_config",
  "objective_config",
  "paper_config",
  "optional",
  "parse_arg",
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


def objective_config(arg: ml_collections.ConfigDict, *, block_size: int | None, total_steps):
  """The objective section every config shares; `arg` is the parsed variant string.

  block_size: None builds the [views, views] similarity matrix; an int streams it in blocks of
  that many rows (memory linear in the global batch, see benchmarks/README.md).
  total_steps: a reference to the run's length (`c.get_ref("total_steps")`): the auto scheme's
  probation is a third of it and follows a --config.total_steps override.
  """
  o = ml_collections.ConfigDict()
  o.name = arg.objective
  o.n_views = 2
  o.temperature = 0.1
  o.base_temperature = 0.1
  o.block_size = config_dict.placeholder(int) if block_size is None else block_size
  # SynCon's synthetic weights (syncon_jax/weighting.py).
  o.weighting = arg.weighting
  o.synthetic_weight = 0.5  # 'fixed': the weight; 'learned', 'hypernet': the initial weight
  # Where synthetic rows sit in SynCon's denominators (losses.SYNTHETIC_DENOMINATORS): 'all' is
  # the proposal's literal form; 'weighted' scales row u by its weight there too, so w = 0
  # equals removing the class's synthetic images (README "Few-shot: does SynCon pay?").
  o.synthetic_denominator = "all"
  # lambda sets the level the weights settle at (w_c ~ lambda / dL/dw_c, about 2 lambda here).
  o.weight_lambda = 0.25  # 'learned', 'hypernet': lambda of the -lambda * sum log w term
  o.weight_learning_rate = 0.5  # 'learned', 'hypernet': SGD step on the weights' parameters
  o.hypernet_hidden = 16
  o.hypernet_seed = 0
  o.stats_decay = 0.95  # per-class running statistics of the embeddings
  o.agreement_temperature = 0.1  # the 'soft' agreement score's softmax temperature
  o.spread_k = 2.0  # 'within': at most k real standard deviations below the real mean cosine
  o.probation_steps = total_steps // 3  # 'auto': real-only steps that measure agreement
  o.auto_score = "nearest"  # 'auto': which agreement score becomes the weight
  o.probation_ssl_weight = 1.0  # 'auto': SimCLR on synthetic images during probation
  # 'meta', 'meta_hypernet' (syncon_jax/meta_weighting.py): the meta-gradient of SupCon on the
  # real images under fresh views, through meta_unroll SGD steps of size meta_inner_lr on SynCon.
  o.meta_every = 1  # a meta-gradient every n steps (n > 1: a lax.cond, slow on XLA:CPU)
  o.meta_inner_lr = 0.1  # the lookahead's SGD step
  o.meta_unroll = 1  # lookahead steps (each adds a forward and backward pass and its second order)
  o.meta_learning_rate = 0.02  # 'meta': w moves by this times the centred, normalised gradient
  o.meta_hypernet_learning_rate = 0.5  # 'meta_hypernet': the MLP's step on the pulled-back one
  o.meta_params = "online"  # lookahead from the current parameters, or 'ema': from their EMA
  o.meta_ema_decay = 0.99  # meta_params='ema'
  # triplet (syncon_jax/objectives/triplet.py). Batch-hard: Hermans et al. 2017's mining, which
  # needs O(rows^2) memory (batch_all's O(rows^3) does not fit paper batches).
  o.triplet_mining = "batch_hard"  # batch_hard | batch_all | plain
  o.triplet_margin = 0.2  # FaceNet's margin for unit-norm embeddings (z is L2-normalised)
  o.triplet_metric = "euclidean"  # plain distance: Hermans et al. found squared less stable
  o.triplet_average = "positive"  # batch_all: mean over the triplets with a nonzero hinge
  # supervised, supervised_syn (syncon_jax/objectives/supervised.py): the linear classifier on
  # the encoder's features is trained by plain SGD in the objective's update.
  # ResNet's rate (He et al. 2016, there with momentum 0.9). Untuned: plain SGD on CE is stable
  # below about 2 * num_classes / |mean feature|^2, which a wide encoder's features may break.
  o.supervised_learning_rate = 0.1
  o.supervised_label_smoothing = 0.0  # the plain cross-entropy baseline
  # rotation (syncon_jax/objectives/rotation.py): SGD rate of its 4-way linear classifier.
  o.rotation_learning_rate = 0.1
  return o


def vit_config(c: ml_collections.ConfigDict, *, variant: str) -> None:
  """Adds the keys model.name='vit' reads (syncon_jax/models/vit.py); ResNets ignore them.

  variant: big_vision's '<size>/<patch>' (Ti, S, B; 'tiny' for tests), e.g. 'S/16' at 224 px.
  """
  c.model.variant = variant
  c.model.pool = "gap"  # 'gap' (mean of the tokens, big_vision's default) | 'cls' (class token)
  c.model.posemb = "learn"  # 'learn' | 'sincos2d' (fixed, MoCo v3)
  c.model.image_size = c.data.get_ref("image_size")  # the learned posemb's grid follows the data


BYOL_OBJECTIVES = ("byol", "byol_nn")

# The augmentation pipeline, in order (names from syncon_jax.augment.OPS).
AUGMENT_OPS = ("crop", "flip", "color_jitter", "grayscale", "blur", "solarize")

# BYOL's augmentations (Grill et al. 2020, appendix B; DeepMind's byol/utils/augmentations.py):
# the colour jitter with saturation 0.2, and two asymmetric views: always blurred and never
# solarised, or blurred one time in ten and solarised one in five. The crop, the flip and the blur
# sigma stay the data set's (BYOL's are ImageNet's).
BYOL_AUGMENT = dict(
  jitter_prob=0.8,
  brightness=0.4,
  contrast=0.4,
  saturation=0.2,
  hue=0.1,
  grayscale_prob=0.2,
  solarize_threshold=0.5,
  views=({"blur_prob": 1.0, "solarize_prob": 0.0}, {"blur_prob": 0.1, "solarize_prob": 0.2}),
)


def momentum_config(
  c: ml_collections.ConfigDict, *, queue_size: int, predictor_hidden_dim: int
) -> None:
  """Adds the keys of moco, byol and byol_nn (objectives/moco.py, byol.py) to a finished config,
  and BYOL_AUGMENT to config.augment for byol and byol_nn.

  queue_size: MoCo's K keys, and byol_nn's embedding queue (NNCLR's support set).
  predictor_hidden_dim: the width of BYOL's predictor MLP, set on model.predictor_hidden_dim when
  the objective is byol or byol_nn (0, no predictor, otherwise).
  """
  o = c.objective
  o.total_steps = c.get_ref("total_steps")  # BYOL's tau schedule; follows c.total_steps
  o.queue_size = queue_size
  o.queue_seed = 0  # MoCo's queue starts as random unit rows from this seed
  o.moco_momentum = 0.999  # MoCo v2's m
  o.moco_symmetric = True  # both views as queries (MoCo's CIFAR demo); False: MoCo v2 as published
  o.byol_tau_base = 0.996  # BYOL's tau at step 0, cosine to 1 at total_steps
  o.neighbor_source = "queue"  # byol_nn: 'queue' (NNCLR: own embeddings) | 'table' (a file)
  # byol_nn 'table': tools/nearest_neighbors' npz for the real train split.
  o.neighbors_file = optional(str)
  o.neighbor_k = 1  # 'table': use the k nearest, one drawn uniformly per image and step
  o.nn_approach = "probabilistic"  # byol_nn: 'probabilistic' | 'weighted' (the seed's two)
  o.nn_prob = 0.5  # 'probabilistic': chance that a target is the neighbour's
  o.pos_weight = 0.5  # 'weighted': weight of the image's own view in the target
  if o.name == "moco":
    o.temperature = 0.2  # MoCo v2
  c.model.predictor_hidden_dim = predictor_hidden_dim if o.name in BYOL_OBJECTIVES else 0
  if o.name in BYOL_OBJECTIVES:
    # A copy: --config.augment.views[1].KEY=... edits the view's dict in place.
    c.augment.update(copy.deepcopy(BYOL_AUGMENT))


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
  c.data.mean = mean
  c.data.std = std

  small = stem == "cifar"
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
  c.model.proj_hidden_dim = 2048
  c.model.proj_dim = 128
  c.model.dtype = "bfloat16"  # compute in bf16 on GPU/TPU; the loss stays float32
  c.model.bn_momentum = 0.9

  # Paper batches (1024 real + 1024 synthetic, 2 views: 4096 rows) stream the similarity
  # matrix in blocks, so memory grows linearly in the global batch (benchmarks/README.md).
  c.objective = objective_config(arg, block_size=1024, total_steps=c.get_ref("total_steps"))

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
  if arg.objective in BYOL_OBJECTIVES and not c.runlocal:
    c.model.proj_hidden_dim = 4096  # BYOL's projector: 4096 -> 256
    c.model.proj_dim = 256
  momentum_config(
    c, queue_size=64 if c.runlocal else 65536, predictor_hidden_dim=16 if c.runlocal else 4096
  )
  return c
