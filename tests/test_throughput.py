"""syncon_jax/throughput.py: FLOPs from XLA's cost analysis against analytic counts; the peak."""

import types

import jax
import jax.numpy as jnp
import optax
import pytest

from syncon_jax import throughput


def test_dense_training_step_flops_match_the_analytic_count():
  # value_and_grad of a dense layer + SGD: forward x@w (2BIO), backward dL/dw = x^T g (2BIO),
  # and dL/dx is not needed (x is no parameter): 4BIO from matmuls, the rest is elementwise.
  b, i, o = 64, 96, 128
  tx = optax.sgd(0.1)

  def step(w, opt_state, x, y):
    loss, g = jax.value_and_grad(lambda w: jnp.mean((x @ w - y) ** 2))(w)
    updates, opt_state = tx.update(g, opt_state, w)
    return optax.apply_updates(w, updates), opt_state, loss

  w = jnp.zeros((i, o))
  args = (w, tx.init(w), jnp.ones((b, i)), jnp.ones((b, o)))
  flops = throughput.step_flops(jax.jit(step), *args)
  analytic = 4 * b * i * o
  assert flops == pytest.approx(analytic, rel=0.05)


def test_tiny_conv_net_flops_match_the_analytic_count():
  # Two 3x3 'SAME' convolutions, forward only. XLA counts the multiply-adds that happen: a
  # kernel tap over the zero padding is none, so each output pixel has (taps inside) x Cin x Cout.
  b, h, c1, c2 = 4, 8, 3, 16

  def net(k1, k2, x):
    dn = ("NHWC", "HWIO", "NHWC")
    y = jax.lax.conv_general_dilated(x, k1, (1, 1), "SAME", dimension_numbers=dn)
    return jax.lax.conv_general_dilated(y, k2, (1, 1), "SAME", dimension_numbers=dn)

  args = (jnp.ones((3, 3, c1, c2)), jnp.ones((3, 3, c2, c2)), jnp.ones((b, h, h, c1)))
  flops = throughput.step_flops(jax.jit(net), *args)
  rows_inside = sum(1 for y in range(h) for dy in (-1, 0, 1) if 0 <= y + dy < h)  # 3h - 2
  taps = rows_inside**2  # summed over the output pixels of one image and channel pair
  analytic = 2 * b * taps * (c1 * c2 + c2 * c2)
  assert flops == pytest.approx(analytic, rel=0.05)


def test_flops_of_a_sharded_step_count_every_device():
  # conftest-free: one CPU device unless XLA_FLAGS fakes more; a sharded matmul's total FLOPs
  # are the same whatever the device count.
  n = jax.device_count()
  mesh = jax.make_mesh((n,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
  sharding = jax.NamedSharding(mesh, jax.P("data"))
  x = jax.device_put(jnp.ones((8 * n, 32)), sharding)
  w = jax.device_put(jnp.ones((32, 16)), jax.NamedSharding(mesh, jax.P()))
  flops = throughput.step_flops(jax.jit(lambda x, w: x @ w), x, w)
  assert flops == pytest.approx(2 * 8 * n * 32 * 16, rel=0.05)


def test_datasheet_table_matches_device_kinds_by_longest_prefix():
  assert throughput.datasheet_flops("NVIDIA H100 80GB HBM3") == 989e12
  assert throughput.datasheet_flops("NVIDIA H100 PCIe") == 756e12
  assert throughput.datasheet_flops("NVIDIA A100-SXM4-40GB") == 312e12
  assert throughput.datasheet_flops("TPU v5 lite") == 197e12
  assert throughput.datasheet_flops("TPU v5p") == 459e12
  assert throughput.datasheet_flops("Some new chip") is None


@pytest.fixture
def fresh_process():
  """A process that has not measured yet; afterwards the fake rates are forgotten, so that no
  later run in this worker (whose cache is the real ~/.cache file) sees them."""
  throughput._measured_in_this_process.cache_clear()
  yield
  throughput._measured_in_this_process.cache_clear()


def test_cpu_peak_keeps_the_best_measurement(tmp_path, monkeypatch, fresh_process):
  rates = iter([100e9, 40e9, 150e9])  # a busy machine reads low now and then
  monkeypatch.setattr(throughput, "measure_matmul_flops", lambda size: next(rates))
  path = str(tmp_path / "peak.json")
  peaks = []
  for _ in range(3):  # three processes: each measures once
    throughput._measured_in_this_process.cache_clear()
    peaks.append(throughput.cpu_peak_flops(path))
  assert peaks == [100e9, 100e9, 150e9]


def test_cpu_peak_is_measured_once_per_process(tmp_path, monkeypatch, fresh_process):
  rates = iter([40e9, 150e9])
  monkeypatch.setattr(throughput, "measure_matmul_flops", lambda size: next(rates))
  path = str(tmp_path / "peak.json")
  assert [throughput.cpu_peak_flops(path) for _ in range(3)] == [40e9, 40e9, 40e9]
  assert next(rates) == 150e9  # the second rate was never measured


def test_measured_matmul_rate_is_the_best_repeat(monkeypatch):
  # A fake clock (no wall-clock time read): repeats of 0.5, 0.25 and 0.4 s; the rate is 2 n^3
  # FLOPs over the fastest.
  ticks = iter([0.0, 0.5, 1.0, 1.25, 2.0, 2.4])
  monkeypatch.setattr(throughput, "time", types.SimpleNamespace(perf_counter=lambda: next(ticks)))
  assert throughput.measure_matmul_flops(size=128, repeats=3) == pytest.approx(2 * 128**3 / 0.25)


def test_peak_from_config_and_utilisation_row():
  cpu = jax.devices("cpu")
  peak, source = throughput.peak_flops(cpu[:1], override_tflops=2.0)
  assert (peak, source) == (2e12, "config")
  row = throughput.utilisation(steps_per_sec=4.0, flops=5e9, peak=100e9)
  assert row == pytest.approx({"gflops_per_sec": 20.0, "peak_share": 0.2})
  assert throughput.describe(row) == ", 20.0 GFLOP/s, 20.0% of peak"
  assert throughput.utilisation(4.0, None, 1e9) == {}


def test_throughput_counts_from_the_end_of_the_first_step(monkeypatch):
  """loop.Throughput, both trainers' log: rates since the first step (compilation excluded),
  FLOPs from the compiled step's cost analysis, the configured peak, ETA from the last rate."""
  from syncon_jax import loop

  # start, first step done (log, reset), a log step (row, describe), the same step logged again
  clock = iter([0.0, 10.0, 10.0, 12.0, 12.0, 13.0, 13.0])
  monkeypatch.setattr(loop, "time", types.SimpleNamespace(time=lambda: next(clock)))

  class Compiled:  # what a jitted step's .lower().compile() is, to step_flops
    def cost_analysis(self):
      return {"flops": 2e9}

  tp = loop.Throughput(
    0, 11, images_per_step=16, views_per_step=64, peak_tflops_per_device=1.0 / len(jax.devices())
  )
  tp.first_step_done({}, Compiled(), jnp.zeros(3))
  row = tp.row(5)  # steps 2..5 in the 2 s since the first step ended: 2 steps/s
  assert row == pytest.approx(
    {"images_per_sec": 32.0, "views_per_sec": 128.0, "gflops_per_sec": 4.0, "peak_share": 0.004}
  )
  assert (
    tp.describe(row) == "32.0 img/s (128.0 views/s, 4.0 GFLOP/s, 0.4% of peak)  elapsed 12s  ETA 3s"
  )
  # A row that counted no step has no rate, and no ETA to claim.
  assert (
    tp.describe(tp.row(5))
    == "0.0 img/s (0.0 views/s, 0.0 GFLOP/s, 0.0% of peak)  elapsed 13s  ETA ?"
  )
