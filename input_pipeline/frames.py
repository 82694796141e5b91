"""A video's frames read on demand, and the prepared ArrayRecord layout that stores frames as records.

Why: a training clip uses 8 of a video's frames, so reading a whole video record (every frame's JPEG
bytes) makes a 300-frame Kinetics clip cost 10x a 48-frame one to read. Both sources give a
record's frames as `Frames`, a sequence that reads only the frames asked for:

  Frames       `len()` is the frame count; `frames[i]` reads frame i; `frames.take(indices)` reads the
               listed frames in one batched read (what `transforms.decode` calls: a clip reads its
               sampled frames and nothing else). It compares equal to a list of the same bytes.

The ArrayRecord layout `launch.py --mode=prepare` writes (`LAYOUT`), one pair of files a shard:

  <name>-<split>.array_record-NNNNN-of-NNNNN  the TFDS shard: one record a video, the TFDS features
               {id, label, num_frames, fps, first_frame} (`prepare/records.py:features`), what
               `tfds.data_source` reads (len = videos);
  <name>-<split>.frames-NNNNN-of-NNNNN        the frames of that shard's videos, one ArrayRecord
               record a frame (the JPEG bytes themselves, no serialization), each video's frames
               consecutive from its `first_frame` (`frames_file`).

`ArrayRecordSource` is the training source over one split: `source[i]` reads video i's small record
and returns `{'fps', 'frames': Frames, 'id', 'label', 'num_frames'}`, the keys and types of the
one-record-a-video layout (frames excepted: a `Frames`, not a list). Frame files are opened lazily,
once per process (the source pickles into grain workers without open readers), locally or in a
bucket (`gs://...`: array_record reads buckets itself). A dataset prepared before this layout (its
TFDS features hold `frames`) still loads, read whole as before, with a warning saying how to prepare
it again.
"""

import bisect
import collections.abc
import os
import threading
from typing import Sequence

from absl import logging

from input_pipeline import errors
from input_pipeline import files

# The value of the `layout` setting (dataset metadata) of datasets in this layout.
LAYOUT = 'frame_records'
# A video shard's file name holds this token; its frame file's holds `_FRAMES_TOKEN` in its place.
_SHARD_TOKEN = '.array_record-'
_FRAMES_TOKEN = '.frames-'
# Random access: no readahead (a clip reads 8 scattered frames) and a small buffer, as grain's
# ArrayRecordDataSource opens its readers.
_READER_OPTIONS = 'readahead_buffer_size:0'
_READER_BUFFER = 32768


class Frames(collections.abc.Sequence):
  """A video's JPEG frames, read on demand from `reader.read_frames(key, positions)`.

  `key` names the video to its reader; the reader is a source object (it pickles, so a record
  does). Only `take`/`[i]` read anything.
  """

  __slots__ = ('_reader', '_key', '_count')

  def __init__(self, reader, key, count: int):
    self._reader = reader
    self._key = key
    self._count = int(count)

  def __len__(self) -> int:
    return self._count

  def take(self, indices: Sequence[int]) -> list[bytes]:
    """The frames at `indices` (in that order), read in one batched read; IndexError if one is out
    of range."""
    positions = [int(i) for i in indices]
    for i in positions:
      if not 0 <= i < self._count:
        raise IndexError(f'frame {i} of a {self._count}-frame video')
    if not positions:
      return []
    return list(self._reader.read_frames(self._key, positions))

  def __getitem__(self, index):
    """Frame `index` (negative counts from the end), or a list of frames for a slice."""
    if isinstance(index, slice):
      return self.take(range(*index.indices(self._count)))
    index = int(index)
    return self.take([index + self._count if index < 0 else index])[0]

  def __iter__(self):
    return iter(self.take(range(self._count)))

  def __eq__(self, other) -> bool:
    """Equal to any sequence of the same frame bytes (reads every frame)."""
    if isinstance(other, (str, bytes)) or not isinstance(other, collections.abc.Sequence):
      return NotImplemented
    return len(other) == self._count and list(self) == list(other)

  __hash__ = None

  def __repr__(self) -> str:
    return f'Frames({self._count} frames of {self._key!r})'


def frames_file(shard: str) -> str:
  """The frame file of a video shard (`...-<split>.array_record-NNNNN-of-NNNNN` ->
  `...-<split>.frames-NNNNN-of-NNNNN`; another name gets `.frames` appended), in its folder."""
  shard = os.fspath(shard)
  head, token, tail = shard.rpartition(_SHARD_TOKEN)
  return head + _FRAMES_TOKEN + tail if token else shard + '.frames'


def open_reader(path: str):
  """An array_record reader of `path` (local or `gs://...`) set up for random reads."""
  from array_record.python import array_record_module  # pylint: disable=g-import-not-at-top
  try:
    return array_record_module.ArrayRecordReader(os.fspath(path), _READER_OPTIONS,
                                                 file_reader_buffer_size=_READER_BUFFER)
  except Exception as e:  # pylint: disable=broad-except
    # The C++ reader reports a missing or torn file as a bare status error.
    raise errors.UserError(
        f'{path}: cannot open the frame file of a prepared dataset ({type(e).__name__}: {e}); '
        'prepare the dataset again (launch.py --mode=prepare --config.data.overwrite=True)') from e


class ArrayRecordSource:
  """Random access over the videos of a prepared split in the frame-record layout (module doc).

  Attributes:
    frame_files: the split's frame files, one per shard, in shard order.
    dataset_info: the TFDS DatasetInfo (the prepared settings are in its metadata).
  """

  def __init__(self, videos, shard_files: Sequence[str], shard_lengths: Sequence[int]):
    """`videos`: the TFDS data source of the split's video records; `shard_files` and
    `shard_lengths`: its shards in order and their video counts (TFDS split info)."""
    if len(shard_files) != len(shard_lengths):
      raise ValueError(f'{len(shard_files)} shard files for {len(shard_lengths)} shard lengths')
    self._videos = videos
    self.frame_files = [frames_file(os.fspath(p)) for p in shard_files]
    ends, total = [], 0
    for n in shard_lengths:
      total += int(n)
      ends.append(total)
    self._ends = ends
    self._remote = any(files.is_remote(p) for p in self.frame_files)
    self._readers = {}
    self._lock = threading.Lock()

  @property
  def dataset_info(self):
    """The TFDS DatasetInfo of the prepared dataset."""
    return getattr(self._videos, 'dataset_info', None)

  def __getstate__(self):
    state = self.__dict__.copy()
    state['_readers'] = {}
    del state['_lock']
    return state

  def __setstate__(self, state):
    self.__dict__.update(state)
    self._lock = threading.Lock()

  def __len__(self) -> int:
    return len(self._videos)

  def __getitem__(self, i) -> dict:
    """Video `i`'s record (negative counts from the end): its frames a `Frames`, nothing read yet."""
    i = int(i)
    if i < 0:
      i += len(self)
    if not 0 <= i < len(self):
      raise IndexError(f'video {i} of a {len(self)}-video split')
    rec = self._videos[i]
    shard = bisect.bisect_right(self._ends, i)
    return {'fps': rec['fps'],
            'frames': Frames(self, (shard, int(rec['first_frame'])), int(rec['num_frames'])),
            'id': rec['id'], 'label': rec['label'], 'num_frames': rec['num_frames']}

  def _reader(self, shard: int):
    reader = self._readers.get(shard)
    if reader is None:
      with self._lock:
        reader = self._readers.get(shard)
        if reader is None:
          reader = self._readers[shard] = open_reader(self.frame_files[shard])
    return reader

  def read_frames(self, key: tuple[int, int], positions: Sequence[int]) -> list[bytes]:
    """The frames `positions` of the video `key` = (shard, first frame record).

    In a bucket one batched read (the reader's requests overlap); locally one read a frame, which
    costs about half the CPU of a batched read of 8 frames (its thread pool; measured 2026-12-02).
    """
    shard, first = key
    reader = self._reader(shard)
    if self._remote:
      return reader.read([first + p for p in positions])
    return [reader.read([first + p])[0] for p in positions]

  def __repr__(self) -> str:
    return f'ArrayRecordSource({len(self)} videos in {len(self.frame_files)} shards)'


_old_warned = set()


def warn_old_layout(directory) -> None:
  """Logs, once per process and dataset, that it was prepared in the one-record-a-video layout."""
  key = os.fspath(directory)
  if key in _old_warned:
    return
  _old_warned.add(key)
  logging.warning(
      '%s was prepared before frames were stored as their own records: it loads, but every clip '
      'reads its whole video (a 300-frame video costs ~10x a 48-frame one). Prepare it again for '
      'length-independent reads: launch.py --mode=prepare with the same config and '
      '--config.data.overwrite=True.', key)
