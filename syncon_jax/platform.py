"""Process-wide settings that must be made before jax creates its backends.

`configure()` is called once, first thing, by the entry points (main.py, linear_eval.py, the
benchmarks). It does two things:

- XLA CPU flags measured fastest for this project's step (benchmarks/xla_flags.py, results in
  benchmarks/results/xla_flags.json). They are `xla_cpu_*` options, so they change only what
  the CPU compiler emits: a GPU or TPU run is untouched. A flag the user already set in
  XLA_FLAGS wins over ours; SYNCON_XLA_CPU_DEFAULTS=0 adds none. Revisit when jaxlib changes.
- A persistent compilation cache shared by every run of this user (outside the workdir), so a
  second run of the same config skips XLA's compilation. JAX_COMPILATION_CACHE_DIR, if the user
  set it, is left to jax; SYNCON_COMPILATION_CACHE_DIR moves ours, and '' turns it off.
"""

import os
from collections.abc import MutableMapping

# jaxlib 0.10.2 on a 2-core AMD EPYC (AVX-512): with YNNPACK's convolutions (XLA's default on
# CPU) the standard ResNet-18 step took 26.4 CPU s, with XLA's own convolution emitter 16.1 s;
# the demo step 0.50 s either way (benchmarks/results/xla_flags_standard.json,
# xla_flags_demo.json). YNNPACK keeps its dot and elementwise fusions.
CPU_XLA_FLAGS: tuple[str, ...] = ("--xla_cpu_experimental_ynn_fusion_type=-individual_convolution",)

DEFAULTS_ENV = "SYNCON_XLA_CPU_DEFAULTS"
CACHE_ENV = "SYNCON_COMPILATION_CACHE_DIR"
DEFAULT_CACHE_DIR = os.path.join("~", ".cache", "syncon_jax", "jax_compilation")


def _flag_name(flag: str) -> str:
  return flag.split("=", 1)[0].lstrip("-")


def xla_flags_with_defaults(user_flags: str, defaults: tuple[str, ...] = CPU_XLA_FLAGS) -> str:
  """The user's XLA_FLAGS plus each default flag the user did not set (by name)."""
  given = {_flag_name(f) for f in user_flags.split()}
  added = [f for f in defaults if _flag_name(f) not in given]
  return " ".join([*user_flags.split(), *added])


def cpu_defaults_on(environ: MutableMapping[str, str] = os.environ) -> bool:
  """Whether the project's CPU tuning applies: the XLA flags below and the model's
  `resnet.fusion_fence`; SYNCON_XLA_CPU_DEFAULTS=0 turns both off."""
  return environ.get(DEFAULTS_ENV, "1") != "0"


def configure_xla_cpu(environ: MutableMapping[str, str] = os.environ) -> None:
  """Adds CPU_XLA_FLAGS to environ['XLA_FLAGS'] (read when jax creates its CPU backend)."""
  if not cpu_defaults_on(environ):
    return
  environ["XLA_FLAGS"] = xla_flags_with_defaults(environ.get("XLA_FLAGS", ""))


def compilation_cache_dir(environ: MutableMapping[str, str] = os.environ) -> str | None:
  """Where our persistent compilation cache lives, or None (the user's own setting, or off)."""
  if "JAX_COMPILATION_CACHE_DIR" in environ:
    return None  # jax reads the user's variable itself
  path = environ.get(CACHE_ENV, DEFAULT_CACHE_DIR)
  return os.path.expanduser(path) if path else None


def configure_compilation_cache(environ: MutableMapping[str, str] = os.environ) -> str | None:
  """Turns on the persistent compilation cache in compilation_cache_dir(); -> the directory."""
  path = compilation_cache_dir(environ)
  if path is None:
    return None
  import jax

  jax.config.update("jax_compilation_cache_dir", path)
  # jax caches only programs that took over a second to compile by default; the step and the
  # initialisers of a small model take less on a fast machine and are still worth keeping.
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  return path


def configure(environ: MutableMapping[str, str] = os.environ) -> None:
  """Both of the above; call before the first jax computation."""
  configure_xla_cpu(environ)
  configure_compilation_cache(environ)


def start_jax_program() -> None:
  """What every program that runs jax does first, before jax creates a backend: quiet the
  libraries' logs, set the XLA CPU flags and turn on the compilation cache. (Without it the
  experiment tools trained under XLA's default flags and compiled every run's step afresh.)"""
  from syncon_jax import metrics  # imports jax: not at this module's import (tools/generate)

  metrics.quiet_library_logs()
  configure()


def cpu_model() -> str:
  """The CPU's model name from /proc/cpuinfo (for logs and benchmark records); 'unknown cpu'."""
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return "unknown cpu"
