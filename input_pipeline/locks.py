"""One writer at a time: a lock file that works on a local disk and in a bucket.

A lock is one small JSON file holding its owner (host, pid, start time, command line), created
only if absent (`files.create_exclusive`: a hard link locally, an upload with the precondition
if-generation-match=0 in a bucket, which the object store grants to exactly one of several
concurrent writers). Nothing holds it open, so it outlives a killed process; such a lock is stale
when its pid no longer runs on this host (or runs another program), and is then replaced with a
warning. A lock held from another host cannot be tested from here (a TPU host that was preempted
and replaced has another name): the error says to delete it if that process is gone.

Used by training (`<workdir>/train.lock`, stm_jax/core/run_directory.py) and preparation
(`<data_dir>/.<dataset>.prepare.lock`, input_pipeline/prepare/converter.py).
"""

import dataclasses
import json
import os
import socket
import sys
import time

from absl import logging

from input_pipeline import errors
from input_pipeline import files


def _process_start(pid: int) -> str | None:
  """When process `pid` started (Linux: /proc/<pid>/stat field 22, clock ticks since boot), so
  that a pid reused by another process is not taken for the lock's owner; None elsewhere."""
  try:
    with open(f'/proc/{pid}/stat', encoding='ascii') as f:
      return f.read().rpartition(')')[2].split()[19]
  except (OSError, IndexError):
    return None


def _pid_alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # Another user's process.
    return True
  return True


@dataclasses.dataclass(frozen=True)
class LockOwner:
  """Who holds a lock: host, pid, when it started, and its command line."""
  host: str
  pid: int
  started: str  # Local time, for people.
  process_start: str | None  # _process_start(pid), for the staleness test.
  command: str

  @classmethod
  def this_process(cls) -> 'LockOwner':
    """The owner record of the calling process."""
    pid = os.getpid()
    return cls(host=socket.gethostname(), pid=pid, started=time.strftime('%Y-%m-%d %H:%M:%S'),
               process_start=_process_start(pid), command=' '.join(sys.argv))

  def is_stale(self) -> bool:
    """Whether the owner is known to be gone: on this host, its pid is not running (or is now
    another process). An owner on another host is never called stale."""
    if self.host != socket.gethostname():
      return False
    if not _pid_alive(self.pid):
      return True
    now = _process_start(self.pid)
    return self.process_start is not None and now is not None and now != self.process_start

  def describe(self) -> str:
    """`pid 123 on host h (started 2025-01-01 10:00:00: python launch.py ...)`."""
    return (f'pid {self.pid} on host {self.host} (started {self.started}'
            f'{f": {self.command}" if self.command else ""})')


class FileLock:
  """The lock file `path`: `acquire` takes it or raises an InUseError naming its owner;
  `release` removes it only if it is still this process's.

  `busy` says what the holder does (`another training run is writing it`) and `remedy` what to do
  when the holder runs on this host; both go into the error, after the lock's folder.
  """

  def __init__(self, path: files.PathLike, busy: str, remedy: str):
    self.path = files.resolve(path)
    self._busy = busy
    self._remedy = remedy
    self._owner: LockOwner | None = None

  def holder(self) -> LockOwner | None:
    """The owner recorded in the lock file, or None when there is none. Raises an InUseError
    when the file exists but cannot be read as a lock."""
    try:
      return LockOwner(**json.loads(self.path.read_text(encoding='utf-8')))
    except FileNotFoundError:
      return None
    except (OSError, ValueError, TypeError) as e:
      raise errors.InUseError(
          f'{self.path}: a lock file that cannot be read ({type(e).__name__}); if nothing runs '
          'there, delete it') from None

  def check_free(self) -> None:
    """Raises an InUseError naming the owner when another live process holds the lock (a
    stale lock does not count)."""
    owner = self.holder()
    if owner is not None and not owner.is_stale():
      raise self._in_use(owner)

  def _in_use(self, owner: LockOwner) -> errors.InUseError:
    remedy = (self._remedy if owner.host == socket.gethostname() else
              f'it cannot be checked from host {socket.gethostname()}: if it is no longer '
              f'running, delete {self.path}')
    return errors.InUseError(f'{self.path.parent}: {self._busy}: {owner.describe()}; {remedy}')

  def acquire(self) -> None:
    """Takes the lock (creating its folder) or raises an InUseError naming its owner."""
    self.path.parent.mkdir(parents=True, exist_ok=True)
    me = LockOwner.this_process()
    record = json.dumps(dataclasses.asdict(me)).encode()
    for _ in range(2):
      if files.create_exclusive(self.path, record):
        self._owner = me
        return
      owner = self.holder()
      if owner is None:
        continue  # Released in between: try again.
      if not owner.is_stale():
        raise self._in_use(owner)
      if self.holder() == owner:  # Still the same stale lock: replace it.
        self.path.unlink(missing_ok=True)
        logging.warning('%s: replacing the lock of %s, which is no longer running',
                        self.path, owner.describe())
    raise errors.InUseError(f'{self.path}: another process keeps taking this lock; retry')

  def release(self) -> None:
    """Removes the lock if this process still holds it."""
    if self._owner is None:
      return
    try:
      if self.holder() == self._owner:
        self.path.unlink(missing_ok=True)
    except errors.InUseError:
      pass
    self._owner = None

  def __enter__(self) -> 'FileLock':
    self.acquire()
    return self

  def __exit__(self, *exc) -> None:
    self.release()
