"""TFRecord files of `tf.train.SequenceExample` in the DMVR/scenic layout, read without TensorFlow.

Each record holds one video: JPEG frames under the feature list `image/encoded` (one bytes value a
frame), the class index under the context feature `clip/label/index` (absent: unlabeled), and
optionally an id (`clip/media_id`, `video_id`, `id`, `example/id` or `clip/data_path`), a class name
(`clip/label/string` or `clip/label/text`) and a frame rate (`image/frame_rate`).

The TFRecord framing is parsed here (uint64 length, uint32 masked CRC-32C of the length, data,
uint32 masked CRC-32C of the data) and the protos with the copy of `tf.train.SequenceExample` that
tensorflow_datasets ships (`tensorflow_datasets.proto.tf_example_generated_pb2`, wire-compatible).
The length CRC is checked (it catches a file that is not TFRecord, or a torn header); the data CRC
is not, since pure Python CRC-32C runs at ~9 MB/s: a damaged payload shows up as a proto or JPEG
error.

Files are found below raw_dir (names containing `tfrecord`, or sharded `-NNNNN-of-NNNNN`), and the
split is read from the name (`train`; `val`/`valid`/`validation`/`eval`; `test`). A class list
(`classes.txt`, `labels.txt`, `class_names.txt`: one name a line) fixes class names; otherwise they
come from the records' class names, else they are the indices.
"""

import os
import re
import struct

from input_pipeline.prepare.layouts import common

_CRC_POLY = 0x82F63B78
_CRC_TABLE = []
for _i in range(256):
  _c = _i
  for _ in range(8):
    _c = (_c >> 1) ^ _CRC_POLY if _c & 1 else _c >> 1
  _CRC_TABLE.append(_c)

_SPLIT_TOKENS = {
    'train': ('train', 'training'),
    'validation': ('val', 'valid', 'validation', 'validate', 'eval'),
    'test': ('test', 'testing'),
}
_ID_KEYS = ('clip/media_id', 'video_id', 'id', 'example/id', 'clip/data_path')
_LABEL_NAME_KEYS = ('clip/label/string', 'clip/label/text')
_CLASS_FILES = ('classes.txt', 'labels.txt', 'class_names.txt')
_SHARDED = re.compile(r'-\d{5}-of-\d{5}$')


def crc32c(data: bytes) -> int:
  """CRC-32C (Castagnoli) of `data` (pure Python, ~9 MB/s: for headers and tests)."""
  c = 0xFFFFFFFF
  for b in data:
    c = _CRC_TABLE[(c ^ b) & 0xFF] ^ (c >> 8)
  return c ^ 0xFFFFFFFF


def masked_crc32c(data: bytes) -> int:
  """The masked CRC TFRecord stores: rotate right by 15 bits and add a constant."""
  c = crc32c(data)
  return (((c >> 15) | (c << 17)) + 0xA282EAD8) & 0xFFFFFFFF


class RecordError(ValueError):
  """A TFRecord file is malformed at a given offset."""


def index_file(path: str) -> list[int]:
  """Returns the byte offset of every record in a TFRecord file by walking the framing.

  Checks each length CRC. A torn tail (a header or payload cut short, a bad length CRC) ends the
  walk and its offset is returned as a last record, so that the converter reports it instead of
  silently dropping it.
  """
  offsets, size = [], os.path.getsize(path)
  with open(path, 'rb') as f:
    offset = 0
    while offset < size:
      offsets.append(offset)
      header = f.read(12)
      if len(header) < 12:
        break
      length, length_crc = struct.unpack('<QI', header)
      if masked_crc32c(header[:8]) != length_crc or offset + 16 + length > size:
        break
      offset += 16 + length
      f.seek(offset)
  return offsets


def read_record(path: str, offset: int) -> bytes:
  """Returns the payload of the record at `offset`; raises RecordError if it is malformed."""
  with open(path, 'rb') as f:
    f.seek(offset)
    header = f.read(12)
    if len(header) < 12:
      raise RecordError(f'truncated TFRecord: header cut short at byte {offset}')
    length, length_crc = struct.unpack('<QI', header)
    if masked_crc32c(header[:8]) != length_crc:
      raise RecordError(f'not a TFRecord: bad length checksum at byte {offset}')
    data = f.read(length + 4)
  if len(data) < length + 4:
    raise RecordError(f'truncated TFRecord: record at byte {offset} announces {length} bytes, '
                      f'{max(0, len(data) - 4)} left')
  return data[:length]


def _values(feature):
  kind = feature.WhichOneof('kind')
  return list(getattr(feature, kind).value) if kind else []


def parse(data: bytes) -> dict:
  """Parses a serialized SequenceExample into {id, label, label_name, fps, frames}.

  Missing fields are None (frames: []). Raises RecordError if `data` is not a SequenceExample.
  """
  # pylint: disable-next=g-import-not-at-top
  from tensorflow_datasets.proto import tf_example_generated_pb2 as example_pb2
  from google.protobuf import message  # pylint: disable=g-import-not-at-top
  seq = example_pb2.SequenceExample()
  try:
    seq.ParseFromString(data)
  except message.DecodeError as e:
    raise RecordError(f'not a SequenceExample: {e}') from None
  context = seq.context.feature

  def first(keys):
    for k in keys:
      if k in context and _values(context[k]):
        v = _values(context[k])[0]
        return v.decode('utf-8', 'replace') if isinstance(v, bytes) else v
    return None

  frames = []
  if 'image/encoded' in seq.feature_lists.feature_list:
    for feature in seq.feature_lists.feature_list['image/encoded'].feature:
      frames.extend(_values(feature))
  label = first(('clip/label/index',))
  fps = first(('image/frame_rate',))
  return {
      'id': first(_ID_KEYS),
      'label': int(label) if label is not None else None,
      'label_name': first(_LABEL_NAME_KEYS),
      'fps': float(fps) if fps is not None else None,
      'frames': frames,
  }


def split_of(file_name: str) -> str | None:
  """Returns the split a TFRecord file name says ('train', 'validation', 'test'), or None."""
  tokens = set(re.split(r'[^a-z]+', file_name.lower()))
  for split, names in _SPLIT_TOKENS.items():
    if tokens & set(names):
      return split
  return None


def _is_tfrecord(name: str) -> bool:
  return 'tfrecord' in name.lower() or bool(_SHARDED.search(name))


def read(raw_dir: str, config=None) -> common.Layout:
  """Finds TFRecord files under `raw_dir` (or one file) and indexes their records; returns a Layout.

  Entries are (file, offset) references; ids and labels are filled in from the records when they
  are converted.
  """
  del config
  if raw_dir and os.path.isfile(raw_dir):
    files = [os.path.abspath(raw_dir)]
    raw_dir = os.path.dirname(files[0])
  else:
    raw_dir = common.check_raw_dir(raw_dir)
    files = []
    for dirpath, dirnames, filenames in os.walk(raw_dir, followlinks=True):
      dirnames.sort()
      files += [os.path.join(dirpath, f) for f in sorted(filenames) if _is_tfrecord(f)]
  if not files:
    raise common.LayoutError(f'tfrecord: found no TFRecord file under {raw_dir} (names containing '
                             '"tfrecord" or ending in -NNNNN-of-NNNNN)')
  by_split, notes = {}, []
  for path in files:
    split = split_of(os.path.basename(path)) if len(files) > 1 else (
        split_of(os.path.basename(path)) or 'train')
    if split is None:
      notes.append(f'the split of {path} (name it train*/val*/test*); skipped')
      continue
    by_split.setdefault(split, []).append(path)
  if not by_split:
    raise common.LayoutError(f'tfrecord: no TFRecord file under {raw_dir} names its split '
                             '(train*, val*/validation*, test*)')
  splits, used = {}, []
  for split in ('train', 'validation', 'test'):
    if split not in by_split:
      notes.append(f'{split} TFRecord files (no {split} split)')
      continue
    entries = []
    for path in by_split[split]:
      base, offsets = os.path.basename(path), index_file(path)
      entries += [common.Entry(f'{base}:{i}', None, common.TFRECORD, path, offset)
                  for i, offset in enumerate(offsets)]
      used.append(f'{path} ({len(offsets)} records, {split})')
    splits[split] = entries
  class_file = common.find_file(raw_dir, _CLASS_FILES, [raw_dir])
  class_names = [line for _, line in common.read_lines(class_file)] if class_file else None
  if class_file:
    used.append(class_file)
  else:
    notes.append('classes.txt (class names from the records, else their indices)')
  return common.Layout(class_names, splits, used, notes)
