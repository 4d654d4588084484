r"""Train on synthetic, test on real: the StableRep/CIFAKE replication's study (README section
"Train on synthetic, test on real (the CIFAKE study)"), run by syncon_jax/tools/cifake_experiment.

  python -m syncon_jax.tools.cifake_experiment --config=configs/cifake_study.py \
    --workdir=runs/cifake_digits                                   # make cifake-study
  python -m syncon_jax.tools.cifake_experiment --config=configs/cifake_study.py:data=cifake \
    --workdir=runs/cifake --config.data.manual_dir=/data/cifake

Variants, comma separated after the colon:
  data=digits|cifake   the digits with rendered digits as the synthetic half (default), or
                       CIFAKE (REAL = CIFAR-10, FAKE = Stable Diffusion 1.4; configs/cifake.py)
  runlocal             two seeds, a few steps: the tests' size

What the replication found: classifiers trained on real images beat those trained on synthetic
ones when tested on real images, with a CNN and with a ViT (it states no numbers). The CIFAKE
paper's CNN detects real versus fake at 92.98% (Bird & Lotfi 2024).

The data section, the SynCon objective and its optimiser are the data set's own config
(configs/digits.py, configs/cifake.py); `study` holds the study's own keys.
"""

import ml_collections

from configs import cifake, common, digits


def _encoder(name: str, **keys) -> ml_collections.ConfigDict:
  """A model section create_model accepts (the projection head's keys as the data config's)."""
  return ml_collections.ConfigDict(
    dict(name=name, stem="cifar", width=8, bn_momentum=0.9, dtype="float32", **keys)
  )


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = common.parse_arg(arg, data="digits", runlocal=False)
  base = "objective=syncon" + (",runlocal" if arg.runlocal else "")
  if arg.data == "digits":
    c = digits.get_config(base)
  elif arg.data == "cifake":
    c = cifake.get_config(base + ",task=cifar10,train=REAL")
  else:
    raise ValueError(f"Unknown variant data={arg.data!r}; valid: ['cifake', 'digits']")

  s = c.study = ml_collections.ConfigDict()
  s.seeds = (0, 1, 2, 3, 4)  # every supervised classifier: mean and 95% t-interval over these
  s.conditions = ("real", "synthetic", "real+synthetic")  # training images; the test is real
  s.detection = True  # CIFAKE's own task: real versus synthetic, on held-out images of both
  # The two supervised architectures: a small CNN (a ResNet with one basic block per stage) and
  # a small ViT, each with a linear classifier on its features, trained end to end from scratch.
  s.architectures = ("cnn", "vit")
  s.cnn = _encoder("resnet_tiny")
  s.vit = _encoder(
    "vit", variant="tiny/4", pool="gap", posemb="learn", image_size=c.data.get_ref("image_size")
  )
  s.steps = 200  # ~5 epochs of the real digits: minutes on a 2-core CPU for 30 models
  s.batch_size = 32
  s.optimizer = "adamw"
  s.learning_rate = 1e-3
  s.weight_decay = 1e-4
  s.warmup_steps = 20
  s.eval_batch_size = 512
  # The floor: the same linear probe on raw pixels (L-BFGS on S*S*3 features: minutes on CIFAKE).
  s.pixels_probe = True
  # The row the replication lacked: SynCon pretrained on the same real + synthetic images, then
  # a linear probe (data config's eval.l2_grid, all real train labels) on real; the encoder is
  # the study's architecture of that name.
  s.syncon_architectures = ("cnn",)
  s.syncon_seeds = (0, 1, 2)
  s.syncon_steps = 150
  s.syncon_batch_size = 32
  # digits: the synthetic half, rendered by tools/render_digits (clean, no corrupted class):
  # train renders, and held-out renders of another seed (other styles) for the detection test.
  s.render_per_class = 100
  s.render_test_per_class = 54  # about the real test split's 540 images: a balanced detection test
  s.render_seed = 0
  s.render_test_seed = 1
  s.render_image_size = 32
  s.render_prompts_per_class = 10

  if arg.data == "cifake":
    # 100,000 32 px photos: longer schedules and wider nets (untuned; a GPU's work). The
    # digits keep 16 px images in 4 px patches (16 tokens) and run on a laptop CPU in minutes.
    s.steps = 20_000  # ~25 epochs of REAL at batch 128
    s.batch_size = 128
    s.warmup_steps = 500
    s.cnn.width = 32
    s.vit.variant = "Ti/4"  # 64 tokens
    s.syncon_steps = 20_000
    s.syncon_batch_size = 256
  c.eval.labels_per_class = 0  # the SynCon row's probe reads every real train label

  if arg.runlocal:
    s.seeds = (0, 1)
    s.steps = 6
    s.batch_size = 16
    s.warmup_steps = 2
    s.eval_batch_size = 64
    s.syncon_seeds = (0,)
    s.syncon_steps = 4
    s.syncon_batch_size = 16
    s.render_per_class = 8
    s.render_test_per_class = 4
    s.render_prompts_per_class = 2
    s.vit.variant = "tiny/4"
    s.cnn.width = 4
    # Weak L2 on a few separable images runs L-BFGS to its iteration cap: seconds, not minutes.
    c.eval.l2_grid = (1e-2, 1.0)
    s.pixels_probe = False
  return c
