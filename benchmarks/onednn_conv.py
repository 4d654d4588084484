r"""oneDNN's convolutions, called from XLA through its FFI, against XLA's own, layer by layer.

Why: XLA:CPU (jaxlib 0.10.2) runs a bfloat16 convolution in float32 (converts around every one),
so `model.dtype=bfloat16` cannot be faster than float32 on a CPU with bf16 instructions, while
PyTorch's autocast runs oneDNN's bf16 kernels there (issue 18). A convolution through oneDNN,
with its two gradients, is the way the issue names. This script builds one
(benchmarks/onednn_conv.cc: forward, backward to the data, backward to the kernel, on NHWC
activations and HWIO kernels as nnx.Conv lays them out) and measures whether it pays before the
model uses it:

- every layer of ResNet-18 at the demo shape (width 8, 16 px, 512 views) and the standard shape
  (width 64, 32 px, 256 views): the stem, each stage's 3x3 convolutions, the stride-2 entries and
  the 1x1 shortcuts;
- for each layer, one jitted function computing y, dx and dkernel (the forward and the VJP of a
  fixed random cotangent), with XLA (`models.resnet.small_map_conv`, the model's convolution, on
  the project's XLA CPU flags) and with oneDNN; before timing, the two must agree to 1e-4
  relative to the largest value in float32 (2e-2 in bf16), or the script stops;
- rounds interleaved (XLA, oneDNN, XLA, ...), the median per layer; a step's total weights each
  layer by how often ResNet-18 has it (20 convolutions);
- the implementation oneDNN chose for each (e.g. `gemm:jit`, `brg:avx512_core_amx`), or why it
  has none (bf16 needs AVX-512 in oneDNN 3.2).

  pip install -e '.[bench]'                     # onednn-devel-cpu-gomp==2023.2.0 (and torch)
  python benchmarks/onednn_conv.py              # demo and standard; bf16 where the CPU has it
  python benchmarks/onednn_conv.py --shapes=standard --dtypes=float32,bfloat16 --rounds=5

Needs g++ (the library builds in a temporary folder, ~20 s). Writes
benchmarks/results/onednn_conv.json (or --out).
"""

from __future__ import annotations

import argparse
import ctypes
import functools
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

# Before jax creates its CPU backend: the XLA CPU flags, as in training.
syncon_platform.configure()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from syncon_jax.models import resnet  # noqa: E402

DEFAULT_OUT = os.path.join(REPO, "benchmarks", "results", "onednn_conv.json")
SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "onednn_conv.cc")
TARGETS = ("OnednnConvForward", "OnednnConvBackwardData", "OnednnConvBackwardWeights")
# name -> (width, image px, views): step_vs_torch.py's shapes.
SHAPES = {"demo": (8, 16, 512), "standard": (64, 32, 256)}
RTOL = {"float32": 1e-4, "bfloat16": 2e-2}


def resnet18_layers(width: int, px: int) -> list[dict]:
  """ResNet-18's convolutions with the CIFAR stem: {name, hw (input side), c_in, c_out, k,
  stride, count (how many the network has)}."""
  layers = [dict(name="stem", hw=px, c_in=3, c_out=width, k=3, stride=1, count=1)]
  layers.append(dict(name="stage1", hw=px, c_in=width, c_out=width, k=3, stride=1, count=4))
  hw, c = px, width
  for stage in (2, 3, 4):
    layers += [
      dict(name=f"stage{stage}_entry", hw=hw, c_in=c, c_out=2 * c, k=3, stride=2, count=1),
      dict(name=f"stage{stage}_shortcut", hw=hw, c_in=c, c_out=2 * c, k=1, stride=2, count=1),
      dict(name=f"stage{stage}", hw=hw // 2, c_in=2 * c, c_out=2 * c, k=3, stride=1, count=3),
    ]
    hw, c = hw // 2, 2 * c
  return layers


def build(out_dir: str) -> str:
  """Compiles onednn_conv.cc against the pip package's oneDNN (headers and libdnnl in
  sys.prefix) and jaxlib's FFI headers -> the shared library's path."""
  include, lib = os.path.join(sys.prefix, "include"), os.path.join(sys.prefix, "lib")
  if not os.path.exists(os.path.join(include, "oneapi", "dnnl", "dnnl.hpp")):
    sys.exit(f"no oneDNN headers in {include}: pip install -e '.[bench]'")
  path = os.path.join(out_dir, "libonednn_conv.so")
  cmd = [
    "g++", "-O2", "-std=c++17", "-shared", "-fPIC", "-w", SOURCE, "-o", path,
    f"-I{include}", f"-I{jax.ffi.include_dir()}", f"-L{lib}", "-ldnnl", f"-Wl,-rpath,{lib}",
  ]  # fmt: skip
  subprocess.run(cmd, check=True)
  return path


def load(path: str) -> ctypes.CDLL:
  """Loads the library and registers its three handlers as XLA CPU custom calls."""
  lib = ctypes.cdll.LoadLibrary(path)
  for name in TARGETS:
    jax.ffi.register_ffi_target(name, jax.ffi.pycapsule(getattr(lib, name)), platform="cpu")
  return lib


def _attrs(strides, padding) -> dict:
  (sh, sw), ((pt, pb), (pl, pr)) = strides, padding
  return {k: np.int64(v) for k, v in dict(sh=sh, sw=sw, pt=pt, pb=pb, pl=pl, pr=pr).items()}


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def onednn_conv(x, kernel, strides, padding):
  """x [n, h, w, c] (*) kernel [kh, kw, c, o] -> [n, oh, ow, o], as lax.conv_general_dilated
  with NHWC/HWIO/NHWC dimension numbers; float32 or bfloat16."""
  n, h, w, _ = x.shape
  kh, kw, _, o = kernel.shape
  (sh, sw), ((pt, pb), (pl, pr)) = strides, padding
  out = jax.ShapeDtypeStruct(
    (n, (h + pt + pb - kh) // sh + 1, (w + pl + pr - kw) // sw + 1, o), x.dtype
  )
  return jax.ffi.ffi_call(TARGETS[0], out)(x, kernel, **_attrs(strides, padding))


def _fwd(x, kernel, strides, padding):
  return onednn_conv(x, kernel, strides, padding), (x, kernel)


def _bwd(strides, padding, residuals, dy):
  x, kernel = residuals
  attrs = _attrs(strides, padding)
  dx = jax.ffi.ffi_call(TARGETS[1], jax.ShapeDtypeStruct(x.shape, x.dtype))(dy, kernel, **attrs)
  dk = jax.ffi.ffi_call(TARGETS[2], jax.ShapeDtypeStruct(kernel.shape, kernel.dtype))(
    x, dy, **attrs
  )
  return dx, dk


onednn_conv.defvjp(_fwd, _bwd)


def xla_conv(x, kernel, strides, padding):
  """The model's convolution (small_map_conv: a matmul onto <= 4 output pixels)."""
  return resnet.small_map_conv(
    x,
    kernel,
    strides,
    padding,
    dimension_numbers=jax.lax.conv_dimension_numbers(x.shape, kernel.shape, resnet._NHWC),
  )


def chosen_impls(lib: ctypes.CDLL, layer: dict, n: int, dtype: str) -> dict:
  """{'forward'|'backward_data'|'backward_weights': oneDNN's implementation or 'unimplemented: ...'}."""
  x = (ctypes.c_int64 * 4)(n, layer["hw"], layer["hw"], layer["c_in"])
  k = (ctypes.c_int64 * 4)(layer["k"], layer["k"], layer["c_in"], layer["c_out"])
  p = (layer["k"] - 1) // 2
  sp = (ctypes.c_int64 * 6)(layer["stride"], layer["stride"], p, p, p, p)
  out = {}
  for kind, name in ((b"f", "forward"), (b"d", "backward_data"), (b"w", "backward_weights")):
    buf = ctypes.create_string_buffer(512)
    lib.OnednnConvImpl(ctypes.c_char(kind), x, k, int(dtype == "bfloat16"), sp, buf, 512)
    out[name] = buf.value.decode()
  return out


def layer_fn(conv, strides, padding):
  """jit of (x, kernel, dy) -> (y, dx, dkernel)."""

  def f(x, kernel, dy):
    y, vjp = jax.vjp(lambda a, b: conv(a, b, strides, padding), x, kernel)
    return (y, *vjp(dy))

  return jax.jit(f)


def measure_layer(layer: dict, n: int, dtype: str, rounds: int) -> dict:
  rng = np.random.default_rng(0)
  p = (layer["k"] - 1) // 2
  strides, padding = (layer["stride"],) * 2, ((p, p), (p, p))
  x = jnp.asarray(rng.normal(size=(n, layer["hw"], layer["hw"], layer["c_in"])), dtype)
  fan_in = layer["k"] ** 2 * layer["c_in"]
  kernel = jnp.asarray(
    rng.normal(size=(layer["k"], layer["k"], layer["c_in"], layer["c_out"])) / np.sqrt(fan_in),
    dtype,
  )
  fns = {
    "xla": layer_fn(xla_conv, strides, padding),
    "onednn": layer_fn(onednn_conv, strides, padding),
  }
  y = jax.eval_shape(lambda a, b: xla_conv(a, b, strides, padding), x, kernel)
  dy = jnp.asarray(rng.normal(size=y.shape), dtype)
  outs = {name: jax.block_until_ready(f(x, kernel, dy)) for name, f in fns.items()}  # compiles
  diffs = {
    k: max_rel_diff(a, b)
    for k, a, b in zip(("y", "dx", "dkernel"), outs["onednn"], outs["xla"], strict=True)
  }
  if max(diffs.values()) > RTOL[dtype]:
    sys.exit(f"{layer['name']} {dtype}: oneDNN differs from XLA by {diffs} (> {RTOL[dtype]})")
  times = {name: [] for name in fns}
  for _ in range(rounds):
    for name, f in fns.items():
      t0 = time.perf_counter()
      jax.block_until_ready(f(x, kernel, dy))
      times[name].append(time.perf_counter() - t0)
  return {
    **layer,
    "max_rel_diff": diffs,
    "xla_ms": [t * 1e3 for t in times["xla"]],
    "onednn_ms": [t * 1e3 for t in times["onednn"]],
    "xla_ms_median": statistics.median(times["xla"]) * 1e3,
    "onednn_ms_median": statistics.median(times["onednn"]) * 1e3,
  }


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--shapes", default="demo,standard")
  p.add_argument(
    "--dtypes",
    default="auto",
    help="comma-separated; auto: float32, and bfloat16 where the CPU has it",
  )
  p.add_argument("--rounds", type=int, default=3)
  p.add_argument("--out", default=DEFAULT_OUT)
  args = p.parse_args()
  out = {**header(), "versions": {"jax": jax.__version__, "python": sys.version.split()[0]}}
  out.update(xla_flags=os.environ.get("XLA_FLAGS", ""), rounds=args.rounds, results=[])
  dtypes = dtypes_arg(args.dtypes, out["machine"])
  t0 = time.perf_counter()
  with tempfile.TemporaryDirectory() as tmp:
    lib = load(build(tmp))
    for shape in args.shapes.split(","):
      width, px, n = SHAPES[shape]
      for dtype in dtypes:
        for layer in resnet18_layers(width, px):
          impls = chosen_impls(lib, layer, n, dtype)
          r = {"shape": shape, "dtype": dtype, "onednn_impl": impls}
          if any(v.startswith("unimplemented") for v in impls.values()):
            r.update(layer)
            print(
              f"{shape:8s} {dtype:8s} {layer['name']:16s} oneDNN: {impls['forward']}", flush=True
            )
          else:
            r.update(measure_layer(layer, n, dtype, args.rounds))
            print(
              f"{shape:8s} {dtype:8s} {layer['name']:16s} xla {r['xla_ms_median']:8.1f} ms"
              f"  oneDNN {r['onednn_ms_median']:8.1f} ms ({impls['forward']}, "
              f"{impls['backward_data']}, {impls['backward_weights']})",
              flush=True,
            )
          out["results"].append(r)
          out["total_s"] = time.perf_counter() - t0
          write_json(args.out, out)  # after every layer: a run stopped early keeps what it measured
  out["steps"] = step_totals(out["results"])
  write_json(args.out, out)
  for s in out["steps"]:
    print(
      f"{s['shape']:8s} {s['dtype']:8s} ResNet-18's 20 convolutions: xla {s['xla_ms']:.0f} ms,"
      f" oneDNN {s['onednn_ms']:.0f} ms, xla / oneDNN {s['ratio']:.2f}"
    )
  print(f"wrote {args.out} in {out['total_s']:.0f}s")


def step_totals(results: list[dict]) -> list[dict]:
  """Per (shape, dtype) measured whole: the layers' medians weighted by their counts."""
  totals = []
  for key in dict.fromkeys((r["shape"], r["dtype"]) for r in results):
    rows = [r for r in results if (r["shape"], r["dtype"]) == key]
    if any("xla_ms_median" not in r for r in rows):
      continue
    xla = sum(r["count"] * r["xla_ms_median"] for r in rows)
    onednn = sum(r["count"] * r["onednn_ms_median"] for r in rows)
    totals.append(
      {"shape": key[0], "dtype": key[1], "xla_ms": xla, "onednn_ms": onednn, "ratio": xla / onednn}
    )
  return totals


if __name__ == "__main__":
  main()
