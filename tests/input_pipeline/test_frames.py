"""Length-independent reads: frames as their own records (ArrayRecord), a frame index (TFRecord).

A clip read from either layout is the clip decoded from the same frames of the same video, reads
the sampled frames only, and is the same for a seed; a dataset of the one-record-a-video layout
still loads; `data.max_fps` keeps the frames it says; the TFRecord frame index points at the
frames `parse` finds."""

import logging
import os

from array_record.python import array_record_module
import numpy as np
import pytest
import simplejpeg
import tensorflow_datasets as tfds

from input_pipeline import datasets
from input_pipeline import files
from input_pipeline import frames
from input_pipeline import pipeline
from input_pipeline import sampling
from input_pipeline import tfrecord
from input_pipeline import video
from input_pipeline.prepare import converter
from input_pipeline.prepare import records
from input_pipeline.prepare import tfrecord_writer
from tests import video_fixtures as vf

SPEC = pipeline.ClipSpec(num_frames=4, crop_size=16, short_side=32, random_flip=True)


@pytest.fixture(scope='module')
def prepared(tmp_path_factory):
  """The sthv1 fixture prepared as ArrayRecord and as TFRecord; (array_record, tfrecord) configs."""
  root = tmp_path_factory.mktemp('frames')
  _, config = vf.setup(root, 'sthv1')
  converter.prepare(config)
  tfr = vf.make_config('sthv1', config.data.raw_dir, root / 'tfr', num_classes=3,
                       output_format='tfrecord', format='tfrecord')
  converter.prepare(tfr)
  return config, tfr


def whole(record: dict) -> dict:
  """`record` with its frames read into a list (what the one-record-a-video layout gave)."""
  return dict(record, frames=list(record['frames']))


def count_frame_reads(monkeypatch):
  """Records every frame position the sources read: [(source kind, video key, positions)]."""
  calls = []
  for cls in (frames.ArrayRecordSource, tfrecord.TFRecordSource):
    real = cls.read_frames

    def read_frames(self, key, positions, real=real, name=cls.__name__):
      calls.append((name, key, list(positions)))
      return real(self, key, positions)

    monkeypatch.setattr(cls, 'read_frames', read_frames)
  return calls


@pytest.mark.parametrize('fmt', ['array_record', 'tfrecord'])
def test_a_clip_is_the_clip_of_the_same_frames_decoded_and_reads_only_them(prepared, fmt,
                                                                            monkeypatch):
  config = prepared[0] if fmt == 'array_record' else prepared[1]
  source = datasets.open_source(config, 'train')
  listed = [whole(source[i]) for i in range(len(source))]
  assert [(r['id'], r['num_frames']) for r in listed] == [(b'101', 4), (b'102', 8), (b'103', 12)]
  for r in listed:  # The frames are the fixture's frame files, byte for byte (copied).
    folder = os.path.join(config.data.raw_dir, '20bn-something-something-v1', r['id'].decode())
    assert r['frames'] == [open(os.path.join(folder, n), 'rb').read()
                           for n in sorted(os.listdir(folder))]
  calls = count_frame_reads(monkeypatch)
  clip = pipeline.TrainClip(SPEC)
  for i in range(len(source)):
    for seed in range(3):
      got = clip.random_map(source[i], np.random.default_rng(seed))
      want = clip.random_map(listed[i], np.random.default_rng(seed))
      np.testing.assert_array_equal(got['clips'], want['clips'])
      assert got['label'] == want['label']
      sampled = sampling.train_indices(listed[i]['num_frames'], SPEC.num_frames,
                                       np.random.default_rng(seed))
      _, _, positions = calls.pop()
      assert positions == list(dict.fromkeys(sampled.tolist()))  # The sampled frames, once each.
  assert not calls


def test_the_train_pipeline_gives_the_same_batches_from_either_layout(prepared):
  """Same seed, same clips: from the frame records, the TFRecord frame index, and whole lists."""
  sources = [datasets.open_source(c, 'train') for c in prepared]
  lists = [whole(sources[0][i]) for i in range(len(sources[0]))]
  batches = []
  for source in sources + [lists]:
    ds = pipeline.train_dataset(source, SPEC, seed=3, global_batch_size=2, shard_index=0,
                                shard_count=1, num_workers=0, num_threads=2)
    it = iter(ds)
    batches.append([next(it) for _ in range(4)])
  for other in batches[1:]:
    for a, b in zip(batches[0], other):
      np.testing.assert_array_equal(a['clips'], b['clips'])
      np.testing.assert_array_equal(a['label'], b['label'])


def test_an_array_record_clip_reads_only_its_frame_records(prepared, monkeypatch):
  """Counted at the array_record reader itself: the records read are the sampled frames'."""
  source = datasets.open_source(prepared[0], 'train')
  read = []
  real_open = frames.open_reader

  class Counting:
    def __init__(self, path):
      self._reader = real_open(path)

    def read(self, positions):
      read.extend(positions)
      return self._reader.read(positions)

  monkeypatch.setattr(frames, 'open_reader', Counting)
  record = source[1]  # 102: 8 frames, the second video of the first shard (2 videos a shard)
  assert not read  # The video's record only: no frame read.
  images = record['frames'].take([7, 3, 3])
  assert read == [4 + 7, 4 + 3, 4 + 3]  # Its frames follow the 4 of 101 in the frame file.
  assert images[0] == whole(record)['frames'][7]
  read.clear()
  assert source[2]['frames'][11] and read == [11]  # 103 opens the second shard's frame file.


def test_the_source_pickles_and_opens_its_readers_again(prepared):
  import pickle  # pylint: disable=g-import-not-at-top
  source = datasets.open_source(prepared[0], 'validation')
  assert source[0]['frames'][0]  # A reader is open now; the copy must not carry it.
  copy = pickle.loads(pickle.dumps(source))
  assert [whole(copy[i]) for i in range(len(copy))] == [whole(source[i])
                                                        for i in range(len(source))]


def _old_features(class_names):
  """The video record of the one-record-a-video layout (every frame inside it)."""
  return tfds.features.FeaturesDict({
      'id': tfds.features.Scalar(dtype=np.str_),
      'label': tfds.features.ClassLabel(names=class_names),
      'num_frames': tfds.features.Scalar(dtype=np.int32),
      'fps': tfds.features.Scalar(dtype=np.float32),
      'frames': tfds.features.Sequence(tfds.features.Tensor(shape=(), dtype=np.object_)),
  })


def test_a_dataset_of_the_old_layout_still_loads_with_a_warning(tmp_path, caplog):
  _, config = vf.setup(tmp_path, 'sthv1')
  converter.prepare(config)
  new = {split: vf.read_split(config, split) for split in ('train', 'validation')}
  # Rewrite it as the layout before frame records: every frame inside the video's record.
  directory = datasets.dataset_dir(config)
  builder = tfds.builder_from_directory(os.fspath(directory))
  old = _old_features(builder.info.features['label'].names)
  for split in builder.info.splits:
    info, rows = builder.info.splits[split], vf.read_split(config, split)
    for path, n in zip(info.filepaths, info.shard_lengths):
      writer = array_record_module.ArrayRecordWriter(os.fspath(path), records.WRITER_OPTIONS)
      for r in rows[:n]:
        writer.write(old.serialize_example({**r, 'id': r['id'].decode()}))
      writer.close()
      rows = rows[n:]
      os.remove(frames.frames_file(os.fspath(path)))
  old.save_config(os.fspath(directory))
  with caplog.at_level(logging.WARNING):
    source = datasets.open_source(config, 'train')
  assert 'prepared before frames were stored as their own records' in caplog.text
  assert '--mode=prepare' in caplog.text and 'overwrite=True' in caplog.text
  assert not isinstance(source, frames.ArrayRecordSource)
  assert [source[i] for i in range(len(source))] == new['train']
  batch = next(iter(pipeline.create_dataset(source, config.copy_and_resolve_references(), 'val')))
  assert batch['clips'].shape[0] == config.batch_size


def test_max_fps_keeps_the_first_frame_at_or_after_each_step():
  assert video.capped_indices(300, 30.0, 10.0) == list(range(0, 300, 3))
  assert video.capped_indices(11, 25.0, 10.0) == [0, 3, 5, 8, 10]
  assert video.capped_indices(7, 29.97, 30.0) == list(range(7))  # Under the cap: all.
  assert video.capped_indices(7, 0.0, 10.0) == list(range(7))  # Rate unknown: all.
  assert video.capped_indices(9, 30000 / 1001, 10000 / 1001) == [0, 3, 6]  # Exact, not floats.
  assert video.capped_indices(9, 29.97, 9.99) == [0, 3, 6]
  assert video.capped_fps(30.0, 10.0) == 10.0 and video.capped_fps(8.0, 10.0) == 8.0
  assert len(video.capped_indices(250, 25.0, 10.0)) == 100


def test_prepare_with_max_fps_stores_those_frames_and_the_rate(tmp_path):
  _, full = vf.setup(tmp_path / 'full', 'sthv1')
  _, capped = vf.setup(tmp_path / 'capped', 'sthv1', max_fps=5.0)
  converter.prepare(full)
  summary = converter.prepare(capped)
  assert summary['settings']['max_fps'] == 5.0 and 'max_fps' not in converter._settings(full)  # pylint: disable=protected-access
  for a, b in zip(vf.read_split(full, 'train'), vf.read_split(capped, 'train')):
    keep = video.capped_indices(a['num_frames'], 12.0, 5.0)  # 20BN frame folders: 12 fps
    assert (a['fps'], b['fps']) == (12.0, 5.0)
    assert b['num_frames'] == len(keep) == len(b['frames'])
    assert b['frames'] == [a['frames'][i] for i in keep]
  with pytest.raises(Exception, match='data.max_fps'):
    _, bad = vf.setup(tmp_path / 'bad', 'sthv1', max_fps=-1.0)
    converter.prepare(bad)


def test_video_files_are_capped_while_decoding(tmp_path):
  path = vf.write_video(str(tmp_path / 'v.avi'), 12, fps=12)
  every, fps = video.video_to_jpegs(path, 32, 90)
  kept, capped = video.video_to_jpegs(path, 32, 90, max_fps=4.0)
  assert (fps, capped) == (12.0, 4.0)
  assert kept == [every[i] for i in range(0, 12, 3)]
  # Predict's decoder numbers the frames as prepare stored them under the same cap.
  sampled, rate = video.sampled_video_to_jpegs(path, 32, 90, lambda n: [n - 1, 1], max_fps=4.0)
  assert (len(sampled), rate) == (4, 4.0)
  assert (sampled[3], sampled[1]) == (kept[3], kept[1])


def _odd_sequence_example(jpegs):
  """The frames as one Feature with every frame in one BytesList (legal, not DMVR's layout),
  the key repeated (protobuf: the last entry wins)."""
  from tensorflow_datasets.proto import tf_example_generated_pb2 as pb  # pylint: disable=g-import-not-at-top
  first = pb.SequenceExample()
  first.feature_lists.feature_list[tfrecord.FRAMES_KEY].feature.add().bytes_list.value.append(b'x')
  second = pb.SequenceExample()
  second.context.feature[tfrecord.LABEL_KEY].int64_list.value.append(1)
  second.feature_lists.feature_list[tfrecord.FRAMES_KEY].feature.add().bytes_list.value.extend(
      jpegs)
  return first.SerializeToString() + second.SerializeToString()  # Concatenation merges.


def test_the_frame_index_points_at_the_frames_parse_finds(tmp_path, monkeypatch):
  jpegs = [vf.jpeg(i) for i in range(5)]
  dmvr = tfrecord_writer.sequence_example({'id': 'a', 'label': 1, 'fps': 25.0, 'frames': jpegs})
  spans = tfrecord.frame_spans(dmvr)
  assert [dmvr[o:o + n] for o, n in spans] == tfrecord.parse(dmvr)['frames'] == jpegs
  odd = _odd_sequence_example(jpegs)
  assert tfrecord.parse(odd)['frames'] == jpegs
  assert [odd[o:o + n] for o, n in tfrecord.frame_spans(odd)] == jpegs
  assert tfrecord.frame_spans(b'\x12\xff') is None  # Cut short: no spans, no guess.

  path = vf.write_tfrecord(str(tmp_path / 'x.tfrecord'), [dmvr, odd])
  index = tfrecord.load_index(path)
  assert [r[6] for r in index['records']] == [0, 5] and index['table_rows'] == 10
  table = np.fromfile(index['frame_table'], '<u4').reshape(-1, 3)
  payload_start = index['records'][0][0] + 12
  with open(path, 'rb') as f:
    data = f.read()
  for (o, n, crc), jpeg in zip(table[:5], jpegs):
    assert data[payload_start + o:payload_start + o + n] == jpeg
    assert crc == tfrecord.crc32c(jpeg)

  source = tfrecord.TFRecordSource([path])
  reads = []
  real = files.read_ranges
  monkeypatch.setattr(files, 'read_ranges',
                      lambda p, ranges: reads.append(ranges) or real(p, ranges))
  assert source[1]['frames'].take([4, 0]) == [jpegs[4], jpegs[0]]
  assert [n for _, n in reads[0]] == [len(jpegs[4]), len(jpegs[0])]  # Those bytes only.


def test_a_frame_changed_after_indexing_is_an_error_naming_the_file(tmp_path):
  jpegs = [vf.jpeg(i) for i in range(3)]
  path = vf.write_tfrecord(str(tmp_path / 'x.tfrecord'), [
      tfrecord_writer.sequence_example({'id': 'a', 'label': 0, 'frames': jpegs})])
  source = tfrecord.TFRecordSource([path])
  with open(path, 'r+b') as f:  # Same size: a stale index the stamp cannot tell (same mtime).
    st = os.stat(path)
    f.seek(os.path.getsize(path) - 40)
    f.write(b'\x00')
  os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
  assert source[0]['frames'][0] == jpegs[0]
  with pytest.raises(tfrecord.RecordError, match='x.tfrecord at byte 0: frame 2 does not match'):
    source[0]['frames'][2]  # pylint: disable=pointless-statement


def test_frames_compare_index_and_slice_like_a_list():
  data = [simplejpeg.encode_jpeg(np.zeros((8, 8, 3), np.uint8) + i) for i in range(4)]

  class Reader:
    def read_frames(self, key, positions):
      assert key == 'v'
      return [data[p] for p in positions]

  f = frames.Frames(Reader(), 'v', 4)
  assert len(f) == 4 and f == data and data == f and f != data[:3]
  assert f[-1] == data[3] and f[1:3] == data[1:3] and list(f) == data
  with pytest.raises(IndexError):
    f.take([4])
