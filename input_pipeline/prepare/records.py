"""The record of a prepared dataset, and the worker task that converts one shard of videos.

One record per video, serialized with TFDS's example serializer (no TensorFlow needed):
  id          Scalar(str)                       the dataset's video id
  label       ClassLabel                        class index, -1 for unlabeled (test) splits
  num_frames  Scalar(int32)                     len(frames)
  fps         Scalar(float32)                   source frame rate, 0 if unknown
  frames      Sequence(Tensor((), object))      JPEG bytes, one per frame, short side <= short_side

With `output_format='tfrecord'` the same content is written as a DMVR/scenic SequenceExample
instead (prepare/tfrecord_writer.py), one TFRecord file a shard.

A shard task converts its videos in order, writes its file under a temporary local name
(array_record's writer writes local files only), moves it into place (`files.put_file`: a synced
rename, or an upload to a bucket), then writes a small JSON sidecar (what it converted, what it
skipped and why). The sidecar is the mark of a finished shard: a re-run skips shards that have one.
"""

import dataclasses
import os
import time
from typing import Callable

import numpy as np
import tensorflow_datasets as tfds
from array_record.python import array_record_module

from input_pipeline import files
from input_pipeline import tfrecord
from input_pipeline import video
from input_pipeline.prepare import tfrecord_writer
from input_pipeline.prepare.layouts import common

# One record a chunk (random access, as TFDS writes ArrayRecord), uncompressed: JPEG does not
# compress, and zstd would cost 5x the write time and 2x the read time for nothing (measured).
WRITER_OPTIONS = 'group_size:1,uncompressed'
# Fault injection (tests only): 'crash:<video id>' makes the process die hard on that video.
FAULT_ENV = 'STM_PREPARE_FAULT'
# ClassLabel needs a size; when it is only known at the end (TFRecord input), encode against this.
_UNKNOWN_NUM_CLASSES = 2**31 - 1


def features(class_names: list[str] | None = None,
             num_classes: int = 0) -> tfds.features.FeaturesDict:
  """Returns the record's FeaturesDict (class names, else `num_classes`, else unbounded labels)."""
  if class_names:
    label = tfds.features.ClassLabel(names=list(class_names))
  else:
    label = tfds.features.ClassLabel(num_classes=num_classes or _UNKNOWN_NUM_CLASSES)
  return tfds.features.FeaturesDict({
      'id': tfds.features.Scalar(dtype=np.str_, doc='Video id of the dataset.'),
      'label': label,
      'num_frames': tfds.features.Scalar(dtype=np.int32, doc='Number of frames.'),
      'fps': tfds.features.Scalar(dtype=np.float32, doc='Source frame rate; 0 if unknown.'),
      'frames': tfds.features.Sequence(
          tfds.features.Tensor(shape=(), dtype=np.object_), doc='JPEG-encoded RGB frames.'),
  })


@dataclasses.dataclass
class ShardTask:
  """One unit of work: convert `entries` into the ArrayRecord file `path`.

  Attributes:
    split: split name. index / num_shards: this shard's place in the split.
    entries: the videos, in order. path: final shard file (local or in a bucket).
    tmp_dir: the local folder it is written in first.
    done_path: the sidecar JSON written once the shard is in place.
    short_side, quality: output frame size and JPEG quality.
    num_classes: labels must be below it (0: unchecked).
    default_fps: fps recorded for frame folders.
    decode_threads: threads per video decoder (cores / workers).
    skip: video id -> reason, for videos known to crash the converter: quarantined, not converted.
    output_format: 'array_record' (TFDS features) or 'tfrecord' (DMVR SequenceExample).
  """
  split: str
  index: int
  num_shards: int
  entries: list[common.Entry]
  path: str
  tmp_dir: str
  done_path: str
  short_side: int
  quality: int
  num_classes: int = 0
  default_fps: float = 0.0
  decode_threads: int = 1
  skip: dict[str, str] = dataclasses.field(default_factory=dict)
  output_format: str = 'array_record'


def convert_entry(entry: common.Entry, task: ShardTask) -> dict:
  """Converts one entry into a record dict (id, label, num_frames, fps, frames, label_name).

  Raises video.VideoError (or tfrecord.RecordError) if the source is unusable, and
  common.AnnotationError if a TFRecord record's label is outside the class range.
  """
  label_name = None
  if os.environ.get(FAULT_ENV) == f'crash:{entry.video_id}':
    # Fault injection for the tests: die as a decoder crash would.
    os._exit(70)  # pylint: disable=protected-access
  if entry.kind == common.VIDEO:
    frames, fps = video.video_to_jpegs(entry.path, task.short_side, task.quality,
                                       task.decode_threads)
    vid, label = entry.video_id, entry.label
  elif entry.kind == common.FRAMES:
    frames = video.frame_folder_to_jpegs(entry.path, task.short_side, task.quality)
    vid, label, fps = entry.video_id, entry.label, task.default_fps
  elif entry.kind == common.TFRECORD:
    parsed = tfrecord.parse(tfrecord.read_record(entry.path, entry.offset))
    if not parsed['frames']:
      raise video.VideoError('no frames: the record has no image/encoded frames')
    frames = video.jpegs_to_jpegs(parsed['frames'], task.short_side, task.quality)
    vid = parsed['id'] or entry.video_id
    label = -1 if parsed['label'] is None else parsed['label']
    fps, label_name = parsed['fps'] or 0.0, parsed['label_name']
    if label < -1 or task.num_classes and label >= task.num_classes:
      raise common.AnnotationError(entry.path, f'record at byte {entry.offset} (id {vid})',
                                   f'clip/label/index {label} is outside [0, {task.num_classes}); '
                                   'set config.data.num_classes or fix the records')
  else:
    raise ValueError(f'unknown entry kind {entry.kind!r}')
  return {'id': vid, 'label': label, 'num_frames': len(frames), 'fps': float(fps),
          'frames': frames, 'label_name': label_name}


def write_shard(task: ShardTask, progress: Callable[[int, bool], None] | None = None) -> dict:
  """Converts a shard's videos, puts its ArrayRecord file and sidecar in place; returns the sidecar.

  A video that cannot be used is skipped and listed under 'quarantine' with its reason; the shard is
  written even if every video was skipped (an empty shard). Interrupting leaves only a temporary
  file in `task.tmp_dir`, never a partial shard at `task.path`. `progress(i, done)` is called before
  (done=False) and after (done=True) the i-th video.
  """
  start = time.time()
  feats = features(num_classes=task.num_classes)
  tmp = os.path.join(task.tmp_dir, f'{files.resolve(task.path).name}.{os.getpid()}')
  records, quarantine, label_names = [], [], {}
  writer = _writer(task, tmp)
  try:
    for i, entry in enumerate(task.entries):
      if progress:
        progress(i, False)
      try:
        if entry.video_id in task.skip:
          raise video.VideoError(task.skip[entry.video_id])
        rec = convert_entry(entry, task)
      except (video.VideoError, tfrecord.RecordError) as e:
        quarantine.append(_quarantine_line(task.split, entry, str(e)))
      except common.AnnotationError:
        raise
      except Exception as e:  # pylint: disable=broad-except
        # A video must never stop a conversion: report whatever broke on it.
        quarantine.append(_quarantine_line(task.split, entry, f'{type(e).__name__}: {e}'))
      else:
        if rec['label_name'] is not None and rec['label'] >= 0:
          label_names[str(rec['label'])] = rec['label_name']
        if task.output_format == 'tfrecord':
          writer.write(tfrecord_writer.sequence_example(rec))
        else:
          del rec['label_name']
          writer.write(feats.serialize_example(rec))
        records.append([rec['id'], rec['label'], rec['num_frames']])
      if progress:
        progress(i, True)
  finally:
    writer.close()
  size = os.path.getsize(tmp)
  files.put_file(tmp, task.path)
  sidecar = {
      'split': task.split, 'index': task.index, 'path': files.resolve(task.path).name,
      'records': records, 'quarantine': quarantine, 'label_names': label_names,
      'bytes': size, 'seconds': time.time() - start,
  }
  files.write_json(task.done_path, sidecar)
  return sidecar


def _writer(task: ShardTask, local_path: str):
  """The writer of a shard's file in `task.output_format` (`write(bytes)`, `close()`)."""
  if task.output_format == 'tfrecord':
    return tfrecord_writer.TFRecordWriter(local_path)
  return array_record_module.ArrayRecordWriter(local_path, WRITER_OPTIONS)


def _quarantine_line(split: str, entry: common.Entry, reason: str) -> dict:
  where = entry.path if entry.offset < 0 else f'{entry.path}@{entry.offset}'
  return {'split': split, 'id': entry.video_id, 'file': where, 'reason': ' '.join(reason.split())}
