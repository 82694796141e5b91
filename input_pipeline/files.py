"""Every file operation of the project, on a local disk or in a bucket (`gs://...`), in one place.

Paths are `etils.epath.Path`s (`resolve`): local paths made absolute, bucket paths as given (epath
reads and writes them through `gcsfs`). What differs between the two is decided here only:

  * whole-file writes (`atomic_write`, `write_json`, `write_bytes`): a reader sees the old file or
    the new one, never a part. Locally: a temporary file beside the target, synced, renamed over
    it. In a bucket an object is replaced whole by the store itself when its upload completes, and
    a rename is a copy, so the content is kept in memory and uploaded once, at the end of the block;
    an exception inside the block uploads nothing;
  * `put_file`: a finished local file (a library that can only write local files, array_record's
    writer) moved to its place: a rename locally, an upload (whole object) to a bucket;
  * `create_exclusive`: create a small file only if it does not exist (a lock): a hard link
    locally, an upload with the precondition if-generation-match=0 in a bucket;
  * `read_range`: bytes `[offset, offset + length)` of a file, one ranged request in a bucket;
    `read_ranges` several ranges of one file at once (concurrent requests in a bucket);
  * `local_copy`: a local file name for a library that reads local files only (a download).

A string path never reaches `os.path`, `open` or `shutil` in project code where a bucket may stand:
code joins paths with `/` on what `resolve` returns.
"""

import contextlib
import io
import json
import os
import tempfile
from typing import IO, Iterator

from etils import epath
from etils.epath import backend as epath_backend
import fsspec

from input_pipeline import errors

PathLike = str | os.PathLike


def is_remote(path: PathLike) -> bool:
  """Whether `path` names an object store (`gs://bucket/...`, any `scheme://`), not a local file."""
  return '://' in os.fspath(path)


def resolve(path: PathLike) -> epath.Path:
  """`path` as an epath.Path: a bucket path as given, a local one absolute (never './gs:/...')."""
  path = os.fspath(path)
  return epath.Path(path if is_remote(path) else os.path.abspath(os.path.expanduser(path)))


def _fs(path: PathLike) -> fsspec.AbstractFileSystem:
  """The fsspec filesystem of a bucket path: the very one epath uses (so that both share one
  listing cache, which `forget_listings` clears)."""
  return epath_backend.fsspec_backend.fs(os.fspath(path))


@contextlib.contextmanager
def atomic_write(path: PathLike, mode: str = 'w', **open_kwargs) -> Iterator[IO]:
  """A file to write `path` through; the content replaces `path` whole when the block ends.

  A crash or an exception inside the block leaves `path` as it was (and, locally, no temporary
  file), so a job killed mid-write resumes from whole files only.
  """
  path = resolve(path)
  if is_remote(path):
    buffer = io.BytesIO() if 'b' in mode else io.StringIO()
    yield buffer
    data = buffer.getvalue()
    path.write_bytes(data if isinstance(data, bytes)
                     else data.encode(open_kwargs.get('encoding') or 'utf-8'))
    return
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


def write_json(path: PathLike, value, indent: int | None = 1) -> None:
  """Writes `value` as UTF-8 JSON with `atomic_write`."""
  with atomic_write(path, encoding='utf-8') as f:
    json.dump(value, f, indent=indent, ensure_ascii=False)


def write_bytes(path: PathLike, data: bytes) -> None:
  """Writes `data` to `path` with `atomic_write`."""
  with atomic_write(path, 'wb') as f:
    f.write(data)


def read_json(path: PathLike):
  """The JSON value in `path`. Raises a UserError naming the file if it is missing or not JSON."""
  path = resolve(path)
  try:
    return json.loads(path.read_text(encoding='utf-8'))
  except FileNotFoundError:
    raise errors.UserError(f'{path}: no such file') from None
  except json.JSONDecodeError as e:
    raise errors.UserError(f'{path}: not valid JSON ({e.msg}, line {e.lineno})') from None


def put_file(local: PathLike, dest: PathLike) -> None:
  """Moves the finished local file `local` to `dest`: a synced rename locally, an upload to a
  bucket (the object appears whole when the upload completes; `local` is then removed)."""
  local, dest = os.fspath(local), resolve(dest)
  if is_remote(dest):
    _fs(dest).put_file(local, os.fspath(dest))
    os.remove(local)
    return
  with open(local, 'rb') as f:
    os.fsync(f.fileno())
  os.replace(local, dest)


def create_exclusive(path: PathLike, data: bytes) -> bool:
  """Creates `path` holding `data` if no file is there; False (and no change) if one is."""
  path = resolve(path)
  if is_remote(path):
    try:
      _fs(path).pipe_file(os.fspath(path), data, mode='create')
    except FileExistsError:
      return False
    return True
  tmp = f'{path}.tmp-{os.getpid()}'
  write_bytes(tmp, data)
  try:
    os.link(tmp, path)
    return True
  except FileExistsError:
    return False
  finally:
    os.remove(tmp)


def read_range(path: PathLike, offset: int, length: int) -> bytes:
  """Bytes `[offset, offset + length)` of the file `path` (fewer if the file ends first)."""
  path = resolve(path)
  if is_remote(path):
    return _fs(path).cat_file(os.fspath(path), start=offset, end=offset + length)
  with open(path, 'rb') as f:
    f.seek(offset)
    return f.read(length)


def read_ranges(path: PathLike, ranges: list[tuple[int, int]]) -> list[bytes]:
  """The bytes of each `(offset, length)` range of the file `path`, in order: one open file
  locally, concurrent ranged requests in a bucket (one round trip for all, not one each)."""
  path = resolve(path)
  if not ranges:
    return []
  if is_remote(path):
    name = os.fspath(path)
    out = _fs(path).cat_ranges([name] * len(ranges), [o for o, _ in ranges],
                               [o + n for o, n in ranges], on_error='raise')
    return list(out)
  with open(path, 'rb') as f:
    fd = f.fileno()
    return [os.pread(fd, n, o) for o, n in ranges]


@contextlib.contextmanager
def local_copy(path: PathLike) -> Iterator[str]:
  """A local file name holding `path`'s bytes, for libraries that read local files only (PyAV,
  torch.load): `path` itself when local, else a temporary download removed after the block."""
  path = resolve(path)
  if not is_remote(path):
    yield os.fspath(path)
    return
  with tempfile.TemporaryDirectory(prefix='stm_download_') as folder:
    local = os.path.join(folder, path.name)
    _fs(path).get_file(os.fspath(path), local)
    yield local


def forget_listings(path: PathLike) -> None:
  """Drops what this process has cached of the folder `path` and below (gcsfs caches bucket
  listings), before reading files another process (another host) wrote there."""
  if is_remote(path):
    _fs(path).invalidate_cache(os.fspath(resolve(path)))


def local_path(path: PathLike) -> str | None:
  """`path` as a local file name for libraries that need one (`open`, PyAV), or None for a
  bucket path."""
  return None if is_remote(path) else os.fspath(resolve(path))
