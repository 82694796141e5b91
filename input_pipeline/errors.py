"""The errors that are a user's mistake rather than a bug.

`launch.py` prints any `UserError` as one line `error: <message>` and exits with status 2; every
other exception is a bug and keeps its traceback. The message names the file or field, says what
is wrong and what to do. Both packages raise these, so they live at the bottom of the import graph.
"""


class UserError(ValueError):
  """A mistake in what the user gave: a path, a file's content, a checkpoint, a setting."""


class ConfigError(UserError):
  """A config field with a value that cannot work; the message starts `config.<field>=<value>`."""


def bad_field(field: str, value, why: str) -> ConfigError:
  """The error for config field `field` holding `value`: `config.<field>=<value>: <why>`."""
  return ConfigError(f'config.{field}={value!r}: {why}')


class NotFoundError(UserError, FileNotFoundError):
  """A path the user named does not exist, or holds nothing of what the command needs."""


class ExistsError(UserError, FileExistsError):
  """The command would overwrite something: it refuses, and changes nothing."""


class InUseError(UserError, RuntimeError):
  """Another process holds what the command needs (a lock)."""
