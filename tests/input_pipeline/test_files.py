"""Atomic writes: a reader sees the old file or the new one, never a part."""

import json
import os

import pytest

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
