"""Loss functions on the global batch: contrastive (SupCon, SynCon, NT-Xent, StableRep), the
momentum-encoder losses (MoCo, BYOL), triplet (with batch-hard / batch-all mining) and the
supervised cross-entropy; DESIGN.md, "Loss contract".

  numerics.py       compute dtype, matmul precision, row reductions, `l2_normalize`
  core.py           the contrastive core: dense, or blockwise with a custom_vjp streaming
                    log-sum-exp (memory O(N * dim + block^2))
  contrastive.py    supcon_loss, syncon_loss, ntxent_loss, multipos_loss
  target.py         moco_loss, byol_loss
  triplet.py        triplet_loss, batch_hard_triplet_loss, batch_all_triplet_loss
  cross_entropy.py  softmax_cross_entropy

The losses are plain functions: they are traced inside the caller's jit (the train step) and
check only shapes, at trace time; their settings (temperature, block_size, the named options) are
checked once, with the config (validate.py). `reduction='none'` gives the per-row losses that
'mean' averages.
"""

from __future__ import annotations

from collections.abc import Callable

import jax

from syncon_jax.errors import ConfigError
from syncon_jax.losses.contrastive import (
  SYNTHETIC_DENOMINATORS,
  multipos_loss,
  ntxent_loss,
  supcon_loss,
  syncon_loss,
)
from syncon_jax.losses.cross_entropy import softmax_cross_entropy
from syncon_jax.losses.numerics import REDUCTIONS, l2_normalize
from syncon_jax.losses.target import byol_loss, moco_loss
from syncon_jax.losses.triplet import (
  BATCH_ALL_AVERAGES,
  TRIPLET_METRICS,
  batch_all_triplet_loss,
  batch_hard_triplet_loss,
  triplet_loss,
)

__all__ = [
  "BATCH_ALL_AVERAGES",
  "LOSSES",
  "REDUCTIONS",
  "SYNTHETIC_DENOMINATORS",
  "TRIPLET_METRICS",
  "batch_all_triplet_loss",
  "batch_hard_triplet_loss",
  "byol_loss",
  "get_loss",
  "l2_normalize",
  "moco_loss",
  "multipos_loss",
  "ntxent_loss",
  "softmax_cross_entropy",
  "supcon_loss",
  "syncon_loss",
  "triplet_loss",
]

# Every public loss by name, for objectives that pick one from the config.
LOSSES: dict[str, Callable[..., jax.Array]] = {
  "supcon": supcon_loss,
  "syncon": syncon_loss,
  "ntxent": ntxent_loss,
  "multipos": multipos_loss,
  "moco": moco_loss,
  "byol": byol_loss,
  "triplet": triplet_loss,
  "batch_hard_triplet": batch_hard_triplet_loss,
  "batch_all_triplet": batch_all_triplet_loss,
  "cross_entropy": softmax_cross_entropy,
}


def get_loss(name: str) -> Callable[..., jax.Array]:
  """The loss registered under `name`; an unknown name lists the valid ones."""
  if name not in LOSSES:
    raise ConfigError(f"Unknown loss {name!r}; valid: {sorted(LOSSES)}")
  return LOSSES[name]
