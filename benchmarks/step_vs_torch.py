r"""This project's training step against the same step in PyTorch eager, side by side.

The same network (ResNet-18 or -50 with the CIFAR stem, then the projection MLP
Linear -> BatchNorm -> ReLU -> Linear), the same SupCon loss (two views per sample, 10 classes,
temperature 0.1) and the same SGD (momentum 0.9, weight decay 1e-4 on kernels):

- ours: `jax.jit` of value_and_grad + optax update of `syncon_jax.models.create_model`, the state
  donated, as `syncon_jax.train.make_train_step` runs it minus augmentation (3% of the step);
- PyTorch: modules written here with torchvision's layout, the weights copied from the Flax
  model; before timing, the features and projections of both on the same images must agree to
  1e-5 (relative to their largest value; float32; 2e-4 for ResNet-50), or the script stops.

Rounds are interleaved (ours, PyTorch, ours, ...), each round timing `--steps` steps after the
warm-up, and each round runs in a fresh process of this script (`--only=jax` or `--only=torch`),
as a user runs either library: in one process PyTorch's OpenMP threads spin-wait between its ops
and take the cores from XLA's threads (the standard shape: ours 39.5 views/s beside PyTorch in one
process, 58.5 alone, 60.4 beside it with OMP_WAIT_POLICY=PASSIVE). `--in_process` times both in
this process instead. The table shows the median and the best round in views per second; the
JSON records the 1-minute load average before and after each shape.

  pip install -e '.[bench]'        # torch==2.13.0, CPU wheel
  python benchmarks/step_vs_torch.py                            # every shape, fp32 and bf16
  python benchmarks/step_vs_torch.py --shapes=demo --dtypes=float32 --rounds=3
  python benchmarks/step_vs_torch.py --only=jax --out=/tmp/x.json   # ours alone (flag sweeps)

The XLA flags are the project's CPU defaults (`syncon_jax/platform.py`) unless XLA_FLAGS is set
(then those, as in training). Writes benchmarks/results/step_vs_torch.json (or --out).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from syncon_jax import platform as syncon_platform  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from machine import dtypes_arg, header, max_rel_diff, write_json  # noqa: E402

# Before jax creates its CPU backend: the XLA CPU flags and the compilation cache, as in training.
syncon_platform.configure()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from flax import nnx  # noqa: E402

from syncon_jax import losses, models  # noqa: E402

DEFAULT_OUT = os.path.join(REPO, "benchmarks", "results", "step_vs_torch.json")

# name -> (model, width, image px, views per step, proj hidden, proj dim)
SHAPES = {
  "demo": ("resnet18", 8, 16, 512, 256, 64),  # configs/digits.py
  "standard": ("resnet18", 64, 32, 256, 512, 128),  # SupContrast's CIFAR ResNet-18
  "resnet50": ("resnet50", 64, 32, 64, 2048, 128),  # SupContrast's CIFAR ResNet-50
  # configs/digits.py:fewshot (20 real + 80 synthetic images, 2 views); ours only (seeds_vmap.py)
  "fewshot": ("resnet_tiny", 8, 16, 200, 256, 64),
}
TEMPERATURE = 0.1
LR, MOMENTUM, WEIGHT_DECAY = 0.05, 0.9, 1e-4
BN_MOMENTUM = 0.9  # Flax's convention; PyTorch's is 1 - this
# Train-mode BatchNorm divides by each batch's spread, which magnifies float32 rounding with
# depth: ResNet-18's features agree to ~2e-6, ResNet-50's (16 bottlenecks) to ~7e-5. A wrong
# copy differs by O(1).
FEATURE_RTOL = {"demo": 1e-5, "standard": 1e-5, "resnet50": 2e-4, "fewshot": 1e-5}
N_CLASSES = 10


def model_config(shape: str, dtype: str) -> ml_collections.ConfigDict:
  name, width, _, _, hidden, proj = SHAPES[shape]
  return ml_collections.ConfigDict(
    {
      "name": name,
      "stem": "cifar",
      "width": width,
      "proj_hidden_dim": hidden,
      "proj_dim": proj,
      "dtype": dtype,
      "bn_momentum": BN_MOMENTUM,
      "predictor_hidden_dim": 0,
    }
  )


def make_inputs(shape: str, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """-> images [views, px, px, 3] float32 (two views per sample, sample-major), labels [views/2]."""
  _, _, px, views, _, _ = SHAPES[shape]
  rng = np.random.default_rng(seed)
  images = rng.normal(size=(views, px, px, 3)).astype(np.float32)
  labels = rng.integers(0, N_CLASSES, views // 2).astype(np.int32)
  return images, labels


# ----------------------------------------------------------------------------------------------
# Ours.


def _decay_mask(params):
  return jax.tree.map(lambda p: p.ndim > 1, params)


def jax_step(shape: str, dtype: str, seed: int = 0):
  """-> (model, step, state); step(state, images, labels) -> (state, loss), jitted."""
  model = models.create_model(model_config(shape, dtype), rngs=nnx.Rngs(seed))
  graphdef, params, model_state = nnx.split(model, nnx.Param, ...)
  tx = optax.chain(
    optax.add_decayed_weights(WEIGHT_DECAY, mask=_decay_mask),
    optax.sgd(LR, momentum=MOMENTUM),
  )

  def step(state, images, labels):
    params, model_state, opt_state = state

    def loss_fn(params):
      m = nnx.merge(graphdef, params, model_state, copy=True)
      _, z = m(images, train=True)
      z = losses.l2_normalize(z.astype(jnp.float32))
      loss = losses.supcon_loss(
        z.reshape(labels.shape[0], 2, -1),
        labels,
        temperature=TEMPERATURE,
        base_temperature=TEMPERATURE,
      )
      return loss, nnx.state(m, nnx.Not(nnx.Param))

    (loss, new_model_state), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return (optax.apply_updates(params, updates), new_model_state, opt_state), loss

  # Copies: the step donates its state, and the model's own arrays are read again afterwards.
  state = jax.tree.map(jnp.copy, (params, model_state, tx.init(params)))
  return model, jax.jit(step, donate_argnums=(0,)), state


# ----------------------------------------------------------------------------------------------
# PyTorch (imported only when asked for).


def torch_modules():
  import torch
  from torch import nn

  class Block(nn.Module):
    def __init__(self, cin, planes, stride, bottleneck):
      super().__init__()
      self.bottleneck = bottleneck
      cout = planes * (4 if bottleneck else 1)
      if bottleneck:
        self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.conv3 = nn.Conv2d(planes, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout, momentum=1 - BN_MOMENTUM)
      else:
        self.conv1 = nn.Conv2d(cin, planes, 3, stride, 1, bias=False)
        self.conv2 = nn.Conv2d(planes, cout, 3, 1, 1, bias=False)
      self.bn1 = nn.BatchNorm2d(planes, momentum=1 - BN_MOMENTUM)
      self.bn2 = nn.BatchNorm2d(cout if not bottleneck else planes, momentum=1 - BN_MOMENTUM)
      self.project = stride != 1 or cin != cout
      if self.project:
        self.sc_conv = nn.Conv2d(cin, cout, 1, stride, bias=False)
        self.sc_bn = nn.BatchNorm2d(cout, momentum=1 - BN_MOMENTUM)

    def forward(self, x):
      y = torch.relu(self.bn1(self.conv1(x)))
      if self.bottleneck:
        y = torch.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
      else:
        y = self.bn2(self.conv2(y))
      sc = self.sc_bn(self.sc_conv(x)) if self.project else x
      return torch.relu(y + sc)

  class Net(nn.Module):
    def __init__(self, name, width, hidden, proj):
      super().__init__()
      bottleneck = name == "resnet50"
      stages = (3, 4, 6, 3) if bottleneck else (2, 2, 2, 2)
      self.stem_conv = nn.Conv2d(3, width, 3, 1, 1, bias=False)
      self.stem_bn = nn.BatchNorm2d(width, momentum=1 - BN_MOMENTUM)
      blocks, cin = [], width
      for i, n in enumerate(stages):
        for j in range(n):
          blocks.append(Block(cin, width * 2**i, 2 if i > 0 and j == 0 else 1, bottleneck))
          cin = width * 2**i * (4 if bottleneck else 1)
      self.blocks = nn.Sequential(*blocks)
      self.fc1 = nn.Linear(cin, hidden, bias=False)
      self.head_bn = nn.BatchNorm1d(hidden, momentum=1 - BN_MOMENTUM)
      self.fc2 = nn.Linear(hidden, proj)

    def forward(self, x):
      h = self.blocks(torch.relu(self.stem_bn(self.stem_conv(x)))).mean(dim=(2, 3))
      return h, self.fc2(torch.relu(self.head_bn(self.fc1(h))))

  def supcon(z, labels):
    """SupContrast's SupConLoss (contrast_mode 'all'), z [2B, d] normalised, view-major."""
    n = z.shape[0]
    lab = torch.cat([labels, labels])
    logits = z @ z.T / TEMPERATURE
    logits = logits - logits.max(dim=1, keepdim=True).values.detach()
    not_self = ~torch.eye(n, dtype=torch.bool)
    pos = (lab[:, None] == lab[None, :]) & not_self
    log_prob = logits - torch.log((torch.exp(logits) * not_self).sum(1, keepdim=True))
    mean_pos = (pos * log_prob).sum(1) / pos.sum(1).clamp(min=1)
    return -mean_pos.mean()

  return Net, supcon


def _copy_bn(tbn, fbn):
  import torch

  tbn.weight.data = torch.from_numpy(np.asarray(fbn.scale[...])).clone()
  tbn.bias.data = torch.from_numpy(np.asarray(fbn.bias[...])).clone()
  tbn.running_mean.data = torch.from_numpy(np.asarray(fbn.mean[...])).clone()
  tbn.running_var.data = torch.from_numpy(np.asarray(fbn.var[...])).clone()
  tbn.eps = fbn.epsilon


def _copy_conv(tconv, fconv):
  import torch

  k = np.asarray(fconv.kernel[...])  # [kh, kw, in, out] -> [out, in, kh, kw]
  tconv.weight.data = torch.from_numpy(np.ascontiguousarray(k.transpose(3, 2, 0, 1)))


def torch_from_flax(model, shape: str):
  """The PyTorch twin of our ContrastiveModel, with its weights."""
  import torch

  Net, _ = torch_modules()
  name, width, _, _, hidden, proj = SHAPES[shape]
  net = Net(name, width, hidden, proj)
  enc = model.encoder
  _copy_conv(net.stem_conv, enc.stem_conv)
  _copy_bn(net.stem_bn, enc.stem_bn)
  for tb, fb in zip(net.blocks, enc.blocks, strict=True):
    for i in (1, 2, 3):
      if hasattr(tb, f"conv{i}"):
        _copy_conv(getattr(tb, f"conv{i}"), getattr(fb, f"conv{i}"))
        _copy_bn(getattr(tb, f"bn{i}"), getattr(fb, f"bn{i}"))
    assert tb.project == fb.shortcut.project
    if tb.project:
      _copy_conv(tb.sc_conv, fb.shortcut.conv)
      _copy_bn(tb.sc_bn, fb.shortcut.bn)
  head = model.head
  net.fc1.weight.data = torch.from_numpy(np.ascontiguousarray(np.asarray(head.fc1.kernel[...]).T))
  _copy_bn(net.head_bn, head.bn)
  net.fc2.weight.data = torch.from_numpy(np.ascontiguousarray(np.asarray(head.fc2.kernel[...]).T))
  net.fc2.bias.data = torch.from_numpy(np.asarray(head.fc2.bias[...])).clone()
  n_torch = sum(p.numel() for p in net.parameters())
  n_ours = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(nnx.state(model, nnx.Param)))
  if n_torch != n_ours:
    raise SystemExit(f"{shape}: parameter counts differ: ours {n_ours}, PyTorch {n_torch}")
  return net, n_ours


def check_equal(model, net, images: np.ndarray) -> float:
  """Train-mode features and projections of both on the same images; -> max relative error."""
  import torch

  h, z = nnx.jit(lambda m, x: m(x, train=True))(nnx.clone(model), jnp.asarray(images))
  with torch.no_grad():
    th, tz = net.train()(torch.from_numpy(images.transpose(0, 3, 1, 2).copy()))
  return max(max_rel_diff(h, th.numpy()), max_rel_diff(z, tz.numpy()))


def torch_step(net, dtype: str):
  import torch

  _, supcon = torch_modules()
  decay = [p for p in net.parameters() if p.ndim > 1]
  rest = [p for p in net.parameters() if p.ndim <= 1]
  opt = torch.optim.SGD(
    [{"params": decay, "weight_decay": WEIGHT_DECAY}, {"params": rest, "weight_decay": 0.0}],
    lr=LR,
    momentum=MOMENTUM,
  )
  net.train()

  def step(images, labels):
    opt.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == "bfloat16"):
      _, z = net(images)
    z = torch.nn.functional.normalize(z.float(), dim=1)
    # Our rows are sample-major (sample i's views at 2i, 2i+1); SupCon wants view-major.
    b = labels.shape[0]
    z = z.reshape(b, 2, -1).transpose(0, 1).reshape(2 * b, -1)
    loss = supcon(z, labels)
    loss.backward()
    opt.step()
    return loss

  return step


# ----------------------------------------------------------------------------------------------
# Timing.


def _time_rounds(run_one, steps: int) -> tuple[float, float]:
  """-> (wall seconds, CPU seconds of this process) per step. On a shared machine the CPU time
  moves less with the load than the wall time (though a spinning thread pool inflates it)."""
  t0, c0 = time.perf_counter(), time.process_time()
  for _ in range(steps):
    run_one()
  return (time.perf_counter() - t0) / steps, (time.process_time() - c0) / steps


def measure(shape: str, dtype: str, args) -> dict:
  images, labels = make_inputs(shape)
  views = images.shape[0]
  load_before = os.getloadavg()[0]
  t0 = time.perf_counter()
  model, step, state = jax_step(shape, dtype)
  result = {"shape": shape, "dtype": dtype, "views": views, "model": model_config(shape, dtype)}
  result["model"] = dict(result["model"])
  j_images, j_labels = jnp.asarray(images), jnp.asarray(labels)
  runners = {}

  holder = {"state": state}

  def run_jax():
    holder["state"], loss = step(holder["state"], j_images, j_labels)
    loss.block_until_ready()

  if args.only in ("both", "jax"):
    compiled = step.lower(state, j_images, j_labels).compile()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    result["jax_flops_per_step"] = float(cost.get("flops", 0.0))
    run_jax()  # warm-up (the first call also compiles, from the in-memory cache)
    result["jax_compile_and_first_step_s"] = time.perf_counter() - t0
    runners["jax"] = run_jax

  if args.only in ("both", "torch"):
    import torch

    net, n_params = torch_from_flax(model, shape)
    result["params"] = n_params
    if dtype == "float32":
      result["feature_rel_err"] = check_equal(model, net, images[: min(views, 64)])
      if result["feature_rel_err"] > FEATURE_RTOL[shape]:
        raise SystemExit(f"{shape}: features differ by {result['feature_rel_err']:.2e} (relative)")
    t_step = torch_step(net, dtype)
    t_images = torch.from_numpy(images.transpose(0, 3, 1, 2).copy())
    t_labels = torch.from_numpy(labels.astype(np.int64))
    t_step(t_images, t_labels)  # warm-up
    runners["torch"] = lambda: t_step(t_images, t_labels)

  for name in runners:
    result[f"{name}_step_s"], result[f"{name}_step_cpu_s"] = [], []
  for _ in range(args.rounds):
    for name, run in runners.items():
      wall, cpu = _time_rounds(run, args.steps)
      result[f"{name}_step_s"].append(wall)
      result[f"{name}_step_cpu_s"].append(cpu)
  result["loadavg_1min"] = [load_before, os.getloadavg()[0]]
  return summarise(result)


def measure_isolated(shape: str, dtype: str, args) -> dict:
  """measure(), each round of each library in a fresh process of this script, interleaved."""
  load_before = os.getloadavg()[0]
  result = {}
  for _ in range(args.rounds):
    for lib in ("jax", "torch"):
      with tempfile.NamedTemporaryFile(suffix=".json") as f:
        cmd = [sys.executable, os.path.abspath(__file__), f"--only={lib}", f"--shapes={shape}"]
        cmd += [f"--dtypes={dtype}", "--rounds=1", f"--steps={args.steps}", f"--out={f.name}"]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode:
          last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
          raise SystemExit(f"{shape} {dtype}, {lib} round: {last}")
        with open(f.name) as fh:
          r = json.load(fh)["results"][0]
      for key, value in r.items():
        if key in (f"{lib}_step_s", f"{lib}_step_cpu_s"):
          result.setdefault(key, []).extend(value)
        elif not key.endswith(("_median", "_best", "loadavg_1min")):
          result.setdefault(key, value)  # shape, views, model, FLOPs, feature check, ...
  result["loadavg_1min"] = [load_before, os.getloadavg()[0]]
  return summarise(result)


def summarise(result: dict) -> dict:
  """Adds the median and best views/s of each library timed, and the ratios, to `result`."""
  views = result["views"]
  times = {n: result[f"{n}_step_s"] for n in ("jax", "torch") if f"{n}_step_s" in result}
  for name, ts in times.items():
    result[f"{name}_views_per_s_median"] = views / statistics.median(ts)
    result[f"{name}_views_per_s_best"] = views / min(ts)
  if "jax" in times and "jax_flops_per_step" in result:
    result["jax_gflops_per_s_median"] = (
      result["jax_flops_per_step"] / statistics.median(times["jax"]) / 1e9
    )
  if len(times) == 2:
    result["ratio_median"] = result["jax_views_per_s_median"] / result["torch_views_per_s_median"]
    result["ratio_best"] = result["jax_views_per_s_best"] / result["torch_views_per_s_best"]
  return result


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--shapes", default="demo,standard,resnet50")
  p.add_argument(
    "--dtypes",
    default="auto",
    help="comma-separated; auto: float32, and bfloat16 where the CPU has bf16 instructions",
  )
  p.add_argument("--rounds", type=int, default=3)
  p.add_argument("--steps", type=int, default=2, help="steps timed per round")
  p.add_argument("--only", choices=("both", "jax", "torch"), default="both")
  p.add_argument("--in_process", action="store_true", help="time both libraries in this process")
  p.add_argument("--out", default=DEFAULT_OUT)
  args = p.parse_args()
  versions = {
    "jax": jax.__version__,
    "jaxlib": jax.lib.__version__,
    "python": sys.version.split()[0],
  }
  if args.only != "jax":
    import torch

    versions["torch"] = torch.__version__
    versions["torch_threads"] = torch.get_num_threads()
    versions["onednn"] = torch.backends.mkldnn.is_available()
  out = {
    **header(),
    "versions": versions,
    "xla_flags": os.environ.get("XLA_FLAGS", ""),
    "rounds": args.rounds,
    "steps_per_round": args.steps,
    "isolated": args.only == "both" and not args.in_process,
    "results": [],
  }
  dtypes = dtypes_arg(args.dtypes, out["machine"])
  t0 = time.perf_counter()
  for shape in args.shapes.split(","):
    for dtype in dtypes:
      isolated = args.only == "both" and not args.in_process
      r = (measure_isolated if isolated else measure)(shape, dtype, args)
      out["results"].append(r)
      line = f"{shape:9s} {dtype:9s}"
      for name in ("jax", "torch"):
        if f"{name}_views_per_s_median" in r:
          line += (
            f"  {name} {r[f'{name}_views_per_s_median']:8.1f} views/s"
            f" (best {r[f'{name}_views_per_s_best']:.1f})"
          )
      if "ratio_median" in r:
        line += f"  ratio {r['ratio_median']:.2f}"
      print(line + f"  load {r['loadavg_1min'][0]:.1f}", flush=True)
      out["total_s"] = time.perf_counter() - t0
      write_json(args.out, out)  # after every shape: a run stopped early keeps what it measured
  print(markdown_table(out))
  print(f"wrote {args.out} in {out['total_s']:.0f}s")


def markdown_table(out: dict) -> str:
  rows = [
    "| shape | dtype | ours views/s (median, best) | PyTorch views/s (median, best) | ratio | load |",
    "|---|---|---|---|---|---|",
  ]
  for r in out["results"]:
    ours = theirs = ratio = ""
    if "jax_views_per_s_median" in r:
      ours = f"{r['jax_views_per_s_median']:.3g}, {r['jax_views_per_s_best']:.3g}"
    if "torch_views_per_s_median" in r:
      theirs = f"{r['torch_views_per_s_median']:.3g}, {r['torch_views_per_s_best']:.3g}"
    if "ratio_median" in r:
      ratio = f"{r['ratio_median']:.2f}"
    load = f"{max(r['loadavg_1min']):.0f}"
    rows.append(f"| {r['shape']} | {r['dtype']} | {ours} | {theirs} | {ratio} | {load} |")
  return "\n".join(rows)


if __name__ == "__main__":
  main()
