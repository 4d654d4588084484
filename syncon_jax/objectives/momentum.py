"""What MoCo, BYOL and BYOL-NN share: an EMA target network and a FIFO queue of embeddings.

Target network. The objective state holds `target` = {"encoder", "head"} Param states, copied
from the model when the run starts (in the objective's `init`, which gets the initial model parameters) and moved towards the online parameters after every optimiser step
(`ema_update(target, ctx.new_params, decay)` in `update`: t <- decay t + (1 - decay) online). The
online predictor (BYOL) has no target copy. The loss runs the target through `ctx.apply`, the
model function with these parameters, under stop-gradient: the target gets zero gradient.
BatchNorm in the target uses the batch's statistics (train mode, as MoCo's key encoder and BYOL's
target do); the running statistics it would accumulate are never read, so none are kept.

Queue. `queue` [K, dim] float32 unit rows, `ptr` int32 (the next row to write), `count` int32
(rows written so far, saturating at K). `enqueue` writes the step's keys at ptr, ptr + 1, ...
modulo K, so the K most recent keys are always held, the oldest at ptr.

Sharding: the train state is replicated over the mesh, so every device holds the whole queue
(K x dim floats: 32 MiB at K = 65536, dim = 128) and the whole target. Sharding the queue over
'data' would save that memory but make XLA gather it for every query each step, since every
query is scored against every key; replicated is the simpler and, at these sizes, cheaper layout.
"""

import math

import jax
import jax.numpy as jnp

from syncon_jax.errors import ConfigError
from syncon_jax.losses import l2_normalize

TARGET_PARTS = ("encoder", "head")


def proj_dim(params) -> int:
  """The projection width, from the head's last kernel [hidden, proj_dim]."""
  return params["head"]["fc2"]["kernel"].shape[-1]


def init_target(params) -> dict:
  """A copy (new buffers: the train state is donated) of the encoder and head parameters."""
  return {
    part: jax.tree.map(lambda x: jnp.array(x, copy=True), params[part]) for part in TARGET_PARTS
  }


def ema_update(target: dict, online, decay) -> dict:
  """target <- decay * target + (1 - decay) * online, per leaf; decay = 1 leaves it unchanged."""
  online = {part: online[part] for part in TARGET_PARTS}
  return jax.tree.map(lambda t, o: decay * t + (1.0 - decay) * o, target, online)


def target_projections(ctx, target: dict, images: jax.Array) -> jax.Array:
  """images [..., H, W, C] (preprocessed views) -> [..., proj_dim] float32 unit rows, no gradient."""
  lead = images.shape[:-3]
  _, z = ctx.apply(jax.lax.stop_gradient(target), images.reshape(-1, *images.shape[-3:]))
  z = jax.lax.stop_gradient(z.astype(jnp.float32))
  z = l2_normalize(z)
  return z.reshape(*lead, z.shape[-1])


def init_queue(queue_size: int, dim: int, *, seed: int, random: bool) -> dict:
  """A queue of `queue_size` rows: random unit rows (MoCo) or zeros with count 0 (empty)."""
  if not isinstance(queue_size, int) or queue_size < 1:
    raise ConfigError(f"objective.<name>.queue_size must be a positive integer, got {queue_size!r}")
  if random:
    q = jax.random.normal(jax.random.key(seed), (queue_size, dim), jnp.float32)
    q = l2_normalize(q)
  else:
    q = jnp.zeros((queue_size, dim), jnp.float32)
  count = queue_size if random else 0
  return {
    "queue": q,
    "ptr": jnp.zeros((), jnp.int32),
    "count": jnp.asarray(count, jnp.int32),
  }


def enqueue(state: dict, keys: jax.Array) -> dict:
  """Writes keys [n, dim] after the newest row; state is init_queue's dict (other keys kept)."""
  queue = state["queue"]
  size, n = queue.shape[0], keys.shape[0]
  if n > size:
    raise ConfigError(
      f"objective.<name>.queue_size={size} is smaller than the {n} keys one step enqueues; raise it."
    )
  rows = (state["ptr"] + jnp.arange(n, dtype=jnp.int32)) % size
  return {
    **state,
    "queue": queue.at[rows].set(keys.astype(queue.dtype)),
    "ptr": (state["ptr"] + n) % size,
    "count": jnp.minimum(state["count"] + n, size),
  }


def cosine_tau(step, base: float, total_steps: int) -> jax.Array:
  """BYOL's target decay: 1 - (1 - base) (cos(pi step / total_steps) + 1) / 2; base at 0, 1 at the
  end."""
  if total_steps < 1:
    raise ConfigError(f"objective.<name>.total_steps must be >= 1, got {total_steps!r}")
  frac = jnp.minimum(jnp.asarray(step, jnp.float32) / total_steps, 1.0)
  return 1.0 - (1.0 - base) * (jnp.cos(math.pi * frac) + 1.0) / 2.0


def views_of_real(ctx) -> jax.Array:
  """The preprocessed views of the real images: [b, V, H, W, C]."""
  return ctx.views[:, 0]


def check_views(config) -> None:
  if config.n_views < 2:
    raise ConfigError(
      f"objective {config.name!r} needs objective.n_views >= 2, got {config.n_views}"
    )
