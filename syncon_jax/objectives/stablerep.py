"""StableRep (Tian et al. 2023): multi-positive contrastive loss over synthetic images, where
every image generated from one prompt is a positive of every other (and of its own views).

Rows are every view of every synthetic slot (projections[:, 1:]); the real images (slot 0) are not used,
as StableRep trains on synthetic images alone. A row's group is its image's prompt id
(batch['synthetic_prompt'], from the synthetic folder's metadata.jsonl), so two images of one
prompt anywhere in the global batch are positives; `losses.multipos_loss` then gives each row a
target uniform over the other rows of its group.

- A valid image whose prompt is -1 (no metadata) forms a group of its own: its views are
  positives for each other only (SimCLR on that image), and other images are negatives.
- A placeholder slot (synthetic_valid False: a class without synthetic images) is dropped
  through multipos_loss's `valid`: neither anchor, positive nor negative.
- With no valid slot the loss is 0.

How often two images of one prompt meet depends on the sampler: it draws
data.synthetic_per_real images of the real image's class per real image, so prompts meet by
chance within a class (more often with fewer prompts per class or more synthetic per real).
The metric `prompt_positives` is the mean number of other images of the same prompt per valid
image in the batch. objective.base_temperature is not read.
"""

import jax.numpy as jnp

from syncon_jax import losses
from syncon_jax.objectives import Loss, Objective


def groups(synthetic_prompt: jnp.ndarray) -> jnp.ndarray:
  """[b, S] prompt ids (-1: none) -> [b, S] group keys: the prompt id, or for an image without
  one a key of its own (-1 - its slot index, below every prompt id)."""
  slot = jnp.arange(synthetic_prompt.size).reshape(synthetic_prompt.shape)
  return jnp.where(synthetic_prompt >= 0, synthetic_prompt, -1 - slot)


def _prompt_positives(keys: jnp.ndarray, valid: jnp.ndarray) -> jnp.ndarray:
  """Mean over valid images of the number of other valid images with the same key; O(n log n)."""
  keys = jnp.where(valid, keys, jnp.iinfo(jnp.int32).min)  # invalid: one group, never counted
  ordered = jnp.sort(keys)
  count = jnp.searchsorted(ordered, keys, side="right") - jnp.searchsorted(ordered, keys)
  others = jnp.where(valid, count - 1, 0)
  return jnp.sum(others) / jnp.maximum(jnp.sum(valid), 1)


def loss(outputs, batch, state, ctx):
  """outputs.projections: [batch, 1 + S, n_views, dim]; the synthetic slots 1..S are used."""
  del state
  config = ctx.config
  z = outputs.projections[:, 1:]
  b, s, v, d = z.shape
  keys = groups(batch["synthetic_prompt"]).reshape(b * s)
  valid = batch["synthetic_valid"].reshape(b * s)
  value = losses.multipos_loss(
    z.reshape(b * s * v, d),
    jnp.repeat(keys, v),  # rows are image-major: row = (i * S + j) * V + view
    temperature=config.temperature,
    valid=jnp.repeat(valid, v),
    block_size=config.block_size,
  )
  return Loss(value, {"prompt_positives": _prompt_positives(keys, valid)})


OBJECTIVE = Objective(loss=loss, uses_synthetic=lambda config: True)
