"""The generation loop: plan, skip what exists, make the rest, write, filter, summarise.

`generate(data_config, options)` is what the command line runs; tests call it directly.
Images are made in groups of up to `batch_size` images of one prompt, aligned on the image's
index within its prompt, so a rerun after a kill makes a missing image in the same batch as the
uninterrupted run did (and, on a deterministic device, the same bytes).
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import itertools
import json
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

from absl import logging
from PIL import Image

from syncon_jax import progress
from syncon_jax.errors import ConfigError, DataError
from syncon_jax.tools.generate import backends, classes, prompts, writer
from syncon_jax.tools.generate.prompts import Task

SUMMARY_FILE = "summary.json"
# Fields of a metadata line that must match the plan for an existing image to count as done.
_PLANNED = (
  "class",
  "prompt",
  "prompt_id",
  "index",
  "seed",
  "backend",
  "model",
  "guidance_scale",
  "steps",
  "image_size",
  "filter_model",
)


@dataclasses.dataclass
class Options:
  """Every setting of a run; the command line's flags take their defaults from here."""

  out: str = ""
  model: str = ""
  backend: str = "diffusers"
  images_per_class: int = 10
  classes: Sequence[str] = ()  # a subset of the data set's classes; empty: all
  classes_file: str | None = None  # the class names, one a line, for a set not prepared here
  prompts_per_class: int = 0  # use the first K prompts of each class; 0: all
  templates_file: str | None = None
  descriptions_file: str | None = None
  seed: int = 0
  # StableRep (Tian et al. 2023) and Fake it till you make it (Sariyildiz et al. 2023) found a
  # low classifier-free guidance (about 2) gives the most useful training images.
  guidance_scale: float = 2.0
  num_inference_steps: int = 50  # diffusers' default for Stable Diffusion
  image_size: int | None = None  # None: the model's default (openai: keep the API's size)
  batch_size: int = 4  # images of one prompt per pipeline call
  device: str | None = None  # diffusers: None takes cuda when there is one
  dtype: str | None = None  # diffusers: None is float16 on cuda, float32 on cpu
  torch_threads: int = 0  # 0: torch's default
  api_base: str = "https://api.openai.com/v1"
  api_size: str = "1024x1024"
  api_quality: str | None = None
  request_timeout: float = 120.0
  max_retries: int = 5
  workers: int = 1  # groups made at once, in threads: concurrent requests to the images API
  retry_delay: float = 2.0  # seconds before the first retry; doubles each time
  filter_model: str | None = None  # a CLIP model: keep an image when CLIP recognises its class
  log_every_s: float = 10.0
  dry_run: bool = False  # check the inputs and print the plan; load no model, write nothing


def _make_diffusers(o: Options) -> backends.Backend:
  return backends.DiffusersBackend(
    o.model,
    guidance_scale=o.guidance_scale,
    num_inference_steps=o.num_inference_steps,
    image_size=o.image_size,
    batch_size=o.batch_size,
    device=o.device,
    dtype=o.dtype,
    torch_threads=o.torch_threads,
  )


def _make_openai(o: Options) -> backends.Backend:
  return backends.OpenAIBackend(
    o.model,
    api_key=os.environ.get("OPENAI_API_KEY"),
    api_base=o.api_base,
    size=o.api_size,
    quality=o.api_quality,
    image_size=o.image_size,
    timeout=o.request_timeout,
    max_retries=o.max_retries,
    retry_delay=o.retry_delay,
  )


BACKENDS: dict[str, Callable[[Options], backends.Backend]] = {
  "diffusers": _make_diffusers,
  "openai": _make_openai,
}


def _check(o: Options) -> None:
  if not o.out:
    raise ConfigError("--out is required (the synthetic folder to write).")
  if not o.model:
    raise ConfigError("--model is required (a diffusers pipeline folder or hub id, or dall-e-3).")
  if o.backend not in BACKENDS:
    raise ConfigError(f"Unknown --backend {o.backend!r}; valid: {sorted(BACKENDS)}")
  if o.batch_size < 1 or o.workers < 1 or o.prompts_per_class < 0 or o.guidance_scale < 0:
    raise ConfigError(
      "--batch_size and --workers must be >= 1, --prompts_per_class and --guidance_scale >= 0."
    )
  if o.image_size is not None and o.image_size < 1:
    raise ConfigError(f"--image_size must be positive, got {o.image_size}")
  if os.path.exists(o.out) and not os.path.isdir(o.out):
    raise DataError(f"--out {o.out!r} exists and is not a folder.")


def _groups(plan: Sequence[Task], batch_size: int) -> list[list[Task]]:
  """Runs of tasks of one class and prompt whose index within the prompt, j, shares j // batch."""
  n_prompts: dict[int, int] = {}
  for t in plan:
    n_prompts[t.class_index] = max(n_prompts.get(t.class_index, 0), t.prompt_id + 1)
  # Image i of a class is image j = i // P of prompt i mod P (prompts.make_plan).
  key = lambda t: (t.class_index, t.prompt_id, t.index // n_prompts[t.class_index] // batch_size)
  return [list(g) for _, g in itertools.groupby(plan, key=key)]


class _Progress:
  """Logs done/total, images/s over the images made in this run, and the ETA."""

  def __init__(self, total: int, every_s: float):
    self.total, self.every_s = total, every_s
    self.done = self.made = self.skipped = 0
    self.start = self.last = time.monotonic()

  def update(self, made: int, skipped: int, final: bool = False) -> None:
    self.made += made
    self.skipped += skipped
    self.done += made + skipped
    now = time.monotonic()
    if not final and now - self.last < self.every_s:
      return
    self.last = now
    rate = self.made / max(now - self.start, 1e-9)
    logging.info(
      "%d/%d images (%d were there), %.3f images/s, ETA %s",
      self.done,
      self.total,
      self.skipped,
      rate,
      progress.eta(self.total - self.done, rate),
    )


def _make_group(backend: backends.Backend, group: list[Task], pending) -> dict[str, Image.Image]:
  """{file: image} for a group with a missing image, else {}.

  The whole group is made, even where some images exist: a batch of another composition could
  round differently, and a rerun must make the bytes the uninterrupted run made.
  """
  if all(where is not None for _, where, _ in pending):
    return {}
  names = [t.file for t in group]
  images = backend.generate(group[0].prompt, [t.seed for t in group], names)
  return dict(zip(names, images, strict=True))


def _made_in_order(backend: backends.Backend, work: list, workers: int):
  """Yields (group, pending, {file: image}) in plan order, making up to `workers` groups at once
  (threads: for the images API, whose requests wait on the network). An error surfaces when
  its group's turn comes, after every earlier group was yielded (and written)."""
  if workers <= 1:
    for group, pending in work:
      yield group, pending, _make_group(backend, group, pending)
    return
  pool = concurrent.futures.ThreadPoolExecutor(workers)
  try:
    queue: collections.deque = collections.deque()
    items = iter(work)
    for group, pending in itertools.islice(items, 2 * workers):
      queue.append((group, pending, pool.submit(_make_group, backend, group, pending)))
    while queue:
      group, pending, future = queue.popleft()
      made = future.result()
      for next_group, next_pending in itertools.islice(items, 1):
        queue.append(
          (next_group, next_pending, pool.submit(_make_group, backend, next_group, next_pending))
        )
      yield group, pending, made
  finally:
    pool.shutdown(wait=True, cancel_futures=True)


def _planned_entry(task: Task, about: dict[str, Any], seeded: bool, filter_name) -> dict:
  return {
    "class": task.class_name,
    "prompt": task.prompt,
    "prompt_id": task.prompt_id,
    "index": task.index,
    "seed": task.seed if seeded else None,
    **about,
    "filter_model": filter_name,
  }


def _verify(entry: dict, planned: dict, out: str) -> None:
  for key in _PLANNED:
    if entry.get(key) != planned.get(key):
      raise ConfigError(
        f"{os.path.join(out, entry['file'])} was made with {key}={entry.get(key)!r}, but this "
        f"run asks {key}={planned.get(key)!r}; rerun with the same settings or another --out."
      )


def _locations(file: str) -> tuple[str, str]:
  """(file in its class folder, file under .rejected/) as paths relative to out."""
  return file, f"{writer.REJECTED_DIR}/{file}"


def generate(
  data_config: Any, options: Options, *, backend: backends.Backend | None = None
) -> dict[str, dict[str, Any]]:
  """Writes options.images_per_class images per class to options.out.

  Args:
    data_config: the config's `data` dict (its name picks the templates and the classes).
    options: the run's settings.
    backend: a ready backend (tests); None builds the one options.backend names.

  Returns:
    {class name: {"images", "kept", "rejected", "kept_share", "made"}} for the run's classes;
    also written (without "made") to <out>/summary.json.
  """
  o = options
  _check(o)
  all_names = (
    classes.from_file(o.classes_file) if o.classes_file else classes.from_config(data_config)
  )
  prompts.check_folders_distinct(all_names)
  selected = classes.select(all_names, o.classes)
  templates = prompts.templates_for(data_config.get("name"), o.templates_file)
  descriptions = (
    prompts.read_descriptions(o.descriptions_file, all_names) if o.descriptions_file else {}
  )
  per_class = []
  for name in selected:
    p = prompts.class_prompts(name, templates, descriptions.get(name, ()))
    per_class.append(p[: o.prompts_per_class] if o.prompts_per_class else p)
  plan = prompts.make_plan(selected, per_class, o.images_per_class, o.seed)

  if o.dry_run:
    _print_plan(o, plan, selected, per_class)
    return {}
  if backend is None:
    backend = BACKENDS[o.backend](o)
  zero_shot = None
  if o.filter_model:
    from syncon_jax.tools.generate.filter import ZeroShotFilter

    class_prompts = [prompts.class_prompts(n, templates[:1])[0] for n in all_names]
    zero_shot = ZeroShotFilter(o.filter_model, class_prompts, device=o.device)
  class_of = {n: i for i, n in enumerate(all_names)}

  try:
    os.makedirs(o.out, exist_ok=True)
  except OSError as e:
    raise DataError(f"Cannot create --out {o.out!r}: {e.strerror}") from e
  if writer.remove_temporaries(o.out):
    logging.info("Removed temporary files a killed run left in %s.", o.out)
  log = writer.MetadataLog(o.out)
  about = backend.describe()
  filter_name = zero_shot.name if zero_shot else None
  progress = _Progress(len(plan), o.log_every_s)
  made_per_class = dict.fromkeys(selected, 0)
  logging.info(
    "Generating %d images (%d classes x %d) into %s with %s %s.",
    len(plan),
    len(selected),
    o.images_per_class,
    o.out,
    about["backend"],
    about["model"],
  )

  work = []  # (group, its tasks still to finish as (task, where it is or None, line))
  for group in _groups(plan, backend.batch_size):
    pending = []
    for task in group:
      where = next((f for f in _locations(task.file) if _exists(o.out, f)), None)
      planned = _planned_entry(task, about, backend.seeded, filter_name)
      entry = log.get(where) if where else None
      if entry is not None:
        _verify(entry, planned, o.out)
      else:
        pending.append((task, where, planned))
    if pending:
      work.append((group, pending))
    else:
      progress.update(0, len(group))

  for group, pending, made in _made_in_order(backend, work, o.workers):
    for task, where, plan_entry in pending:
      image = made.get(task.file) if where is None else None
      if image is None:  # written by a killed run before its line: read it back
        with Image.open(os.path.join(o.out, where)) as img:
          image = img.convert("RGB")
      extra, target = {}, task.file
      if zero_shot is not None:
        prob = float(zero_shot.probabilities([image])[0, class_of[task.class_name]])
        kept = zero_shot.keep(prob)
        extra = {"filter_prob": prob, "kept": kept}
        target = task.file if kept else _locations(task.file)[1]
      if where is None:
        writer.write_atomic(os.path.join(o.out, target), writer.encode_png(image))
        made_per_class[task.class_name] += 1
      elif where != target:
        os.makedirs(os.path.dirname(os.path.join(o.out, target)), exist_ok=True)
        os.replace(os.path.join(o.out, where), os.path.join(o.out, target))
      log.append({"file": target, **plan_entry, **extra})
    n_made = sum(where is None for _, where, _ in pending)
    progress.update(n_made, len(group) - n_made)
  progress.update(0, 0, final=True)

  order = []
  for task in plan:
    order.extend(_locations(task.file))
  log.rewrite(order)
  return _summarise(o.out, plan, log, selected, made_per_class, zero_shot is not None)


def _print_plan(o: Options, plan, selected, per_class) -> None:
  """What a run would make (--dry_run), after checking what can be checked without a model."""
  if o.backend == "openai":
    BACKENDS["openai"](o)  # checks the key; sends nothing
  else:
    backends.local_path(o.model, "--model", "a saved diffusers pipeline")
  if o.filter_model:
    backends.local_path(o.filter_model, "--filter_model", "a saved CLIP model")
  there = sum(os.path.isfile(os.path.join(o.out, t.file)) for t in plan)
  print(
    f"Would make {len(plan) - there} of {len(plan)} images ({len(selected)} classes x "
    f"{o.images_per_class}, {there} already there) in {o.out} with {o.backend} {o.model}.\n"
    f"First class {selected[0]!r}, {len(per_class[0])} prompt(s): {per_class[0][0]!r} ...",
    flush=True,
  )


def _exists(out: str, file: str) -> bool:
  return os.path.isfile(os.path.join(out, file))


def _summarise(out, plan, log, selected, made_per_class, filtered) -> dict[str, dict[str, Any]]:
  summary = {
    n: {"images": 0, "kept": 0, "rejected": 0, "kept_share": None, "made": made_per_class[n]}
    for n in selected
  }
  for task in plan:
    row = summary[task.class_name]
    row["images"] += 1
    if log.get(task.file) is not None:
      row["kept"] += 1
    else:
      row["rejected"] += 1
  for row in summary.values():
    if filtered:
      row["kept_share"] = row["kept"] / row["images"]
  stored = {n: {k: v for k, v in row.items() if k != "made"} for n, row in summary.items()}
  writer.write_atomic(
    os.path.join(out, SUMMARY_FILE),
    (json.dumps(stored, indent=1, ensure_ascii=False) + "\n").encode("utf-8"),
  )
  width = max(len("class"), *(len(n) for n in selected))
  lines = [f"{'class':<{width}}  images  made  kept  kept share"]
  for n, row in summary.items():
    share = "-" if row["kept_share"] is None else f"{row['kept_share']:.2f}"
    lines.append(
      f"{n:<{width}}  {row['images']:6d}  {row['made']:4d}  {row['kept']:4d}  {share:>10}"
    )
  total_kept = sum(r["kept"] for r in summary.values())
  total = sum(r["images"] for r in summary.values())
  lines.append(f"{'all':<{width}}  {total:6d}  {sum(made_per_class.values()):4d}  {total_kept:4d}")
  print("\n".join(lines), flush=True)
  return summary
