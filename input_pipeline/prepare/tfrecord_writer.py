"""Writes prepared records as DMVR/scenic TFRecord files of `tf.train.SequenceExample`, without TF.

The converter can write this layout instead of ArrayRecord so that a prepared dataset also feeds
TensorFlow readers, and `input_pipeline.tfrecord.TFRecordSource` trains from it directly. One
record a video (the keys are MediaSequence's, which DMVR and scenic read):

  context       clip/media_id       bytes   the video id
                clip/label/index    int64   the class index; absent for unlabeled videos (label -1)
                clip/label/string   bytes   the class name, when given (MediaSequence's key) ...
                clip/label/text     bytes   ... and again under DMVR's default name key
                image/frame_rate    float   the source frame rate; absent when unknown (0)
  feature list  image/encoded       bytes   one JPEG a frame, one feature a frame

What readers take from it: DMVR's `modalities.add_image` parses `image/encoded` as a
FixedLenSequenceFeature of strings (the frames, decoded as JPEG); `modalities.add_label` parses
`clip/label/index` as a VarLenFeature of int64 (and, with `add_label_name`, `clip/label/text`);
scenic's video TFRecord loaders build on these two (with `label_offset` for 1-based labels: ours
are 0-based). MediaSequence readers use `clip/label/index`/`clip/label/string`, `clip/media_id`
and `image/frame_rate`. This project's reader (`input_pipeline.tfrecord.parse`) reads all of them.

The framing (`input_pipeline.tfrecord.frame`): uint64 length, masked CRC-32C of the length, payload,
masked CRC-32C of the payload, as TensorFlow's TFRecordWriter writes uncompressed files.
"""

from typing import Iterable

from tensorflow_datasets.proto import tf_example_generated_pb2 as example_pb2

from input_pipeline import tfrecord


def _as_bytes(value: str | bytes) -> bytes:
  return value if isinstance(value, bytes) else str(value).encode('utf-8')


def _frame_list(seq, frames: Iterable[bytes]) -> int:
  """Adds the frames under `image/encoded`, one feature each; returns how many."""
  feature_list = seq.feature_lists.feature_list[tfrecord.FRAMES_KEY]
  count = 0
  for data in frames:
    feature_list.feature.add().bytes_list.value.append(bytes(data))
    count += 1
  return count


def sequence_example(record: dict) -> bytes:
  """A record dict (id, label, num_frames, fps, frames[, label_name]) serialized as a DMVR
  SequenceExample (the module docstring's keys).

  A label of -1 (or None) writes no label, as DMVR marks unlabeled videos. Raises ValueError if
  `num_frames` is given and is not the number of frames.
  """
  seq = example_pb2.SequenceExample()
  context = seq.context.feature
  context[tfrecord.ID_KEYS[0]].bytes_list.value.append(_as_bytes(record['id']))
  label = record.get('label')
  if label is not None and int(label) != -1:
    context[tfrecord.LABEL_KEY].int64_list.value.append(int(label))
  if record.get('label_name') is not None:
    for key in tfrecord.LABEL_NAME_KEYS:
      context[key].bytes_list.value.append(_as_bytes(record['label_name']))
  if record.get('fps'):
    context[tfrecord.FPS_KEY].float_list.value.append(float(record['fps']))
  count = _frame_list(seq, record['frames'])
  if record.get('num_frames') is not None and int(record['num_frames']) != count:
    raise ValueError(f'record {record["id"]!r}: num_frames={record["num_frames"]} but it has '
                     f'{count} frames')
  return seq.SerializeToString()


class TFRecordWriter:
  """Appends framed records to a new local TFRecord file (use as a context manager).

  The file is written where it is named; the converter writes under a temporary name and moves
  the finished file into place (`files.put_file`), so that a reader never sees half a shard.
  """

  def __init__(self, local_path: str):
    self._path = local_path
    self._file = open(local_path, 'wb')  # pylint: disable=consider-using-with

  def write(self, data: bytes) -> None:
    """Appends `data` (a serialized record, e.g. `sequence_example(...)`) as one TFRecord record."""
    if self._file is None:
      raise ValueError(f'{self._path}: TFRecordWriter is closed')
    self._file.write(tfrecord.frame(data))

  def close(self) -> None:
    """Flushes and closes the file (again: nothing)."""
    if self._file is not None:
      self._file.close()
      self._file = None

  def __enter__(self) -> 'TFRecordWriter':
    return self

  def __exit__(self, *exc_info) -> None:
    self.close()
