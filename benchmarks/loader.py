r"""The input pipeline alone, in images per second, against the train step it feeds.

Writes --images photo-like JPEGs (sizes and file sizes of Birdsnap's: 500x375 and the like,
quality 90, ~40-80 KB) to a temporary folder and decodes them as the paper configs do
(`data.decode_size` 256: the shorter side to 256, the centred square; `folders.read_image`)
in each of these ways, the ways interleaved round by round:

- threads_T: `folders.LazyImages(...).materialize()`, a pool of T threads (what training uses:
  `data.decode_threads`, default min(8, cores));
- processes_W: the same `folders.read_image` in a pool of W worker processes (started before
  timing; the decoded arrays are pickled back to the parent);
- tf_data: `tf.data` with `decode_and_crop_jpeg` (the centred square, decoded alone) and a
  bilinear resize, `num_parallel_calls=AUTOTUNE`;
- grain_W: grain's `MapDataset` of `folders.read_image` behind `mp_prefetch` with W worker
  processes, one persistent iterator, timed after the others (its workers keep prefetching in the
  background); skipped, and said so, where grain is not installed (not a project dependency).

Then the trainer's own host batch (`BatchSampler.bind(...)(step)`: lazy real photos decoded per
step, synthetic images held decoded, as configs/birdsnap.py) and the train step of
configs/birdsnap.py (ResNet-50, 224 px views cut from the 256 px square, SynCon, 2 views) at a
small batch, in real images per second: the loader keeps ahead when its rate is above the
step's. On a CPU both share the cores, so the JSON also gives the loader's share of them.

  python benchmarks/loader.py                        # ~4 min on 2 cores
  python benchmarks/loader.py --images=64 --rounds=1 --skip_step --out=/tmp/loader.json

Writes benchmarks/results/loader.json (or --out) and prints a table.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import functools
import os
import statistics
import sys
import tempfile
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)  # configs/ is imported from the repository root
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

DEFAULT_OUT = os.path.join(os.path.dirname(__file__), "results", "loader.json")
# Birdsnap's photos are mostly 500 px on the long side (Berg et al. 2014, as downloaded).
PHOTO_SIZES = ((500, 375), (375, 500), (500, 333), (640, 480))
NUM_CLASSES = 10


def make_photos(root: str, n: int, seed: int = 0) -> list[str]:
  """n JPEGs under root/<class>/: smooth colour fields plus sensor-like noise, so that they
  compress like photographs (not like flat colour or white noise)."""
  from PIL import Image

  rng = np.random.default_rng(seed)
  paths = []
  for i in range(n):
    w, h = PHOTO_SIZES[i % len(PHOTO_SIZES)]
    coarse = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8))
    field = np.asarray(coarse.resize((w, h), Image.Resampling.BICUBIC), np.float32)
    pixels = np.clip(field + rng.normal(0, 10, field.shape), 0, 255).astype(np.uint8)
    path = os.path.join(root, f"c{i % NUM_CLASSES}", f"{i:05d}.jpg")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(pixels).save(path, quality=90)
    paths.append(path)
  return paths


def _read(path: str, size: int) -> np.ndarray:
  from syncon_jax.data import folders

  return folders.read_image(path, size)


def tf_decoder(paths: list[str], size: int):
  """-> run() decoding every path with tf.data; the same centred square as folders.read_image."""
  import tensorflow as tf

  tf.config.set_visible_devices([], "GPU")

  def decode(path):
    data = tf.io.read_file(path)
    shape = tf.io.extract_jpeg_shape(data)
    side = tf.minimum(shape[0], shape[1])
    window = tf.stack([(shape[0] - side) // 2, (shape[1] - side) // 2, side, side])
    image = tf.image.decode_and_crop_jpeg(data, window, channels=3)
    image = tf.image.resize(image, (size, size), method="bilinear", antialias=True)
    return tf.cast(tf.round(image), tf.uint8)

  ds = tf.data.Dataset.from_tensor_slices(paths).map(decode, num_parallel_calls=tf.data.AUTOTUNE)
  ds = ds.batch(64).prefetch(tf.data.AUTOTUNE)

  def run():
    return np.concatenate([b.numpy() for b in ds])

  return run


def grain_decoder(paths: list[str], size: int, workers: int):
  """-> run() taking the next len(paths) images from one grain iterator over W processes."""
  import grain.python as grain
  from absl import flags

  if not flags.FLAGS.is_parsed():  # grain reads absl flags; this script uses argparse
    flags.FLAGS.mark_as_parsed()
  ds = grain.MapDataset.source(paths).repeat().map(functools.partial(_read, size=size))
  it = iter(ds.to_iter_dataset().mp_prefetch(grain.MultiprocessingOptions(num_workers=workers)))
  return lambda: np.stack([next(it) for _ in paths])


def decoders(paths: list[str], size: int, threads: list[int], workers: list[int]) -> dict:
  from syncon_jax.data import folders

  out = {}
  for t in threads:
    out[f"threads_{t}"] = functools.partial(
      lambda t: folders.LazyImages(paths, size, num_threads=t).materialize(), t
    )
  pools = []
  for w in workers:
    pool = concurrent.futures.ProcessPoolExecutor(w)
    list(pool.map(_read, paths[:w], [size] * w))  # start the workers before timing
    pools.append(pool)
    out[f"processes_{w}"] = functools.partial(
      lambda pool: np.stack(list(pool.map(_read, paths, [size] * len(paths), chunksize=8))), pool
    )
  out["tf_data"] = tf_decoder(paths, size)
  return out, pools


def time_decoders(fns: dict, rounds: int, n: int) -> dict:
  times = {name: [] for name in fns}
  cpu = {name: [] for name in fns}
  loads = []
  for fn in fns.values():  # warm-up (tf.data traces its map function once)
    fn()
  for _ in range(rounds):
    for name, fn in fns.items():
      c0, t0 = time.process_time(), time.perf_counter()
      images = fn()
      times[name].append(time.perf_counter() - t0)
      cpu[name].append(time.process_time() - c0)  # this process only: not the workers'
      assert images.shape[0] == n
      loads.append(os.getloadavg()[0])
  return {
    name: {
      "images_per_s_median": n / statistics.median(ts),
      "images_per_s_best": n / min(ts),
      "wall_s": ts,
      "parent_cpu_s": cpu[name],
    }
    for name, ts in times.items()
  } | {"_load_1min": loads}


def host_batch_rate(paths: list[str], config, steps: int) -> dict:
  """The trainer's host batch (BatchSampler.bind) at config's batch: lazy real photos, the
  synthetic set decoded in memory, as configs/birdsnap.py loads them."""
  from syncon_jax.data import BatchSampler, folders

  real = folders.LazyImages(paths, **folders.decode_options(config.data))
  labels = np.arange(len(paths)) % NUM_CLASSES
  synthetic = real[np.arange(min(len(paths), 4 * NUM_CLASSES))]
  sampler = BatchSampler(
    labels,
    np.arange(len(synthetic)) % NUM_CLASSES,
    num_classes=NUM_CLASSES,
    batch_size=config.batch_size,
    synthetic_per_real=config.data.synthetic_per_real,
    seed=0,
  )
  host_rows = sampler.bind(real, synthetic, process_index=0, process_count=1)
  host_rows(0)
  t0 = time.perf_counter()
  for step in range(1, steps + 1):
    host_rows(step)
  wall = time.perf_counter() - t0
  return {"real_images_per_s": steps * config.batch_size / wall, "steps": steps}


def step_rate(config, steps: int) -> dict:
  """configs/birdsnap.py's jitted train step on a random uint8 batch of its shapes."""
  import jax
  from train_step import compiled_step, random_batch

  b, s = config.batch_size, config.data.synthetic_per_real
  batch = random_batch(config, NUM_CLASSES)
  compiled, state, compile_s = compiled_step(config, NUM_CLASSES, batch)
  t0 = time.perf_counter()
  for _ in range(steps):
    state, m = compiled(state, batch)
  jax.block_until_ready(m)
  step_s = (time.perf_counter() - t0) / steps
  views = b * (1 + s) * config.objective.n_views
  return {
    "compile_s": compile_s,
    "step_s": step_s,
    "real_images_per_s": b / step_s,
    "views_per_s": views / step_s,
    "batch_size": b,
    "synthetic_per_real": s,
    "views_per_step": views,
  }


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--images", type=int, default=192)
  parser.add_argument("--rounds", type=int, default=3)
  parser.add_argument("--threads", default="1,2,4")
  parser.add_argument("--workers", default="2")
  parser.add_argument("--step_batch", type=int, default=4, help="real images per timed step")
  parser.add_argument("--skip_step", action="store_true")
  parser.add_argument("--out", default=DEFAULT_OUT)
  args = parser.parse_args()

  from syncon_jax import platform

  platform.start_jax_program()
  from machine import header, write_json

  from configs import birdsnap

  config = birdsnap.get_config("objective=syncon")
  size = config.data.decode_size
  t_start = time.perf_counter()
  with tempfile.TemporaryDirectory() as root:
    paths = make_photos(root, args.images)
    kib = statistics.mean(os.path.getsize(p) for p in paths) / 1024
    threads = [int(t) for t in args.threads.split(",") if t]
    workers = [int(w) for w in args.workers.split(",") if w]
    fns, pools = decoders(paths, size, threads, workers)
    try:
      decode = time_decoders(fns, args.rounds, len(paths))
    finally:
      for pool in pools:
        pool.shutdown()
    try:
      grain_fns = {f"grain_{w}": grain_decoder(paths, size, w) for w in workers}
      grain_times = time_decoders(grain_fns, args.rounds, len(paths))
      decode["_load_1min"] += grain_times.pop("_load_1min")
      decode.update(grain_times)
      del grain_fns
    except ImportError:
      print("grain is not installed: its rows are skipped")
    config.batch_size = 64
    host = host_batch_rate(paths, config, steps=6)
  step = None
  if not args.skip_step:
    config.batch_size = args.step_batch
    step = step_rate(config, steps=2)

  result = {
    **header(),
    "images": args.images,
    "mean_file_kib": kib,
    "photo_sizes": PHOTO_SIZES,
    "decode_size": size,
    "image_size": config.data.image_size,
    "decode": decode,
    "host_batch": host,
    "step": step,
    "total_s": time.perf_counter() - t_start,
  }
  write_json(args.out, result)

  print(f"{args.images} JPEGs, mean {kib:.0f} KiB, decoded to {size} px (centred square)")
  print("| decoder | images/s (median) | images/s (best) |")
  print("|---|---|---|")
  for name, r in decode.items():
    if not name.startswith("_"):
      print(f"| {name} | {r['images_per_s_median']:.0f} | {r['images_per_s_best']:.0f} |")
  print(f"host batch (BatchSampler, batch 64): {host['real_images_per_s']:.0f} real images/s")
  if step:
    print(
      f"train step (configs/birdsnap.py, batch {step['batch_size']} + "
      f"{step['batch_size'] * step['synthetic_per_real']} synthetic, {step['views_per_step']} "
      f"views of {config.data.image_size} px): {step['real_images_per_s']:.2f} real images/s, "
      f"compile {step['compile_s']:.0f} s"
    )
    print(f"loader / step: {host['real_images_per_s'] / step['real_images_per_s']:.0f}x")
  print(f"1-min load: {decode['_load_1min']}; written to {args.out}")


if __name__ == "__main__":
  main()
