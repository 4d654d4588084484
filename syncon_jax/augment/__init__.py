"""Image augmentation in JAX, run on the accelerator inside the jitted train step.

ops.py       the image ops: pure functions of a key and one image `[h, w, 3]` in [0, 1], their
             settings as keyword arguments (torchvision's SimCLR transforms, BYOL's solarisation)
pipeline.py  `config.augment` -> per-view settings (`read_config`), the op registry `OPS`, and
             the entry points `augment_batch` (one view's settings) and `augment_views` (each
             view under its own settings, what the trainer calls)
"""

from syncon_jax.augment import ops
from syncon_jax.augment.pipeline import (
  OPS,
  Check,
  Op,
  Pipeline,
  augment_batch,
  augment_views,
  get_op,
  read_config,
  to_float_image,
)

__all__ = [
  "OPS",
  "Check",
  "Op",
  "Pipeline",
  "augment_batch",
  "augment_views",
  "get_op",
  "ops",
  "read_config",
  "to_float_image",
]
