"""The TFRecord writer: framing checked from scratch against the TFRecord spec, the DMVR keys, and
the round trip through the project's parser."""

import struct

import google_crc32c
import numpy as np
import pytest
import simplejpeg
from tensorflow_datasets.proto import tf_example_generated_pb2 as example_pb2

from input_pipeline import tfrecord
from input_pipeline.prepare import tfrecord_writer


def jpeg(i: int) -> bytes:
  gray = np.full((24, 32, 3), 10 + 20 * (i % 12), np.uint8)
  return simplejpeg.encode_jpeg(gray, colorspace='RGB')


def record(label=1, fps=25.0, label_name='jump', num_frames=3) -> dict:
  rec = {'id': 'video7', 'label': label, 'num_frames': num_frames, 'fps': fps,
         'frames': [jpeg(i) for i in range(num_frames)]}
  if label_name is not None:
    rec['label_name'] = label_name
  return rec


def masked_crc_from_the_spec(data: bytes) -> int:
  """TFRecord's masked CRC, written out here from the spec (not the project's code)."""
  crc = google_crc32c.value(data)
  return ((crc >> 15 | crc << 17) + 0xA282EAD8) & 0xFFFFFFFF


def frames_from_the_spec(data: bytes) -> list[bytes]:
  """Splits a TFRecord file's bytes into payloads, asserting every length and CRC."""
  payloads, offset = [], 0
  while offset < len(data):
    length_bytes = data[offset:offset + 8]
    (length,) = struct.unpack('<Q', length_bytes)
    (length_crc,) = struct.unpack('<I', data[offset + 8:offset + 12])
    assert length_crc == masked_crc_from_the_spec(length_bytes)
    payload = data[offset + 12:offset + 12 + length]
    assert len(payload) == length
    (data_crc,) = struct.unpack('<I', data[offset + 12 + length:offset + 16 + length])
    assert data_crc == masked_crc_from_the_spec(payload)
    payloads.append(payload)
    offset += 16 + length
  assert offset == len(data)
  return payloads


def test_the_crc_library_gives_the_standard_check_value():
  assert google_crc32c.value(b'123456789') == 0xE3069283
  assert tfrecord.masked_crc32c(b'123456789') == masked_crc_from_the_spec(b'123456789')


def test_framing_matches_the_spec(tmp_path):
  path = str(tmp_path / 'x.tfrecord')
  payloads = [b'', b'a', bytes(range(256)) * 40, tfrecord_writer.sequence_example(record())]
  with tfrecord_writer.TFRecordWriter(path) as writer:
    for p in payloads:
      writer.write(p)
  with open(path, 'rb') as f:
    assert frames_from_the_spec(f.read()) == payloads
  offsets = tfrecord.index_file(path)
  assert [tfrecord.read_record(path, o) for o in offsets] == payloads


def test_writer_refuses_writes_after_close(tmp_path):
  writer = tfrecord_writer.TFRecordWriter(str(tmp_path / 'x.tfrecord'))
  writer.close()
  writer.close()
  with pytest.raises(ValueError, match='closed'):
    writer.write(b'x')


def test_sequence_example_has_the_dmvr_keys():
  rec = record()
  seq = example_pb2.SequenceExample.FromString(tfrecord_writer.sequence_example(rec))
  context = seq.context.feature
  assert set(context) == {'clip/media_id', 'clip/label/index', 'clip/label/string',
                          'clip/label/text', 'image/frame_rate'}
  assert list(context['clip/media_id'].bytes_list.value) == [b'video7']
  assert list(context['clip/label/index'].int64_list.value) == [1]
  assert list(context['clip/label/string'].bytes_list.value) == [b'jump']
  assert list(context['clip/label/text'].bytes_list.value) == [b'jump']
  assert list(context['image/frame_rate'].float_list.value) == [25.0]
  frames = seq.feature_lists.feature_list['image/encoded'].feature
  assert [list(f.bytes_list.value) for f in frames] == [[f] for f in rec['frames']]


def test_unlabeled_records_omit_the_label():
  data = tfrecord_writer.sequence_example(record(label=-1, fps=0.0, label_name=None))
  seq = example_pb2.SequenceExample.FromString(data)
  assert set(seq.context.feature) == {'clip/media_id'}
  parsed = tfrecord.parse(data)
  assert parsed['label'] is None and parsed['fps'] is None and parsed['label_name'] is None


def test_the_project_parser_reads_what_is_written():
  rec = record()
  assert tfrecord.parse(tfrecord_writer.sequence_example(rec)) == {
      'id': 'video7', 'label': 1, 'label_name': 'jump', 'fps': 25.0, 'frames': rec['frames']}
  rec['id'] = b'bytes-id'
  assert tfrecord.parse(tfrecord_writer.sequence_example(rec))['id'] == 'bytes-id'


def test_num_frames_must_match_the_frames():
  with pytest.raises(ValueError, match='num_frames=4 but it has 3 frames'):
    tfrecord_writer.sequence_example({**record(), 'num_frames': 4})
