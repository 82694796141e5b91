"""Whole files written so that a reader never sees half of one, and read back: the one mechanism
every writer of the project uses (both packages, so it lives at the bottom of the import graph)."""

import contextlib
import json
import os
from typing import IO, Iterator

from input_pipeline import errors


@contextlib.contextmanager
def atomic_write(path: str, mode: str = 'w', **open_kwargs) -> Iterator[IO]:
  """Opens a temporary file beside `path`; on success it is synced and renamed over `path`.

  A crash or an exception inside the block leaves `path` as it was (and no temporary file), so
  a job killed mid-write resumes from whole files only.
  """
  tmp = f'{path}.tmp-{os.getpid()}'
  try:
    with open(tmp, mode, **open_kwargs) as f:
      yield f
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def write_json(path: str, value, indent: int | None = 1) -> None:
  """Writes `value` as UTF-8 JSON with `atomic_write`."""
  with atomic_write(path, encoding='utf-8') as f:
    json.dump(value, f, indent=indent, ensure_ascii=False)


def write_bytes(path: str, data: bytes) -> None:
  """Writes `data` to `path` with `atomic_write`."""
  with atomic_write(path, 'wb') as f:
    f.write(data)


def read_json(path: str):
  """The JSON value in `path`. Raises a UserError naming the file if it is missing or not JSON."""
  try:
    with open(path, encoding='utf-8') as f:
      return json.load(f)
  except FileNotFoundError:
    raise errors.UserError(f'{path}: no such file') from None
  except json.JSONDecodeError as e:
    raise errors.UserError(f'{path}: not valid JSON ({e.msg}, line {e.lineno})') from None
