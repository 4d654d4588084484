"""Orbax checkpoints under <workdir>/checkpoints: periodic save, auto-resume, encoder-only restore.

A checkpoint holds one item per top-level model part plus one for the rest of the train state:

  encoder/   {"params", "state"}    the encoder's Param and BatchStat collections
  head/      {"params", "state"}    the projection head's
  predictor/ {"params", "state"}    BYOL's predictor, only when the model has one
  train/     {"step", "opt_state", "objective_params", "objective"}, and "online" (the online
             probe) when it is on

so that linear_eval restores `encoder` alone and never reads optimiser state.
"""

import os
from typing import Any

import jax
import orbax.checkpoint as ocp
from absl import logging

from syncon_jax.errors import ConfigError

MODEL_PARTS = ("encoder", "head", "predictor")


def _parts(state) -> tuple[str, ...]:
  return tuple(part for part in MODEL_PARTS if part in state.params)


def _items(state) -> dict[str, Any]:
  # A part without non-Param variables (a ViT encoder: no BatchNorm) has no model_state entry.
  items = {
    part: {"params": state.params[part], "state": state.model_state.get(part, {})}
    for part in _parts(state)
  }
  items["train"] = {
    "step": state.step,
    "opt_state": state.opt_state,
    "objective_params": state.objective_params,
    "objective": state.objective,
  }
  if state.online:
    # The online probe (eval.online_probe); absent when off, so such checkpoints keep their layout.
    items["train"]["online"] = state.online
  return items


def _abstract(tree):
  return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)


def _like(template, restored):
  """Orbax returns nested nnx.State (inside optax states too) as plain dicts: put the
  template's containers back around the restored leaves (both flatten in sorted key order)."""
  leaves = jax.tree.leaves(restored)
  treedef = jax.tree.structure(template)
  if treedef.num_leaves != len(leaves):
    raise ValueError(
      f"Checkpoint has {len(leaves)} arrays where {treedef.num_leaves} are expected."
    )
  return jax.tree.unflatten(treedef, leaves)


class Checkpointer:
  """Thin wrapper over ocp.CheckpointManager; every process calls every method (orbax syncs)."""

  def __init__(self, workdir: str, *, keep: int, every_steps: int):
    self.directory = os.path.abspath(os.path.join(workdir, "checkpoints"))
    self.every_steps = every_steps
    self._pending: int | None = None  # the step of the save in flight, not yet logged
    # The save policy is ours (see `save`): orbax's own interval policy also saves the first step
    # of a fresh run, which is neither asked for nor useful.
    self._manager = ocp.CheckpointManager(
      self.directory, options=ocp.CheckpointManagerOptions(max_to_keep=keep)
    )

  def poll(self) -> None:
    """Logs the save in flight once it is complete on disk. Saves are asynchronous, so this is
    not when `save` returns; orbax's post-finalisation callback also runs before the step's
    folder gets its final name, so the log waits for the manager to report no save running."""
    if self._pending is None or self._manager.is_saving_in_progress():
      return
    if jax.process_index() == 0:
      logging.info("Saved checkpoint at step %d in %s.", self._pending, self.directory)
    self._pending = None

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def save(self, step: int, state, *, last: bool = False) -> bool:
    """Saves (asynchronously) when step is a multiple of every_steps or `last`; returns whether."""
    if not (last or step % self.every_steps == 0) or step == self._manager.latest_step():
      return False
    args = ocp.args.Composite(**{k: ocp.args.StandardSave(v) for k, v in _items(state).items()})
    # A new save first waits for the one in flight.
    self.wait()
    self._pending = step
    return self._manager.save(step, args=args, force=True)

  def _restore(self, step: int, args):
    """The manager's restore; a checkpoint whose tree does not fit the template is a ConfigError."""
    try:
      return self._manager.restore(step, args=args)
    except ValueError as e:
      # Orbax's message lists every differing leaf; the first lines name the parts at fault.
      detail = "\n".join(str(e).splitlines()[:6])
      raise ConfigError(
        f"The checkpoint at step {step} in {self.directory} does not match this run's train "
        f"state (it was written by another version of the code or another config):\n{detail}\n"
        "Use another --workdir, or the code and config that wrote it."
      ) from e

  def restore(self, step: int, template):
    """Restores the full train state at `step`, laid out (shapes, shardings) like `template`."""
    items = _items(template)
    args = ocp.args.Composite(
      **{k: ocp.args.StandardRestore(_abstract(v)) for k, v in items.items()}
    )
    r = self._restore(step, args)
    r = {k: _like(items[k], r[k]) for k in items}
    return template._replace(
      step=r["train"]["step"],
      params=_like(template.params, {p: r[p]["params"] for p in _parts(template)}),
      model_state=_like(template.model_state, {p: r[p]["state"] for p in _parts(template)}),
      opt_state=r["train"]["opt_state"],
      objective_params=r["train"]["objective_params"],
      objective=r["train"]["objective"],
      online=r["train"].get("online", template.online),
    )

  def restore_encoder(self, step: int, params_template, state_template):
    """Restores only the encoder's (params, state) at `step`."""
    template = {"params": params_template, "state": state_template}
    r = self._restore(
      step, ocp.args.Composite(encoder=ocp.args.StandardRestore(_abstract(template)))
    )
    r = _like(template, r["encoder"])
    return r["params"], r["state"]

  def wait(self) -> None:
    self._manager.wait_until_finished()
    self.poll()

  def close(self) -> None:
    self._manager.close()


def has_checkpoint(workdir: str) -> bool:
  """Whether <workdir>/checkpoints holds a finished step; creates nothing (unlike the manager)."""
  directory = os.path.join(workdir, "checkpoints")
  return os.path.isdir(directory) and any(name.isdigit() for name in os.listdir(directory))
