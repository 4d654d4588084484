"""The command line of every program: absl flags whose mistakes are one line, exit 2.

ml_collections' config flag loads the config file and applies `--config.KEY=VALUE` overrides
while the flag is being *defined* (it reads sys.argv then), and absl parses the other flags in
app.run; a mistake in either printed one to three tracebacks, with the useful sentence at the
end. `run` defines and parses the flags itself and turns each such mistake into one line that
names the flag at fault:

    error: --config.objective.temprature: configs/digits.py has no key objective.temprature
    (did you mean temperature?) ...
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable, Sequence

from absl import app, flags

from syncon_jax.errors import UserError

# What every program that takes --config says about it in --help.
CONFIG_HELP = (
  "Config file, with variants after a colon: --config=configs/digits.py:objective=supcon,"
  "weighting=fixed,runlocal (each config's docstring lists its variants). Override any key "
  "after it with --config.KEY=VALUE, e.g. --config.objective.temperature=0.07 or "
  "--config.data.synthetic_dir=/data/syn; tuples as --config.KEY='(1, 2)'. The keys and their "
  "defaults are in the config file and configs/common.py; DESIGN.md 'Configs' lists those "
  "scripts rely on. Run with --dry_run to print the resolved config without training."
)


def _chain(e: BaseException) -> list[BaseException]:
  """e and every exception it was raised from or while handling, outermost first."""
  out = [e]
  while (nxt := out[-1].__cause__ or out[-1].__context__) is not None and nxt not in out:
    out.append(nxt)
  return out


def _flag_values(argv: Sequence[str], name: str) -> list[tuple[str, str]]:
  """(flag, value) of every --name=... and --name.KEY=... in argv."""
  out = []
  for arg in argv:
    m = re.match(rf"--{re.escape(name)}(\.[\w.]+)?(?:=(.*))?$", arg)
    if m:
      out.append((f"--{name}{m.group(1) or ''}", m.group(2) or ""))
  return out


def flag_error_message(e: BaseException, argv: Sequence[str]) -> str:
  """The one line that says which flag in argv is at fault for the parse error e, and why."""
  chain = _chain(e)
  root = chain[-1]
  config_file = next((v for f, v in _flag_values(argv, "config") if f == "--config"), None)
  file_only = (config_file or "the config").partition(":")[0]
  user = next((x for x in reversed(chain) if isinstance(x, UserError)), None)
  if user is not None:  # a variant the config file refused, say
    message = str(user)
    if "Traceback (most recent call last)" in message:
      # config_flags re-raises the config's error with the whole traceback as its message.
      message = [line for line in message.splitlines() if line.strip()][-1]
      message = re.sub(r"^[\w.]+Error: ", "", message)
    return f"--config={config_file}: {message}"
  text = " ".join(str(x) for x in chain)
  if "Failed loading config file" in text or "No such file or directory" in text:
    if os.path.isdir("configs"):
      listing = ", ".join(sorted(f for f in os.listdir("configs") if f.endswith(".py")))
    else:
      listing = "none here: run from the repository root"
    return f"--config={config_file}: no such config file (configs/: {listing})"
  if isinstance(root, ModuleNotFoundError) and root.name == "configs":
    return f"--config={config_file}: configs/ is not importable; run from the repository root"
  if "is not supported for overriding" in text and "NoneType" in text:
    m = re.search(r"field config\.([\w.]+)", text)
    key = m.group(1) if m else "?"
    return (
      f"--config.{key}: {file_only} gives this key a plain None default, which the command line "
      "cannot override; declare it with configs.common.optional(type) in the config file"
    )
  if isinstance(root, KeyError | AttributeError) or "Did you mean" in text:
    # ConfigDict's message for a missing key: "'name'" and maybe 'Did you mean "x" instead...'.
    missing = re.search(r"'(\w+)'", str(root))
    suggestion = re.search(r'Did you mean "(\w+)"', text)
    name = missing.group(1) if missing else None
    flag = next(
      (f for f, _ in _flag_values(argv, "config") if name and name in f.split(".")[1:]), None
    )
    what = flag or (f"--config key {missing.group(1)!r}" if missing else "a --config override")
    hint = f" (did you mean {suggestion.group(1)}?)" if suggestion else ""
    return (
      f"{what}: no such key in {file_only}{hint}; the keys are in the config file and "
      "configs/common.py (see --helpshort)"
    )
  if isinstance(e, flags.UnrecognizedFlagError):
    return f"{str(e).splitlines()[0]} (see --helpshort for this program's flags)"
  first = next((line for line in str(e).splitlines() if line.strip()), repr(e))
  return first.removeprefix("flag ")


def fail(message: str) -> None:
  """Prints 'error: message' to stderr and exits 2 (a user's mistake, not a crash)."""
  print(f"error: {message}", file=sys.stderr)
  sys.exit(2)


def run(main: Callable[[list[str]], None], define_flags: Callable[[], None]) -> None:
  """app.run(main) with flags defined by define_flags; a flag mistake is one line, exit 2."""
  try:
    define_flags()
  except Exception as e:  # every parse failure becomes the one line
    fail(flag_error_message(e, sys.argv))

  def parse(argv: list[str]) -> list[str]:
    try:
      rest = flags.FLAGS(argv)
      if "config" in flags.FLAGS:
        # A config file that failed to load raises only when its value is first read.
        list(flags.FLAGS.config.keys())
      return rest
    except Exception as e:
      fail(flag_error_message(e, argv))

  app.run(main, flags_parser=parse)


def print_config(config) -> None:
  """The resolved config as JSON on stdout (what --dry_run shows)."""
  print(config.to_json_best_effort(indent=2, sort_keys=True))
