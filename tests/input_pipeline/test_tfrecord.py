"""Training from TFRecord shards: the round trip writer -> index -> TFRecordSource, corrupt records
left out with their reason, the cached index and its staleness, pickling, threads, the record types
of the ArrayRecord source, and finding shards by split."""

import concurrent.futures
import json
import logging
import os
import pickle

import numpy as np
import pytest
import simplejpeg

from input_pipeline import files
from input_pipeline import tfrecord
from input_pipeline.prepare import records
from input_pipeline.prepare import tfrecord_writer
from tests import video_fixtures


def jpeg(i: int) -> bytes:
  gray = np.full((24, 32, 3), 10 + 20 * (i % 12), np.uint8)
  return simplejpeg.encode_jpeg(gray, colorspace='RGB')


def video(v: int, num_frames: int = 3, label: int | None = None, fps: float = 29.97) -> dict:
  """A record as the converter makes it (label = v unless given; -1 unlabeled)."""
  return {'id': f'video{v}', 'label': v if label is None else label, 'num_frames': num_frames,
          'fps': fps, 'frames': [jpeg(v + i) for i in range(num_frames)]}


def write_shard(path, videos: list[dict]) -> str:
  with tfrecord_writer.TFRecordWriter(str(path)) as writer:
    for v in videos:
      writer.write(tfrecord_writer.sequence_example(v))
  return str(path)


def as_read(v: dict) -> dict:
  """What a source returns for `v`: id as bytes, fps through float32 (as ArrayRecord stores it)."""
  return {'fps': float(np.float32(v['fps'])), 'frames': v['frames'], 'id': v['id'].encode(),
          'label': v['label'], 'num_frames': v['num_frames']}


def offsets_of(path) -> list[int]:
  return tfrecord.index_file(path)


@pytest.fixture
def read_counter(monkeypatch):
  """Counts `files.read_range` / `read_ranges` calls per file (every byte the reader takes goes
  through them), and the bytes they return under `(path, 'bytes')`."""
  counts = {}
  real_range, real_ranges = files.read_range, files.read_ranges

  def count(path, data):
    counts[os.fspath(path)] = counts.get(os.fspath(path), 0) + 1
    counts[(os.fspath(path), 'bytes')] = counts.get((os.fspath(path), 'bytes'), 0) + data
    return counts

  def read_range(path, offset, length):
    data = real_range(path, offset, length)
    count(path, len(data))
    return data

  def read_ranges(path, ranges):
    data = real_ranges(path, ranges)
    count(path, sum(map(len, data)))
    return data

  monkeypatch.setattr(files, 'read_range', read_range)
  monkeypatch.setattr(files, 'read_ranges', read_ranges)
  return counts


def test_round_trip_over_two_shards(tmp_path):
  first = [video(0), video(1, 5), video(2, 1, label=-1)]
  second = [video(3, 2, fps=0.0), video(4, 4)]
  a = write_shard(tmp_path / 'train.tfrecord-00000-of-00002', first)
  b = write_shard(tmp_path / 'train.tfrecord-00001-of-00002', second)
  source = tfrecord.TFRecordSource([a, b])
  assert len(source) == 5
  assert [source[i] for i in range(5)] == [as_read(v) for v in first + second]
  assert source[-1] == as_read(second[-1])
  assert source.ids == [f'video{v}' for v in range(5)]
  assert source.labels == [0, 1, -1, 3, 4]
  assert source.num_frames == [3, 5, 1, 2, 4]
  assert source.skipped == []
  assert os.path.exists(a + '.index.json') and os.path.exists(b + '.index.json')
  with pytest.raises(IndexError):
    source[5]  # pylint: disable=pointless-statement


def test_records_have_the_array_record_sources_types(tmp_path):
  """The prepared ArrayRecord source's records (`frames.ArrayRecordSource` over TFDS's
  `deserialize_example_np` of the video records) and TFRecord's have the same keys, types, values."""
  from array_record.python import array_record_module  # pylint: disable=g-import-not-at-top
  from input_pipeline import frames  # pylint: disable=g-import-not-at-top
  features = records.features(num_classes=5)
  videos = [video(1), video(2, label=-1, fps=0.0)]
  source = tfrecord.TFRecordSource([write_shard(tmp_path / 'x.tfrecord', videos)])
  shard = str(tmp_path / 'x-train.array_record-00000-of-00001')
  writer = array_record_module.ArrayRecordWriter(frames.frames_file(shard), records.WRITER_OPTIONS)
  video_records, first = [], 0
  for v in videos:
    for f in v['frames']:
      writer.write(f)
    meta = {k: v[k] for k in ('id', 'label', 'num_frames', 'fps')}
    video_records.append(features.deserialize_example_np(
        features.serialize_example({**meta, 'first_frame': first})))
    first += v['num_frames']
  writer.close()
  prepared = frames.ArrayRecordSource(video_records, [shard], [len(videos)])
  for i, v in enumerate(videos):
    expected, got = prepared[i], source[i]
    assert list(got) == list(expected) == ['fps', 'frames', 'id', 'label', 'num_frames']
    for key in expected:
      assert type(got[key]) is type(expected[key]), key
      assert got[key] == expected[key], key
    assert got['frames'] == v['frames'] and list(expected['frames']) == v['frames']
    assert [type(f) for f in got['frames']] == [type(f) for f in expected['frames']] == [bytes] * 3


def flip_byte(path: str, at: int) -> None:
  with open(path, 'r+b') as f:
    f.seek(at)
    b = f.read(1)
    f.seek(at)
    f.write(bytes([b[0] ^ 0xFF]))


def test_a_flipped_byte_skips_that_record_only(tmp_path):
  path = write_shard(tmp_path / 'x.tfrecord', [video(0), video(1), video(2)])
  bad = offsets_of(path)[1]
  flip_byte(path, bad + 12 + 100)
  source = tfrecord.TFRecordSource([path])
  assert source.ids == ['video0', 'video2']
  assert source[1] == as_read(video(2))
  [skipped] = source.skipped
  assert skipped['file'] == path and skipped['offset'] == bad
  assert 'bad data checksum' in skipped['reason']
  assert path in skipped['reason'] and f'byte {bad}' in skipped['reason']
  with pytest.raises(tfrecord.RecordError, match='bad data checksum'):
    tfrecord.read_record(path, bad)


def test_a_corrupt_length_loses_the_rest_of_the_shard(tmp_path):
  path = write_shard(tmp_path / 'x.tfrecord', [video(0), video(1), video(2)])
  bad = offsets_of(path)[1]
  flip_byte(path, bad + 2)
  source = tfrecord.TFRecordSource([path])
  assert source.ids == ['video0']
  assert [(s['offset'], 'bad length checksum' in s['reason']) for s in source.skipped] == [
      (bad, True)]


def test_a_truncated_tail_is_skipped(tmp_path):
  path = write_shard(tmp_path / 'x.tfrecord', [video(0), video(1), video(2)])
  last = offsets_of(path)[2]
  for cut, words in ((last + 40, 'truncated TFRecord: the record announces'),
                     (last + 5, 'truncated TFRecord: header cut short')):
    with open(path, 'r+b') as f:
      f.truncate(cut)
    source = tfrecord.TFRecordSource([path])
    assert source.ids == ['video0', 'video1']
    [skipped] = source.skipped
    assert skipped['offset'] == last and words in skipped['reason']


def test_records_that_are_not_videos_are_skipped(tmp_path):
  path = str(tmp_path / 'x.tfrecord')
  with tfrecord_writer.TFRecordWriter(path) as writer:
    writer.write(b'\x0a\xff not a proto')
    writer.write(tfrecord_writer.sequence_example({**video(1, 0), 'frames': []}))
    writer.write(tfrecord_writer.sequence_example(video(2)))
  source = tfrecord.TFRecordSource([path])
  assert source.ids == ['video2']
  assert ['not a SequenceExample' in source.skipped[0]['reason'],
          'no frames' in source.skipped[1]['reason']] == [True, True]


def test_records_without_an_id_are_named_by_file_and_position(tmp_path):
  path = str(tmp_path / 'x.tfrecord')
  with tfrecord_writer.TFRecordWriter(path) as writer:
    writer.write(b'\x0a\xff not a proto')
    writer.write(tfrecord.frame(b''))  # an empty SequenceExample: no frames
    # No id, the class name under DMVR's clip/label/text.
    writer.write(video_fixtures.sequence_example([jpeg(0)], 2, None, 'run'))
  source = tfrecord.TFRecordSource([path])
  assert source.ids == ['x.tfrecord:2'] and source[0]['id'] == b'x.tfrecord:2'
  assert source.label_names == {2: 'run'}


def test_the_index_is_cached_and_rebuilt_when_the_shard_changes(tmp_path, read_counter):
  path = write_shard(tmp_path / 'x.tfrecord', [video(0), video(1)])
  assert len(tfrecord.TFRecordSource([path])) == 2
  assert read_counter.pop(path) >= 1
  index = json.loads((tmp_path / 'x.tfrecord.index.json').read_text())
  assert index['format'] == 'stm-tfrecord-index' and index['version'] == 2
  assert index['size'] == os.path.getsize(path)
  table = str(tmp_path / 'x.tfrecord.index.frames')
  assert os.path.getsize(table) == index['table_rows'] * 12 == 6 * 12

  read_counter.clear()
  source = tfrecord.TFRecordSource([path])  # from the cache: the shard is not read
  assert path not in read_counter and table not in read_counter
  record = source[1]  # the metadata is the index's: nothing read
  assert path not in read_counter
  assert record['frames'].take([2, 0]) == [video(1)['frames'][2], video(1)['frames'][0]]
  assert read_counter.pop(path) == 1  # one read_ranges of the two frames...
  assert read_counter.pop((path, 'bytes')) == len(video(1)['frames'][2] + video(1)['frames'][0])
  assert read_counter.pop(table) == 1  # ...after one read of the record's rows of the table

  write_shard(path, [video(5), video(6), video(7)])  # another size
  assert tfrecord.TFRecordSource([path]).ids == ['video5', 'video6', 'video7']

  write_shard(path, [video(8), video(9), video(7)])  # the same size: the mtime tells
  st = os.stat(path)
  os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
  assert tfrecord.TFRecordSource([path]).ids == ['video8', 'video9', 'video7']

  read_counter.clear()
  index = json.loads((tmp_path / 'x.tfrecord.index.json').read_text())
  (tmp_path / 'x.tfrecord.index.json').write_text(json.dumps({**index, 'version': 1}))
  assert len(tfrecord.TFRecordSource([path])) == 3
  assert read_counter.get(path, 0) >= 1  # an old format version (no frame table): rebuilt
  assert json.loads((tmp_path / 'x.tfrecord.index.json').read_text())['version'] == 2

  read_counter.clear()
  os.remove(table)  # a table gone (or of another size): rebuilt
  assert tfrecord.TFRecordSource([path])[2]['frames'][1] == video(7)['frames'][1]
  assert read_counter.get(path, 0) >= 2 and os.path.getsize(table) == 3 * 3 * 12


def refuse_writes_beside(folder, monkeypatch):
  """Makes the folder `folder` unwritable for the index and its frame table (root ignores
  chmod)."""
  real_json, real_bytes = files.write_json, files.write_bytes

  def refuse(path):
    if os.path.dirname(os.fspath(path)) == os.fspath(folder):
      raise PermissionError(f'{path}: read-only')

  def write_json(path, value, indent=1):
    refuse(path)
    return real_json(path, value, indent)

  def write_bytes(path, data):
    refuse(path)
    return real_bytes(path, data)

  monkeypatch.setattr(files, 'write_json', write_json)
  monkeypatch.setattr(files, 'write_bytes', write_bytes)


def test_an_unwritable_shard_folder_caches_in_index_dir(tmp_path, monkeypatch, read_counter):
  shards = tmp_path / 'shards'
  shards.mkdir()
  path = write_shard(shards / 'x.tfrecord', [video(0)])
  refuse_writes_beside(shards, monkeypatch)
  cache = tmp_path / 'cache' / 'indexes'
  assert len(tfrecord.TFRecordSource([path], index_dir=cache)) == 1
  assert os.listdir(shards) == ['x.tfrecord']
  table, cached = sorted(os.listdir(cache))
  assert cached.startswith('x.tfrecord.') and cached.endswith('.index.json')
  assert table == cached.replace('.index.json', '.index.frames')
  read_counter.clear()
  assert len(tfrecord.TFRecordSource([path], index_dir=cache)) == 1
  assert path not in read_counter


def test_no_writable_place_reads_without_a_cache(tmp_path, monkeypatch, caplog):
  path = write_shard(tmp_path / 'x.tfrecord', [video(0)])
  refuse_writes_beside(tmp_path, monkeypatch)
  with caplog.at_level(logging.WARNING):
    source = tfrecord.TFRecordSource([path])
  assert source[0] == as_read(video(0))
  assert 'not cached' in caplog.text and 'read-only' in caplog.text


def test_the_source_pickles_and_reads_from_threads(tmp_path):
  videos = [video(v, 1 + v % 4) for v in range(12)]
  source = tfrecord.TFRecordSource([write_shard(tmp_path / 'a.tfrecord', videos[:7]),
                                    write_shard(tmp_path / 'b.tfrecord', videos[7:])])
  copy = pickle.loads(pickle.dumps(source))
  assert [copy[i] for i in range(len(copy))] == [as_read(v) for v in videos]
  with concurrent.futures.ThreadPoolExecutor(8) as pool:
    got = list(pool.map(lambda i: source[i % 12]['id'], range(96)))
  assert got == [f'video{i % 12}'.encode() for i in range(96)]


def test_a_missing_shard_is_a_user_error(tmp_path):
  with pytest.raises(FileNotFoundError, match='no such TFRecord file'):
    tfrecord.TFRecordSource([tmp_path / 'missing.tfrecord'])


def test_find_shards_by_split(tmp_path, caplog):
  for name in ('train.tfrecord-00001-of-00002', 'train.tfrecord-00000-of-00002',
               'sub/validation.tfrecord', 'test-00000-of-00001', 'other.tfrecord'):
    os.makedirs(os.path.dirname(tmp_path / name), exist_ok=True)
    write_shard(tmp_path / name, [video(0)])
  (tmp_path / 'README.txt').write_text('not a shard')
  tfrecord.TFRecordSource([tmp_path / 'train.tfrecord-00000-of-00002'])  # leaves an index file
  with caplog.at_level(logging.WARNING):
    shards = tfrecord.find_shards(tmp_path)
  assert shards == {
      'train': [str(tmp_path / 'train.tfrecord-00000-of-00002'),
                str(tmp_path / 'train.tfrecord-00001-of-00002')],
      'validation': [str(tmp_path / 'sub' / 'validation.tfrecord')],
      'test': [str(tmp_path / 'test-00000-of-00001')]}
  assert 'other.tfrecord' in caplog.text
  assert tfrecord.find_shards(tmp_path / 'other.tfrecord') == {
      'train': [str(tmp_path / 'other.tfrecord')]}
  assert not tfrecord.is_tfrecord('train.tfrecord-00000-of-00002.index.json')
  (tmp_path / 'empty').mkdir()
  with pytest.raises(FileNotFoundError, match='no TFRecord file'):
    tfrecord.find_shards(tmp_path / 'empty')
  with pytest.raises(FileNotFoundError, match='no such folder'):
    tfrecord.find_shards(tmp_path / 'missing')
