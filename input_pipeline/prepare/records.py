"""The records of a prepared dataset, and the worker task that converts one shard of videos.

ArrayRecord (the default; `input_pipeline/frames.py` reads it): a shard is two files. The TFDS
shard holds one record a video, serialized with TFDS's example serializer (no TensorFlow needed):
  id           Scalar(str)       the dataset's video id
  label        ClassLabel        class index, -1 for unlabeled (test) splits
  num_frames   Scalar(int32)     frames stored
  fps          Scalar(float32)   frame rate of the stored frames (the source's, or data.max_fps
                                 where that caps it), 0 if unknown
  first_frame  Scalar(int64)     the record of its first frame in the shard's frame file
and the frame file (`frames.frames_file`) one record a frame, the JPEG bytes themselves (short
side <= short_side), each video's frames consecutive, in shard order. A clip reads its video's
small record and its sampled frames' records only.

With `output_format='tfrecord'` a video is one DMVR/scenic SequenceExample instead (all its
frames; prepare/tfrecord_writer.py), one TFRecord file a shard.

A shard task converts its videos in order, writes its files under temporary local names
(array_record's writer writes local files only), moves them into place (`files.put_file`: a synced
rename, or an upload to a bucket; the frame file first), then writes a small JSON sidecar (what it
converted, what it skipped and why). The sidecar is the mark of a finished shard: a re-run skips
shards that have one.
"""

import dataclasses
import os
import time
from typing import Callable

import numpy as np
import tensorflow_datasets as tfds
from array_record.python import array_record_module

from input_pipeline import files
from input_pipeline import frames as frames_lib
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
  """Returns the video record's FeaturesDict (class names, else `num_classes`, else unbounded
  labels): the metadata of a video and where its frames start in the shard's frame file."""
  if class_names:
    label = tfds.features.ClassLabel(names=list(class_names))
  else:
    label = tfds.features.ClassLabel(num_classes=num_classes or _UNKNOWN_NUM_CLASSES)
  return tfds.features.FeaturesDict({
      'id': tfds.features.Scalar(dtype=np.str_, doc='Video id of the dataset.'),
      'label': label,
      'num_frames': tfds.features.Scalar(dtype=np.int32, doc='Number of frames.'),
      'fps': tfds.features.Scalar(dtype=np.float32, doc='Stored frame rate; 0 if unknown.'),
      'first_frame': tfds.features.Scalar(
          dtype=np.int64, doc='Record of the first frame in the shard\'s frame file.'),
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
    max_fps: frames stored per second of video at most (0: all; `video.keeps_frame`).
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
  max_fps: float = 0.0


def convert_entry(entry: common.Entry, task: ShardTask) -> dict:
  """Converts one entry into a record dict (id, label, num_frames, fps, frames, label_name), at
  most `task.max_fps` frames a second of video (fps then says the stored rate).

  Raises video.VideoError (or tfrecord.RecordError) if the source is unusable, and
  common.AnnotationError if a TFRecord record's label is outside the class range.
  """
  label_name = None
  if os.environ.get(FAULT_ENV) == f'crash:{entry.video_id}':
    # Fault injection for the tests: die as a decoder crash would.
    os._exit(70)  # pylint: disable=protected-access
  if entry.kind == common.VIDEO:
    frames, fps = video.video_to_jpegs(entry.path, task.short_side, task.quality,
                                       task.decode_threads, max_fps=task.max_fps)
    vid, label = entry.video_id, entry.label
  elif entry.kind == common.FRAMES:
    frames = video.frame_folder_to_jpegs(entry.path, task.short_side, task.quality)
    frames, fps = video.cap_frames(frames, task.default_fps, task.max_fps)
    vid, label = entry.video_id, entry.label
  elif entry.kind == common.TFRECORD:
    parsed = tfrecord.parse(tfrecord.read_record(entry.path, entry.offset))
    if not parsed['frames']:
      raise video.VideoError('no frames: the record has no image/encoded frames')
    kept, fps = video.cap_frames(parsed['frames'], parsed['fps'] or 0.0, task.max_fps)
    frames = video.jpegs_to_jpegs(kept, task.short_side, task.quality)
    vid = parsed['id'] or entry.video_id
    label = -1 if parsed['label'] is None else parsed['label']
    label_name = parsed['label_name']
    if label < -1 or task.num_classes and label >= task.num_classes:
      raise common.AnnotationError(entry.path, f'record at byte {entry.offset} (id {vid})',
                                   f'clip/label/index {label} is outside [0, {task.num_classes}); '
                                   'set config.data.num_classes or fix the records')
  else:
    raise ValueError(f'unknown entry kind {entry.kind!r}')
  return {'id': vid, 'label': label, 'num_frames': len(frames), 'fps': float(fps),
          'frames': frames, 'label_name': label_name}


def write_shard(task: ShardTask, progress: Callable[[int, bool], None] | None = None) -> dict:
  """Converts a shard's videos, puts its files and sidecar in place; returns the sidecar.

  A video that cannot be used is skipped and listed under 'quarantine' with its reason; the shard is
  written even if every video was skipped (an empty shard). Interrupting leaves only temporary
  files in `task.tmp_dir`, never a partial shard at `task.path`. `progress(i, done)` is called
  before (done=False) and after (done=True) the i-th video.
  """
  start = time.time()
  records, quarantine, label_names = [], [], {}
  writer = _writer(task)
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
        writer.write(rec)
        records.append([rec['id'], rec['label'], rec['num_frames']])
      if progress:
        progress(i, True)
  finally:
    writer.close()
  size = 0
  for local, dest in writer.outputs:  # the frame file before the shard that points into it
    size += os.path.getsize(local)
    files.put_file(local, dest)
  sidecar = {
      'split': task.split, 'index': task.index, 'path': files.resolve(task.path).name,
      'records': records, 'quarantine': quarantine, 'label_names': label_names,
      'bytes': size, 'seconds': time.time() - start,
  }
  files.write_json(task.done_path, sidecar)
  return sidecar


class _TFRecordShard:
  """Writes a shard as one TFRecord file of DMVR SequenceExamples (`outputs`: [(local, dest)])."""

  def __init__(self, task: ShardTask):
    local = _tmp_name(task, task.path)
    self._writer = tfrecord_writer.TFRecordWriter(local)
    self.outputs = [(local, task.path)]

  def write(self, rec: dict) -> None:
    """Appends a converted video."""
    self._writer.write(tfrecord_writer.sequence_example(rec))

  def close(self) -> None:
    """Closes the file."""
    self._writer.close()


class _ArrayRecordShard:
  """Writes a shard in the frame-record layout: the TFDS shard of video records and its frame
  file (`outputs`: [(local, dest)], the frame file first)."""

  def __init__(self, task: ShardTask):
    self._features = features(num_classes=task.num_classes)
    frames_path = frames_lib.frames_file(task.path)
    local_frames, local_videos = _tmp_name(task, frames_path), _tmp_name(task, task.path)
    self._frames = array_record_module.ArrayRecordWriter(local_frames, WRITER_OPTIONS)
    self._videos = array_record_module.ArrayRecordWriter(local_videos, WRITER_OPTIONS)
    self._next_frame = 0
    self.outputs = [(local_frames, frames_path), (local_videos, task.path)]

  def write(self, rec: dict) -> None:
    """Appends a converted video: its frames to the frame file, its record to the shard."""
    for data in rec['frames']:
      self._frames.write(bytes(data))
    self._videos.write(self._features.serialize_example({
        'id': rec['id'], 'label': rec['label'], 'num_frames': rec['num_frames'],
        'fps': rec['fps'], 'first_frame': self._next_frame}))
    self._next_frame += len(rec['frames'])

  def close(self) -> None:
    """Closes both files."""
    self._frames.close()
    self._videos.close()


def _tmp_name(task: ShardTask, dest: str) -> str:
  """The local temporary file a shard file `dest` is written in first."""
  return os.path.join(task.tmp_dir, f'{files.resolve(dest).name}.{os.getpid()}')


def _writer(task: ShardTask):
  """The writer of a shard's files in `task.output_format` (`write(rec)`, `close()`, `outputs`)."""
  if task.output_format == 'tfrecord':
    return _TFRecordShard(task)
  return _ArrayRecordShard(task)


def _quarantine_line(split: str, entry: common.Entry, reason: str) -> dict:
  where = entry.path if entry.offset < 0 else f'{entry.path}@{entry.offset}'
  return {'split': split, 'id': entry.video_id, 'file': where, 'reason': ' '.join(reason.split())}
