"""Writing files so that a reader never sees half of one: the one mechanism every writer uses."""

import contextlib
import json
import os
from typing import IO, Iterator


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
