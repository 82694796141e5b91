"""Lock files: one holder, stale holders replaced, holders elsewhere named, only one's own lock
released. (On a bucket: tests/test_gcs_end_to_end.py; for training and preparation:
tests/stm_jax/train/test_loop.py, tests/input_pipeline/prepare/test_converter.py.)"""

import dataclasses
import json
import os
import socket
import subprocess
import sys

import pytest

from input_pipeline import errors
from input_pipeline import locks


def _write_owner(path, **fields):
  owner = dataclasses.asdict(locks.LockOwner.this_process())
  owner.update(fields)
  with open(path, 'w', encoding='utf-8') as f:
    json.dump(owner, f)


def _dead_pid() -> int:
  done = subprocess.run([sys.executable, '-c', 'import os; print(os.getpid())'],
                        capture_output=True, text=True, check=True)
  return int(done.stdout)


def test_a_held_lock_refuses_a_second_holder_and_is_released_by_its_owner(tmp_path):
  path = tmp_path / 'sub' / 'x.lock'
  first = locks.FileLock(path, 'busy doing x', 'wait for it')
  first.acquire()
  assert path.exists()  # Its folder was created.
  second = locks.FileLock(path, 'busy doing x', 'wait for it')
  with pytest.raises(errors.InUseError, match=r'sub: busy doing x: pid \d+ on host .*; wait for it'):
    second.acquire()
  second.release()  # Not its lock: nothing happens.
  assert path.exists()
  first.release()
  assert not path.exists()


def test_a_dead_holder_on_this_host_is_replaced_and_one_elsewhere_is_not(tmp_path, caplog):
  path = tmp_path / 'x.lock'
  _write_owner(path, pid=_dead_pid())
  lock = locks.FileLock(path, 'busy', 'wait')
  lock.check_free()
  with caplog.at_level('WARNING'):
    lock.acquire()
  assert lock.holder().pid == os.getpid()
  assert any('which is no longer running' in r.getMessage() for r in caplog.records)
  lock.release()

  _write_owner(path, host=f'not-{socket.gethostname()}', pid=_dead_pid())
  with pytest.raises(errors.InUseError, match=f'if it is no longer running, delete {path}'):
    locks.FileLock(path, 'busy', 'wait').acquire()


def test_a_lock_file_that_is_not_a_lock_is_named(tmp_path):
  path = tmp_path / 'x.lock'
  path.write_text('{"half')
  with pytest.raises(errors.InUseError, match='a lock file that cannot be read'):
    locks.FileLock(path, 'busy', 'wait').acquire()
  assert path.read_text() == '{"half'
