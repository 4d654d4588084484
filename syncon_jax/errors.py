"""Errors that mean "the user asked for something wrong", as opposed to a bug.

main.py and linear_eval.py catch `UserError`, print its message and exit non-zero without a
traceback; everything else propagates with its traceback.
"""


class UserError(Exception):
  """A mistake in the config, the command line or the data the user pointed us at."""


class ConfigError(UserError, ValueError):
  """A config value is missing, unknown or inconsistent (names the key at fault)."""


class DataError(UserError, ValueError):
  """Data is missing or unreadable (names the file, folder or class at fault)."""
