"""TFRecord files of `tf.train.SequenceExample` in the DMVR/scenic layout: the project's one reader.

Training can read DMVR TFRecord shards (local or `gs://...`) directly, and the converter reads them
as a raw input, so the format is defined here once, without TensorFlow:

  framing  each record is a uint64 little-endian payload length, the masked CRC-32C of those 8
           bytes, the payload, and the masked CRC-32C of the payload (`frame`, `read_record`). Both
           CRCs are checked (google_crc32c, C speed): a torn header, a flipped byte in a payload or
           a file that is not TFRecord at all is reported with its file and byte offset
           (`RecordError`), never decoded into garbage.
  payload  one video a record: JPEG frames under the feature list `image/encoded` (one bytes value
           a frame), the class index under the context feature `clip/label/index` (absent:
           unlabeled), and optionally an id (`clip/media_id`, `video_id`, `id`, `example/id` or
           `clip/data_path`), a class name (`clip/label/string` or `clip/label/text`) and a frame
           rate (`image/frame_rate`) (`parse`). The protos are the copy of `tf.train.*` that
           tensorflow_datasets ships (wire-compatible).
  names    a TFRecord file's name contains `tfrecord` or ends in `-NNNNN-of-NNNNN`; its split is a
           word of the name (`train`; `val`/`valid`/`validation`/`eval`; `test`) (`split_of`,
           `is_tfrecord`, `find_shards`).

`TFRecordSource` gives random access over the records of several shards, each read with one ranged
read (`files.read_range`; one request on a bucket). It needs every record's offset and length, and
the trainer needs every label before it computes anything, so each shard is walked once (read
sequentially in large chunks: on a bucket each request costs a round trip) and its index is cached
as a small JSON file beside it, `<shard name>.index.json`, or, where the shard's folder cannot be
written, in the caller's `index_dir`:

  {"format": "stm-tfrecord-index", "version": 1, "shard": <path>, "size": <bytes>,
   "mtime_ns": <modification time>, "records": [[offset, length, id, label, num_frames, fps], ...],
   "skipped": [{"offset": o, "reason": "..."}, ...], "label_names": {"<label>": "<name>", ...}}

An index whose size or modification time differs from the shard's (locally `os.stat`, ns; in a
bucket epath's `stat()`, whose mtime gcsfs takes from the object's `updated` time, whole seconds),
or whose format version is not this one, is rebuilt. Records that cannot be used (bad CRC, not a
SequenceExample, no frames) are left out of the index and listed under `skipped` with the reason,
as the converter quarantines corrupt videos.
"""

import concurrent.futures
import hashlib
import operator
import os
import re
import struct
from typing import Iterable, Iterator, Sequence

from absl import logging
from etils import epath
from google.protobuf import message
import google_crc32c
import numpy as np
from tensorflow_datasets.proto import tf_example_generated_pb2 as example_pb2

from input_pipeline import errors
from input_pipeline import files

# SequenceExample keys (DMVR / MediaSequence).
FRAMES_KEY = 'image/encoded'
LABEL_KEY = 'clip/label/index'
LABEL_NAME_KEYS = ('clip/label/string', 'clip/label/text')
ID_KEYS = ('clip/media_id', 'video_id', 'id', 'example/id', 'clip/data_path')
FPS_KEY = 'image/frame_rate'

INDEX_SUFFIX = '.index.json'
INDEX_FORMAT = 'stm-tfrecord-index'
INDEX_VERSION = 1

_HEADER = struct.Struct('<QI')  # payload length, masked CRC-32C of the length's 8 bytes
_FOOTER = struct.Struct('<I')  # masked CRC-32C of the payload
_OVERHEAD = _HEADER.size + _FOOTER.size
_CRC_MASK_DELTA = 0xA282EAD8
# The index walk reads shards in requests of this size (a bucket round trip per request).
_WALK_CHUNK = 16 << 20
# Shards whose indexes are loaded (or built) at once: bucket round trips overlap.
_INDEX_THREADS = 16

_SPLIT_TOKENS = {
    'train': ('train', 'training'),
    'validation': ('val', 'valid', 'validation', 'validate', 'eval'),
    'test': ('test', 'testing'),
}
SPLITS = tuple(_SPLIT_TOKENS)
_SHARDED = re.compile(r'-\d{5}-of-\d{5}$')


class RecordError(ValueError):
  """A TFRecord file is malformed at a given byte offset (the message names file and offset)."""


# --- framing ---------------------------------------------------------------------------------

def crc32c(data: bytes) -> int:
  """CRC-32C (Castagnoli) of `data`, the checksum TFRecord framing is built on."""
  return google_crc32c.value(bytes(data))


def masked_crc32c(data: bytes) -> int:
  """The masked CRC TFRecord stores (rotated and offset, so that CRCs of CRCs stay strong)."""
  c = crc32c(data)
  return (((c >> 15) | (c << 17)) + _CRC_MASK_DELTA) & 0xFFFFFFFF


def frame(data: bytes) -> bytes:
  """`data` framed as one TFRecord record (header, payload, footer): what a writer appends."""
  length = struct.pack('<Q', len(data))
  return (length + struct.pack('<I', masked_crc32c(length)) + data
          + _FOOTER.pack(masked_crc32c(data)))


def _payload_length(path, offset: int, header: bytes) -> int:
  """The payload length a record header announces; RecordError if it is cut short or corrupt."""
  if len(header) < _HEADER.size:
    raise RecordError(f'{path} at byte {offset}: truncated TFRecord: header cut short '
                      f'({len(header)} of {_HEADER.size} bytes)')
  length, length_crc = _HEADER.unpack_from(header)
  if masked_crc32c(header[:8]) != length_crc:
    raise RecordError(f'{path} at byte {offset}: not a TFRecord: bad length checksum (a file of '
                      'another format, or the rest of the file is unreadable)')
  return length


def _checked_payload(path, offset: int, length: int, body: bytes) -> bytes:
  """The payload in `body` (payload + footer); RecordError if it is cut short or corrupt."""
  if len(body) < length + _FOOTER.size:
    raise RecordError(f'{path} at byte {offset}: truncated TFRecord: the record announces {length} '
                      f'bytes, {max(0, len(body) - _FOOTER.size)} left')
  data = body[:length]
  (data_crc,) = _FOOTER.unpack_from(body, length)
  if masked_crc32c(data) != data_crc:
    raise RecordError(f'{path} at byte {offset}: corrupt TFRecord: bad data checksum '
                      f'({length}-byte record)')
  return data


def read_record(path: files.PathLike, offset: int, length: int | None = None) -> bytes:
  """The payload of the record at byte `offset` of `path`, both CRCs checked.

  With `length` (from an index) this is one ranged read of exactly the record; without, the
  header is read first. Raises RecordError (file, offset, what is wrong) if the record is
  malformed or, with `length`, is not the record the index describes.
  """
  if length is None:
    length = _payload_length(path, offset, files.read_range(path, offset, _HEADER.size))
    body = files.read_range(path, offset + _HEADER.size, length + _FOOTER.size)
    return _checked_payload(path, offset, length, body)
  raw = files.read_range(path, offset, length + _OVERHEAD)
  announced = _payload_length(path, offset, raw[:_HEADER.size])
  if announced != length:
    raise RecordError(f'{path} at byte {offset}: the record holds {announced} bytes, its index '
                      f'says {length} (the file changed after it was indexed)')
  return _checked_payload(path, offset, length, raw[_HEADER.size:])


class _SequentialReader:
  """Reads a file front to back in large ranged requests, whatever size the records are."""

  def __init__(self, path, chunk_size: int = _WALK_CHUNK):
    self._path = path
    self._chunk_size = chunk_size
    self._buffer = b''
    self._start = 0  # file offset of self._buffer[0]
    self._at_end = False

  def read(self, offset: int, size: int) -> bytes:
    """Bytes `[offset, offset + size)` (fewer at the end of the file); offsets only grow."""
    end, buffer_end = offset + size, self._start + len(self._buffer)
    if end > buffer_end and not self._at_end:
      kept = self._buffer[offset - self._start:] if offset < buffer_end else b''
      want = max(end - offset - len(kept), self._chunk_size)
      more = files.read_range(self._path, offset + len(kept), want)
      self._at_end = len(more) < want
      self._buffer, self._start = kept + more, offset
    return self._buffer[offset - self._start:end - self._start]


def walk(path: files.PathLike) -> Iterator[tuple[int, int, bytes | RecordError]]:
  """Every record of a TFRecord file in order: (offset, payload length, payload or RecordError).

  Both CRCs are checked. A record with a bad data CRC is reported and the walk goes on (its
  length is sound); a header that is cut short or corrupt, or a payload cut short, ends the walk
  (nothing after it can be located) and is reported as the last record (length -1 for a header).
  """
  reader = _SequentialReader(path)
  offset = 0
  while True:
    header = reader.read(offset, _HEADER.size)
    if not header:
      return
    try:
      length = _payload_length(path, offset, header)
    except RecordError as e:
      yield offset, -1, e
      return
    body = reader.read(offset + _HEADER.size, length + _FOOTER.size)
    try:
      payload = _checked_payload(path, offset, length, body)
    except RecordError as e:
      payload = e
    yield offset, length, payload
    if len(body) < length + _FOOTER.size:
      return
    offset += length + _OVERHEAD


def index_file(path: files.PathLike) -> list[int]:
  """The byte offset of every record of a TFRecord file, the malformed ones included.

  A record that cannot be read keeps its offset (a torn tail or a bad header is the last one), so
  that the converter quarantines it with `read_record`'s reason instead of dropping it silently.
  """
  return [offset for offset, _, _ in walk(path)]


# --- payload ---------------------------------------------------------------------------------

def _values(feature) -> list:
  kind = feature.WhichOneof('kind')
  return list(getattr(feature, kind).value) if kind else []


def parse(data: bytes) -> dict:
  """A serialized SequenceExample as {id, label, label_name, fps, frames}.

  Missing fields are None (frames: []); text is decoded as UTF-8. Raises RecordError if `data`
  is not a SequenceExample.
  """
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
  if FRAMES_KEY in seq.feature_lists.feature_list:
    for feature in seq.feature_lists.feature_list[FRAMES_KEY].feature:
      frames.extend(_values(feature))
  label = first((LABEL_KEY,))
  fps = first((FPS_KEY,))
  return {
      'id': first(ID_KEYS),
      'label': int(label) if label is not None else None,
      'label_name': first(LABEL_NAME_KEYS),
      'fps': float(fps) if fps is not None else None,
      'frames': frames,
  }


def _video_record(parsed: dict, video_id: str) -> dict:
  """The record dict the ArrayRecord source gives for the same video (same keys and types)."""
  return {
      'fps': float(np.float32(parsed['fps'] or 0.0)),
      'frames': parsed['frames'],
      'id': video_id.encode('utf-8'),
      'label': -1 if parsed['label'] is None else int(parsed['label']),
      'num_frames': len(parsed['frames']),
  }


def _fallback_id(path, position: int) -> str:
  """The id of a record that has none: `<file name>:<position in the file>`, as prepare names it."""
  return f'{files.resolve(path).name}:{position}'


# --- names -----------------------------------------------------------------------------------

def split_of(file_name: str) -> str | None:
  """The split a TFRecord file name says ('train', 'validation', 'test'), or None."""
  tokens = set(re.split(r'[^a-z]+', file_name.lower()))
  for split, names in _SPLIT_TOKENS.items():
    if tokens & set(names):
      return split
  return None


def is_tfrecord(file_name: str) -> bool:
  """Whether a file name is a TFRecord file's (`*tfrecord*`, `*-NNNNN-of-NNNNN`), not an index."""
  if INDEX_SUFFIX in file_name:  # our index files, and their temporaries
    return False
  return 'tfrecord' in file_name.lower() or bool(_SHARDED.search(file_name))


def _local_files(folder: str) -> list[str]:
  found = []
  for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
    dirnames.sort()
    found += [os.path.join(dirpath, f) for f in sorted(filenames) if is_tfrecord(f)]
  return found


def _remote_files(folder: epath.Path) -> list[str]:
  # One listing a folder; is_dir() is answered from gcsfs's cache of that listing.
  entries = sorted(folder.iterdir(), key=lambda p: p.name)
  subfolders = [p for p in entries if p.is_dir()]
  names = {p.name for p in subfolders}
  found = [os.fspath(p) for p in entries if p.name not in names and is_tfrecord(p.name)]
  for sub in subfolders:
    found += _remote_files(sub)
  return found


def tfrecord_files(folder: files.PathLike) -> list[str]:
  """The TFRecord files below `folder` (local or a bucket), files before subfolders, by name.

  Raises errors.NotFoundError if `folder` does not exist.
  """
  local = files.local_path(folder)
  if local is not None:
    if not os.path.isdir(local):
      raise errors.NotFoundError(f'{local}: no such folder')
    return _local_files(local)
  path = files.resolve(folder)
  if not path.is_dir():
    raise errors.NotFoundError(f'{path}: no such folder')
  return _remote_files(path)


def find_shards(folder: files.PathLike) -> dict[str, list[str]]:
  """The TFRecord files of `folder` (or the one file `folder`) by split: {split: [paths]}.

  The split comes from each file's name; files that name none are left out with a warning (a
  lone file is 'train' if its name says nothing). Raises errors.NotFoundError if there is no
  TFRecord file, or none names its split.
  """
  path = files.resolve(folder)
  if path.is_file():
    return {split_of(path.name) or 'train': [os.fspath(path)]}
  paths = tfrecord_files(path)
  if not paths:
    raise errors.NotFoundError(f'{path}: no TFRecord file there (names containing "tfrecord" or '
                               'ending in -NNNNN-of-NNNNN)')
  by_split = {}
  for shard in paths:
    split = split_of(files.resolve(shard).name)
    if split is None:
      logging.warning('%s: the name says no split (train*, val*/validation*, test*); not used',
                      shard)
      continue
    by_split.setdefault(split, []).append(shard)
  if not by_split:
    raise errors.NotFoundError(f'{path}: no TFRecord file names its split '
                               '(train*, val*/validation*, test*)')
  return {split: by_split[split] for split in SPLITS if split in by_split}


# --- the shard index -------------------------------------------------------------------------

def _stamp(path) -> dict:
  """What identifies a version of the shard: its size and modification time."""
  local = files.local_path(path)
  try:
    if local is not None:
      st = os.stat(local)
      return {'size': st.st_size, 'mtime_ns': st.st_mtime_ns}
    st = files.resolve(path).stat()
    return {'size': int(st.length), 'mtime_ns': int(st.mtime) * 10**9}
  except FileNotFoundError:
    raise errors.NotFoundError(f'{path}: no such TFRecord file') from None


def build_index(path: files.PathLike) -> dict:
  """Walks a shard once and returns its index (the module docstring's format), nothing cached."""
  stamp = _stamp(path)  # before reading: a shard changing during the walk is rebuilt next time
  rows, skipped, label_names = [], [], {}
  for position, (offset, length, data) in enumerate(walk(path)):
    if isinstance(data, RecordError):
      skipped.append({'offset': offset, 'reason': str(data)})
      continue
    try:
      parsed = _parse_at(path, offset, data)
    except RecordError as e:
      skipped.append({'offset': offset, 'reason': str(e)})
      continue
    video_id = parsed['id'] or _fallback_id(path, position)
    rec = _video_record(parsed, video_id)
    rows.append([offset, length, video_id, rec['label'], rec['num_frames'], rec['fps']])
    if parsed['label_name'] is not None and rec['label'] >= 0:
      label_names[str(rec['label'])] = parsed['label_name']
  return {'format': INDEX_FORMAT, 'version': INDEX_VERSION, 'shard': os.fspath(path), **stamp,
          'records': rows, 'skipped': skipped, 'label_names': label_names}


def _parse_at(path, offset: int, data: bytes) -> dict:
  """`parse(data)` for the record at `offset`, which must hold frames; RecordError naming both."""
  try:
    parsed = parse(data)
  except RecordError as e:
    raise RecordError(f'{path} at byte {offset}: {e}') from None
  if not parsed['frames']:
    raise RecordError(f'{path} at byte {offset}: no frames: the record has no {FRAMES_KEY} frames')
  return parsed


def index_path(shard: files.PathLike) -> epath.Path:
  """Where a shard's cached index lives beside it: `<shard name>.index.json`."""
  shard = files.resolve(shard)
  return shard.parent / (shard.name + INDEX_SUFFIX)


def _cache_path(index_dir: files.PathLike, shard: files.PathLike) -> epath.Path:
  """Where a shard's cached index lives in `index_dir` (the shard's path hashed in: unique)."""
  shard = files.resolve(shard)
  digest = hashlib.sha1(os.fspath(shard).encode('utf-8')).hexdigest()[:12]
  return files.resolve(index_dir) / f'{shard.name}.{digest}{INDEX_SUFFIX}'


def _read_cached(path: epath.Path, stamp: dict) -> dict | None:
  """The index cached at `path` if it is there, of this format and of this version of the shard."""
  try:
    index = files.read_json(path)
  except (errors.UserError, OSError):
    return None
  fresh = (isinstance(index, dict) and index.get('format') == INDEX_FORMAT
           and index.get('version') == INDEX_VERSION and index.get('size') == stamp['size']
           and index.get('mtime_ns') == stamp['mtime_ns'])
  return index if fresh else None


def _write_cached(index: dict, places: Sequence[epath.Path]) -> None:
  """Caches `index` at the first of `places` that can be written; warns if none can."""
  problems = []
  for place in places:
    try:
      local = files.local_path(place)
      if local is not None:  # a bucket has no folders to make (gcsfs's makedirs makes buckets)
        os.makedirs(os.path.dirname(local), exist_ok=True)
      files.write_json(place, index, indent=None)
      return
    except Exception as e:  # pylint: disable=broad-except
      # A cache that cannot be written must not stop training (read-only folder, bucket rights).
      problems.append(f'{place}: {type(e).__name__}: {e}')
  logging.warning('TFRecord index of %s not cached (it is rebuilt on every start): %s',
                  index['shard'], '; '.join(problems) or 'no place to cache it')


def load_index(shard: files.PathLike, index_dir: files.PathLike | None = None) -> dict:
  """A shard's index: the cached one if it matches the shard, else built and cached.

  Looked for beside the shard, then in `index_dir`; written beside the shard, else in
  `index_dir`, else not cached (with a warning).
  """
  stamp = _stamp(shard)
  places = [index_path(shard)] + ([_cache_path(index_dir, shard)] if index_dir else [])
  for place in places:
    index = _read_cached(place, stamp)
    if index is not None:
      return index
  index = build_index(shard)
  _write_cached(index, places)
  return index


# --- the random-access source ----------------------------------------------------------------

class TFRecordSource:
  """Random access over the records of TFRecord shards, in order: a grain data source.

  `source[i]` is the same dict, with the same types, as the prepared ArrayRecord source gives for
  the same video: {'fps': float, 'frames': [JPEG bytes], 'id': bytes, 'label': int (-1
  unlabeled), 'num_frames': int}. It costs one ranged read of exactly the record, CRC-checked.
  Records that cannot be used are not counted; `skipped` lists them. The source holds no open
  file and no mutable state: it pickles (grain workers) and is read from many threads at once.

  Attributes:
    paths: the shard files, in order.
    ids, labels, num_frames: per record, from the index (the trainer checks labels up front).
    label_names: {label: class name} from the records that carry one.
    skipped: [{'file', 'offset', 'reason'}] for the records left out.
  """

  def __init__(self, paths: Iterable[files.PathLike], index_dir: files.PathLike | None = None):
    self.paths = [os.fspath(files.resolve(p)) for p in paths]
    workers = max(1, min(_INDEX_THREADS, len(self.paths)))
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
      indexes = list(pool.map(lambda p: load_index(p, index_dir), self.paths))
    rows = [(s, row) for s, index in enumerate(indexes) for row in index['records']]
    self._shard = np.array([s for s, _ in rows], np.int32)
    self._offset = np.array([row[0] for _, row in rows], np.int64)
    self._length = np.array([row[1] for _, row in rows], np.int64)
    self.ids = [row[2] for _, row in rows]
    self.labels = [row[3] for _, row in rows]
    self.num_frames = [row[4] for _, row in rows]
    self.label_names = {int(k): v for index in indexes for k, v in index['label_names'].items()}
    self.skipped = [{'file': path, **s} for path, index in zip(self.paths, indexes)
                    for s in index['skipped']]
    if self.skipped:
      logging.warning('TFRecord source: %d records skipped (first: %s)', len(self.skipped),
                      self.skipped[0]['reason'])

  def __len__(self) -> int:
    return len(self.ids)

  def __getitem__(self, i) -> dict:
    """Record `i` (negative counts from the end); RecordError if the shard changed under it."""
    i = operator.index(i)
    if i < 0:
      i += len(self)
    if not 0 <= i < len(self):
      raise IndexError(f'record {i} of a {len(self)}-record TFRecord source')
    path, offset = self.paths[self._shard[i]], int(self._offset[i])
    data = read_record(path, offset, int(self._length[i]))
    return _video_record(_parse_at(path, offset, data), self.ids[i])

  def __repr__(self) -> str:
    return (f'TFRecordSource({len(self)} records in {len(self.paths)} shards, '
            f'{len(self.skipped)} skipped)')
