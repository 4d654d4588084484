r"""SynCon on scikit-learn's handwritten digits with rendered synthetic digits: the demo.

Run (what `make demo` does):

  python -m syncon_jax.tools.render_digits --out=runs/synthetic_digits
  python -m syncon_jax.main --config=configs/digits.py --workdir=runs/demo
  python -m syncon_jax.linear_eval --config=configs/digits.py --workdir=runs/demo

Variants, comma separated after the colon:
  objective=supcon|supcon_syn|syncon    (default syncon)
  objective=simclr|triplet|supervised   baselines on the real digits only
  objective=stablerep|supervised_syn    baselines on the synthetic digits (StableRep: only
                                        those, grouped by prompt) or on real + synthetic
  objective=moco|byol|byol_nn           self-supervised baselines on the real digits only
                                        (byol_nn: NNCLR-style queue neighbours by default; with
                                        --config.objective.byol_nn.neighbor_source=table
                                        --config.objective.byol_nn.neighbors_file=runs/latent_vae/nn.npz
                                        neighbours from a latent model, see syncon_jax/latent)
  objective=rotation                    rotation prediction (Gidaris et al. 2018) on the real digits
  objective=align_uniform               alignment and uniformity (Wang and Isola 2020), real digits
  weighting=auto|fixed|learned|hypernet|proto_sim|meta|meta_hypernet
                                        (default auto; see syncon_jax/weighting.py)
  fewshot                               the few-shot regime (data.real_per_class labelled
                                        real images per class; README "Few-shot: does SynCon
                                        pay?"), its recipe and its experiment
  runlocal                              a few dozen steps on a tiny model, for tests

  python -m syncon_jax.main --config=configs/digits.py:objective=supcon,runlocal --workdir=/tmp/x

Any objective with a ViT encoder instead of the ResNet: --config.model.name=vit (model.variant
'Ti/4' here, 'tiny/4' under runlocal; model.pool gap|cls; see syncon_jax/models/vit.py).
"""

import ml_collections

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = common.parse_arg(arg, objective="syncon", weighting="auto", runlocal=False, fewshot=False)
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.runlocal = bool(arg.runlocal)
  c.total_steps = 300
  c.batch_size = 128  # global real images per step
  c.log_every_steps = 25
  c.checkpoint_every_steps = 100
  c.keep_checkpoints = 2

  c.data = ml_collections.ConfigDict()
  c.data.name = "digits"
  c.data.data_dir = common.optional(str)
  c.data.manual_dir = common.optional(str)
  c.data.synthetic_dir = "runs/synthetic_digits"
  c.data.synthetic_per_real = 1
  # What tools/render_digits draws into synthetic_dir (make demo, make experiment): the classes
  # whose folder gets another digit's renders ('swap') or noise ('noise'), both on different
  # classes ('both': the first half of the list swapped, the rest noise), or all of them one
  # digit, the lowest class not listed ('collapse').
  c.data.corrupt_classes = ()
  c.data.corruption = "swap"
  # sklearn digits are 8x8: 16 px keeps every source pixel and costs a quarter of 32 px.
  c.data.image_size = 16
  c.data.test_fraction = 0.3
  c.data.split_seed = 0
  # The few-shot regime: k labelled real train images per class (0: all of them) are all that
  # pretraining and the probe see; the rest of the train split is the validation pool, which only
  # measures utility and selects hyperparameters. Drawn by real_subset_seed (None: the run's
  # seed, so every seed of an experiment draws its own k).
  c.data.real_per_class = 0
  c.data.real_subset_seed = common.optional(int)
  # Synthetic class folders left out of this run (recorded by tools/experiment; not read).
  c.data.removed_classes = ()
  c.data.mean = (0.5, 0.5, 0.5)
  c.data.std = (0.5, 0.5, 0.5)

  c.augment = ml_collections.ConfigDict()  # syncon_jax/augment/pipeline.py
  c.augment.ops = common.AUGMENT_OPS
  c.augment.crop_scale = (0.5, 1.0)
  c.augment.crop_ratio = (0.75, 1.3333)
  c.augment.flip = False  # digits must not flip
  c.augment.jitter_prob = 0.8
  c.augment.brightness = 0.4
  c.augment.contrast = 0.4
  c.augment.saturation = 0.4
  c.augment.hue = 0.1
  c.augment.grayscale_prob = 0.2
  c.augment.blur_prob = 0.5
  c.augment.blur_sigma = (0.1, 1.0)
  c.augment.solarize_prob = 0.0
  c.augment.solarize_threshold = 0.5
  c.augment.views = ()  # per-view overrides (byol, byol_nn: objectives/byol.py's AUGMENT)

  c.model = ml_collections.ConfigDict()
  c.model.name = "resnet18"
  c.model.stem = "cifar"
  c.model.width = 8  # XLA:CPU convolutions are slow; width 8 keeps make demo to minutes
  c.model.proj_hidden_dim = 256
  c.model.proj_dim = 64
  c.model.dtype = "float32"  # 'bfloat16' computes in bf16; the loss stays float32
  c.model.bn_momentum = 0.9
  c.model.predictor_hidden_dim = 0  # BYOL's predictor MLP (objectives/byol.py sets it)

  # Small batches: the dense [views, views] similarity matrix is cheapest.
  common.objective_config(c, arg, block_size=None)

  c.optimizer = ml_collections.ConfigDict()
  c.optimizer.name = "sgd"  # sgd | lars | adamw
  c.optimizer.learning_rate = 0.5  # peak, for batch_size real images
  c.optimizer.momentum = 0.9
  c.optimizer.weight_decay = 1e-4
  # A fifteenth of the run (20 of 300 steps); a reference, so it follows --config.total_steps.
  c.optimizer.warmup_steps = c.get_ref("total_steps") // 15
  c.optimizer.schedule = "cosine"

  c.eval = ml_collections.ConfigDict()
  c.eval.labels_per_class = 10  # few-label probe: labelled real train images per class
  c.eval.probe_seed = 0
  c.eval.l2_grid = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0)
  c.eval.heldout_fraction = 0.3  # of the labelled images, to choose L2
  c.eval.batch_size = 256
  # linear_eval's protocols (syncon_jax/evaluators/protocols.py), each on the encoder, raw pixels
  # and a random encoder; written to <workdir>/eval.json and eval_report.md.
  c.eval.protocols = ("linear", "linear_few_label", "knn", "fewshot", "finetune")
  c.eval.linear_splits = 3  # held-out splits that choose the probes' L2
  c.eval.mean_per_class = False  # headline of `linear`: mean per-class accuracy, not top-1
  c.eval.raw_pixels_size = 0  # raw-pixel baseline resized to this side (0: as loaded)
  c.eval.knn_k = 20  # DINO's weighted kNN
  c.eval.knn_temperature = 0.07
  c.eval.fewshot_shots = (1, 5, 10, 25)  # big_vision's fewshot_lsr
  c.eval.fewshot_draws = 5
  c.eval.fewshot_l2 = 2.0**10  # big_vision's default ridge strength
  c.eval.fewshot_seed = 0
  c.eval.finetune_steps = 50  # whole network, a short schedule: 5 epochs of the 1,257 digits
  c.eval.finetune_batch_size = 128
  c.eval.finetune_learning_rate = 0.05
  c.eval.finetune_momentum = 0.9
  c.eval.finetune_weight_decay = 5e-4
  c.eval.finetune_augment = True  # config.augment on the labelled images
  c.eval.finetune_seed = 0
  c.eval.health_max_samples = 2048  # test (and synthetic) rows the health metrics read
  c.eval.health_seed = 0
  c.eval.map_method = "tsne"  # tsne | pca: eval_map.png
  c.eval.map_max_points = 2000
  # Logged during pretraining: a linear probe on stop-gradient features (its own SGD) and the
  # health metrics (evaluators/online.py).
  c.eval.online_probe = True
  c.eval.online_probe_learning_rate = 0.1
  c.eval.online_health = True

  # make experiment (syncon_jax/tools/experiment.py): every method x seed on renders with bad
  # classes; methods are objective names, or syncon-<weighting>.
  c.experiment = ml_collections.ConfigDict()
  c.experiment.seeds = (0, 1, 2)
  c.experiment.methods = (
    "supcon",
    "supcon_syn",
    "syncon-fixed",
    "syncon-learned",
    "syncon-hypernet",
    "syncon-proto_sim",
    "syncon-auto",
  )
  # The other baselines of the comparison, on the same data (fewer seeds: they answer "how do
  # they compare", not "which classes are bad").
  c.experiment.baselines = (
    "simclr",
    "moco",
    "byol",
    "byol_nn",
    "stablerep",
    "triplet",
    "supervised",
    "supervised_syn",
  )
  c.experiment.baseline_seeds = (0,)
  c.experiment.corrupt_classes = ("3", "8", "6")  # 'both': 3 and 8 swapped, 6 noise
  c.experiment.corruption = "both"
  c.experiment.render_per_class = 100  # as tools/render_digits' defaults (make demo)
  c.experiment.render_seed = 0
  c.experiment.render_image_size = 32
  c.experiment.render_prompts_per_class = 10
  c.experiment.class_names = tuple(str(d) for d in range(10))
  # Utility (the ground truth of which classes are bad): utility_method without each class's
  # synthetic folder, over experiment.seeds. Off here: the full-data experiment predates it.
  c.experiment.utility = False
  c.experiment.utility_method = "supcon_syn"
  c.experiment.utility_seeds = ()  # empty: experiment.seeds
  c.experiment.paired_references = ("supcon", "supcon_syn")

  if arg.fewshot:
    _fewshot(c)

  if c.runlocal:
    c.total_steps = 12
    c.batch_size = 16
    c.log_every_steps = 4
    c.checkpoint_every_steps = 6
    c.model.name = "resnet_tiny"
    c.model.width = 4
    c.model.proj_hidden_dim = 16
    c.model.proj_dim = 8
    c.optimizer.warmup_steps = 2
    c.eval.linear_splits = 1
    # Two L2 strengths, not six: the weak ones take sklearn's L-BFGS hundreds of iterations
    # (the linear protocol went from 17 s to ~4 s).
    c.eval.l2_grid = (1e-2, 1.0)
    c.eval.fewshot_draws = 2
    c.eval.finetune_steps = 4
    c.eval.finetune_batch_size = 16
    c.eval.map_method = "pca"
  # --config.model.name=vit: 16 px digits in 4 px patches (16 tokens).
  common.vit_config(c, variant="tiny/4" if c.runlocal else "Ti/4")
  common.set_block_keys(c, queue_size=64 if c.runlocal else 512)
  return c


def _fewshot(c: ml_collections.ConfigDict) -> None:
  """The few-shot regime and its experiment (README "Few-shot: does SynCon pay?").

  The recipe was chosen on the validation pool, never on the test split: see the README for the
  measurements behind k, the synthetic mass, the corrupted classes and the steps.
  """
  c.data.real_per_class = FEWSHOT_K
  c.batch_size = 10 * FEWSHOT_K  # every labelled real image in every step
  c.data.synthetic_per_real = FEWSHOT_SYNTHETIC_PER_REAL
  c.total_steps = FEWSHOT_STEPS  # warmup (10) and probation (50) follow, as references
  c.optimizer.learning_rate = FEWSHOT_LEARNING_RATE
  # One basic block per stage: a few-shot run is 2-3x cheaper than with resnet18 on the 2-core
  # machine, and the experiment needs ~100 of them.
  c.model.name = FEWSHOT_MODEL
  c.log_every_steps = 25
  c.checkpoint_every_steps = c.total_steps
  c.keep_checkpoints = 1
  # The probe sees the same k images per class; L2 is chosen on halves of them (k = 2 leaves one
  # image per class on each side).
  c.eval.labels_per_class = 0
  c.eval.heldout_fraction = 0.5
  ec = c.experiment
  # Ten seeds: at five, one class's utility and a scheme's gain over supcon had 95% intervals of
  # 3-7 points (README).
  ec.seeds = tuple(range(10))
  # Where synthetic rows sit in the denominators: 'weighted' (w = 0 removes a class), chosen by
  # measurement (README "Few-shot: does SynCon pay?"); the full-data experiment keeps 'all'.
  common.set_block_keys(c, synthetic_denominator="weighted")
  if c.objective.get("syncon", {}).get("weighting") in ("meta", "meta_hypernet"):
    # The meta-gradient at every step at 0.1, chosen on the pool over every 5 steps at 0.1 (82.3
    # against 83.9 in the weighted form, 10 seeds) and over an EMA lookahead (82.9); every step
    # is also no slower on XLA:CPU, where the lax.cond of every 5 costs (README "Few-shot: does
    # SynCon pay?").
    common.set_block_keys(c, meta_every=1, meta_learning_rate=0.1)
  ec.methods = (
    "supcon",
    "supcon_syn@clean",
    "supcon_syn",
    "supcon_syn@oracle",
    "syncon-auto+weighted",
    "syncon-meta+all",
    "syncon-meta+weighted",
    "syncon-learned",
    "syncon-fixed",
  )
  ec.baselines = ()
  ec.utility = True
  ec.corrupt_classes = FEWSHOT_CORRUPT
  ec.corruption = FEWSHOT_CORRUPTION


# The few-shot recipe (chosen on the pool; README "Few-shot: does SynCon pay?").
FEWSHOT_K = 2
FEWSHOT_SYNTHETIC_PER_REAL = 4
FEWSHOT_STEPS = 150
FEWSHOT_LEARNING_RATE = 0.1
FEWSHOT_MODEL = "resnet_tiny"
# Three folders collapsed onto one digit: 6, 8 and 9 hold renders of 0, whose own folder stays
# clean (chosen on the pool among mutual swaps, one-way swaps and collapses of 2, 3 and 5
# classes: README "Few-shot: does SynCon pay?").
FEWSHOT_CORRUPT = ("6", "8", "9")
FEWSHOT_CORRUPTION = "collapse"
