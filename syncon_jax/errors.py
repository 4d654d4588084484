"""Errors that mean "the user asked for something wrong", as opposed to a bug.

Every program's main runs inside `exit_on_user_error()`: a `UserError` is printed and exits 2
without a traceback; everything else propagates with its traceback.
"""

import contextlib
import sys


class UserError(Exception):
  """A mistake in the config, the command line or the data the user pointed us at."""


class ConfigError(UserError, ValueError):
  """A config value is missing, unknown or inconsistent (names the key at fault)."""


class DataError(UserError, ValueError):
  """Data is missing or unreadable (names the file, folder or class at fault)."""


@contextlib.contextmanager
def exit_on_user_error():
  """For program entry points: a UserError is printed once as 'error: ...' and exits 2.

  Printed, not logged: absl's handler writes ERROR records to stderr as well, which showed every
  mistake twice.
  """
  try:
    yield
  except UserError as e:
    print(f"error: {e}", file=sys.stderr, flush=True)
    sys.exit(2)
