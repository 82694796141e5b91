"""File operations, locally and in a bucket (the GCS emulator): whole writes (a reader sees the old
file or the new one, never a part), moves, exclusive creation, ranged reads, local copies."""

import json
import os

import pytest

from input_pipeline import errors
from input_pipeline import files


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
  path = str(tmp_path / 'a.json')
  files.write_json(path, {'v': 1})
  with pytest.raises(RuntimeError):
    with files.atomic_write(path) as f:
      f.write('{"v": 2, "half')
      raise RuntimeError('killed mid-write')
  with open(path) as f:
    assert json.load(f) == {'v': 1}
  assert os.listdir(tmp_path) == ['a.json']


def test_a_finished_write_replaces_the_file(tmp_path):
  path = str(tmp_path / 'b.bin')
  with files.atomic_write(path, 'wb') as f:
    f.write(b'\x00\x01')
    assert not os.path.exists(path)  # Not visible before the block ends.
  with open(path, 'rb') as f:
    assert f.read() == b'\x00\x01'
  files.write_json(path, ['é'])
  with open(path, encoding='utf-8') as f:
    assert json.load(f) == ['é']


@pytest.fixture(params=['local', 'bucket'])
def folder(request, tmp_path):
  """A folder on the local disk, or in a bucket of the GCS emulator."""
  if request.param == 'local':
    return str(tmp_path)
  return request.getfixturevalue('gcs_bucket') + '/folder'


def test_whole_writes_in_either_place(folder):
  path = f'{folder}/a.json'
  files.write_json(path, {'v': 1})
  with pytest.raises(RuntimeError):
    with files.atomic_write(path) as f:
      f.write('{"v": 2, "half')
      raise RuntimeError('killed mid-write')
  assert files.read_json(path) == {'v': 1}
  assert sorted(p.name for p in files.resolve(folder).iterdir()) == ['a.json']
  files.write_bytes(path, b'[2]')
  assert files.read_json(path) == [2]
  with pytest.raises(errors.UserError, match='no such file'):
    files.read_json(f'{folder}/missing.json')


def test_put_create_and_ranged_reads_in_either_place(folder, tmp_path):
  local = tmp_path / 'shard.tmp'
  local.write_bytes(bytes(range(256)) * 4)
  files.put_file(local, f'{folder}/shard')
  assert not local.exists()
  assert files.read_range(f'{folder}/shard', 250, 10) == bytes(range(250, 256)) + bytes(range(4))
  assert files.read_range(f'{folder}/shard', 1020, 10) == bytes(range(252, 256))  # Cut at the end.
  with files.local_copy(f'{folder}/shard') as copy:
    with open(copy, 'rb') as f:
      assert f.read() == bytes(range(256)) * 4
  assert files.create_exclusive(f'{folder}/x.lock', b'first')
  assert not files.create_exclusive(f'{folder}/x.lock', b'second')
  assert files.resolve(f'{folder}/x.lock').read_bytes() == b'first'


def test_a_bucket_path_is_never_made_a_local_one():
  assert os.fspath(files.resolve('gs://bucket/a/b')) == 'gs://bucket/a/b'
  assert files.local_path('gs://bucket/a') is None
  assert os.fspath(files.resolve('a/b')) == os.path.join(os.getcwd(), 'a', 'b')
