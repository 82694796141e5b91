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

`TFRecordSource` gives random access over the records of several shards. A record's metadata
comes from the index; its frames are read on demand (`frames.Frames`): a clip reads only its
sampled frames' bytes, with ranged reads (`files.read_ranges`: one open file locally, concurrent
requests on a bucket), so a clip of a 300-frame video costs what one of a 48-frame video does.
That needs every record's offset and length, each frame's place inside it, and the trainer needs
every label before it computes anything, so each shard is walked once (read sequentially in large
chunks: on a bucket each request costs a round trip) and its index is cached beside it, or, where
the shard's folder cannot be written, in the caller's `index_dir`, as two files:

  <shard name>.index.json    {"format": "stm-tfrecord-index", "version": 2, "shard": <path>,
      "size": <bytes>, "mtime_ns": <modification time>, "table_rows": <frames in the table>,
      "records": [[offset, length, id, label, num_frames, fps, table_row], ...],
      "skipped": [{"offset": o, "reason": "..."}, ...], "label_names": {"<label>": "<name>"}}
  <shard name>.index.frames  the frame table: per frame of every indexed record, in order, three
      little-endian uint32: the frame's JPEG bytes' offset inside the record's payload, their
      length, and their CRC-32C. Record r's frames are rows `[table_row, table_row + num_frames)`.

The frames' places are found by walking the SequenceExample's protobuf wire format once, after the
record's CRCs are checked (`frame_spans`), and checked against the parsed frames; a record whose
frames cannot be located so (an unusual encoding) gets `table_row` -1 and is read whole, CRCs
checked, as before. A frame read is checked against its CRC-32C in the table (computed from the
checked record), so a clip never decodes bytes the file did not hold when it was indexed. The table
is kept in a file, not in memory: for Kinetics-400 it holds ~76M frames (~0.9 GB); a clip reads its
video's rows (12 bytes a frame) with one ranged read.

An index whose size or modification time differs from the shard's (locally `os.stat`, ns; in a
bucket epath's `stat()`, whose mtime gcsfs takes from the object's `updated` time, whole seconds),
whose format version is not this one (version 1 had no frame table), or whose frame table is
missing or of another size, is rebuilt. Records that cannot be used (bad CRC, not a
SequenceExample, no frames) are left out of the index and listed under `skipped` with the reason,
as the converter quarantines corrupt videos.
"""

import concurrent.futures
import hashlib
import operator
import os
import re
import struct
import threading
from typing import Iterable, Iterator, Sequence

from absl import logging
from etils import epath
from google.protobuf import message
import google_crc32c
import numpy as np
from tensorflow_datasets.proto import tf_example_generated_pb2 as example_pb2

from input_pipeline import errors
from input_pipeline import files
from input_pipeline import frames as frames_lib

# SequenceExample keys (DMVR / MediaSequence).
FRAMES_KEY = 'image/encoded'
LABEL_KEY = 'clip/label/index'
LABEL_NAME_KEYS = ('clip/label/string', 'clip/label/text')
ID_KEYS = ('clip/media_id', 'video_id', 'id', 'example/id', 'clip/data_path')
FPS_KEY = 'image/frame_rate'

INDEX_SUFFIX = '.index.json'
TABLE_SUFFIX = '.index.frames'
INDEX_FORMAT = 'stm-tfrecord-index'
INDEX_VERSION = 2
# A frame table row: offset in the payload, length, CRC-32C of the frame's bytes.
_TABLE_DTYPE = np.dtype('<u4')
_TABLE_ROW = 3 * _TABLE_DTYPE.itemsize

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


_FRAMES_KEY_BYTES = FRAMES_KEY.encode()


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
  """The varint at `pos` of `buf` and the position after it; ValueError if it runs off the end."""
  result = shift = 0
  while True:
    b = buf[pos]
    pos += 1
    result |= (b & 0x7F) << shift
    if b < 0x80:
      return result, pos
    shift += 7
    if shift > 63:
      raise ValueError('varint too long')


def _fields(buf: bytes, start: int, end: int) -> Iterator[tuple[int, int, int]]:
  """The length-delimited fields of the message `buf[start:end]`: (field number, value start,
  value end); other wire types are skipped. ValueError if the message is malformed."""
  pos = start
  while pos < end:
    key, pos = _varint(buf, pos)
    wire = key & 7
    if wire == 0:
      _, pos = _varint(buf, pos)
    elif wire == 1:
      pos += 8
    elif wire == 5:
      pos += 4
    elif wire == 2:
      n, pos = _varint(buf, pos)
      if pos + n > end:
        raise ValueError('field runs past its message')
      yield key >> 3, pos, pos + n
      pos += n
    else:
      raise ValueError(f'wire type {wire}')
  if pos != end:
    raise ValueError('message runs past its end')


def frame_spans(data: bytes) -> list[tuple[int, int]] | None:
  """Where each frame's JPEG bytes lie in a serialized SequenceExample: [(offset, length)], in
  the order `parse` gives the frames; None if the wire format cannot be followed.

  Walks SequenceExample.feature_lists (2) -> map entry (1) with key `image/encoded` -> FeatureList
  (value, 2) -> Feature (1) -> BytesList (bytes_list, 1) -> value (1), without copying a frame.
  The last map entry of the key wins, as protobuf parsing has it. Callers check the result
  against `parse` (what `build_index` does): an unusual encoding gives no spans, never wrong ones.
  """
  try:
    found = None
    for field, start, end in _fields(data, 0, len(data)):
      if field != 2:
        continue
      for f2, s2, e2 in _fields(data, start, end):
        if f2 != 1:
          continue
        key, value = None, None
        for f3, s3, e3 in _fields(data, s2, e2):
          if f3 == 1:
            key = data[s3:e3]
          elif f3 == 2:
            value = (s3, e3)
        if key == _FRAMES_KEY_BYTES:
          found = value or (s2, s2)
    if found is None:
      return []
    spans = []
    for f4, s4, e4 in _fields(data, *found):  # FeatureList.feature
      if f4 != 1:
        continue
      for f5, s5, e5 in _fields(data, s4, e4):  # Feature.bytes_list
        if f5 != 1:
          continue
        spans += [(s6, e6 - s6) for f6, s6, e6 in _fields(data, s5, e5) if f6 == 1]
    return spans
  except (ValueError, IndexError):
    return None


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
  if INDEX_SUFFIX in file_name or TABLE_SUFFIX in file_name:  # our index files, their temporaries
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
  """Walks a shard once and returns its index (the module docstring's format), nothing cached.

  The frame table is under 'frame_table' (bytes; in memory only, not in the JSON file).
  """
  stamp = _stamp(path)  # before reading: a shard changing during the walk is rebuilt next time
  rows, skipped, label_names, table = [], [], {}, []
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
    spans = frame_spans(data)
    view = memoryview(data)
    if spans is None or len(spans) != len(parsed['frames']) or any(
        view[o:o + n] != f for (o, n), f in zip(spans, parsed['frames'])):
      table_row = -1  # Read whole (CRC-checked) when its frames are wanted.
    else:
      table_row = len(table)
      table += [(o, n, crc32c(view[o:o + n])) for o, n in spans]
    rows.append([offset, length, video_id, rec['label'], rec['num_frames'], rec['fps'],
                 table_row])
    if parsed['label_name'] is not None and rec['label'] >= 0:
      label_names[str(rec['label'])] = parsed['label_name']
  return {'format': INDEX_FORMAT, 'version': INDEX_VERSION, 'shard': os.fspath(path), **stamp,
          'table_rows': len(table), 'records': rows, 'skipped': skipped,
          'label_names': label_names,
          'frame_table': np.asarray(table, _TABLE_DTYPE).reshape(-1, 3).tobytes()}


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


def table_path(index: files.PathLike) -> epath.Path:
  """The frame table cached with the index file `index`: `<...>.index.frames` beside it."""
  index = files.resolve(index)
  return index.parent / (index.name[:-len(INDEX_SUFFIX)] + TABLE_SUFFIX)


def _cache_path(index_dir: files.PathLike, shard: files.PathLike) -> epath.Path:
  """Where a shard's cached index lives in `index_dir` (the shard's path hashed in: unique)."""
  shard = files.resolve(shard)
  digest = hashlib.sha1(os.fspath(shard).encode('utf-8')).hexdigest()[:12]
  return files.resolve(index_dir) / f'{shard.name}.{digest}{INDEX_SUFFIX}'


def _size(path: epath.Path) -> int | None:
  """The size of the file `path`, None if there is none."""
  local = files.local_path(path)
  try:
    return os.path.getsize(local) if local is not None else int(path.stat().length)
  except (FileNotFoundError, OSError):
    return None


def _read_cached(path: epath.Path, stamp: dict) -> dict | None:
  """The index cached at `path` if it is there, of this format and of this version of the shard,
  with its frame table beside it ('frame_table': the table's path)."""
  try:
    index = files.read_json(path)
  except (errors.UserError, OSError):
    return None
  fresh = (isinstance(index, dict) and index.get('format') == INDEX_FORMAT
           and index.get('version') == INDEX_VERSION and index.get('size') == stamp['size']
           and index.get('mtime_ns') == stamp['mtime_ns'])
  if not fresh:
    return None
  table = table_path(path)
  if _size(table) != index.get('table_rows', -1) * _TABLE_ROW:
    return None
  return {**index, 'frame_table': os.fspath(table)}


def _write_cached(index: dict, places: Sequence[epath.Path]) -> dict:
  """Caches `index` (its frame table first) at the first of `places` that can be written; warns
  if none can. Returns the index, its 'frame_table' the cached table's path, else the bytes."""
  problems = []
  table = index['frame_table']
  stored = {k: v for k, v in index.items() if k != 'frame_table'}
  for place in places:
    try:
      local = files.local_path(place)
      if local is not None:  # a bucket has no folders to make (gcsfs's makedirs makes buckets)
        os.makedirs(os.path.dirname(local), exist_ok=True)
      files.write_bytes(table_path(place), table)
      try:
        files.write_json(place, stored, indent=None)  # the index last: what makes the cache valid
      except Exception:
        _remove_quietly(table_path(place))
        raise
      return {**stored, 'frame_table': os.fspath(table_path(place))}
    except Exception as e:  # pylint: disable=broad-except
      # A cache that cannot be written must not stop training (read-only folder, bucket rights).
      problems.append(f'{place}: {type(e).__name__}: {e}')
  logging.warning('TFRecord index of %s not cached (it is rebuilt on every start, and its frame '
                  'table is held in memory): %s', index['shard'],
                  '; '.join(problems) or 'no place to cache it')
  return index


def _remove_quietly(path: epath.Path) -> None:
  """Removes `path` if it can (a frame table whose index could not be written)."""
  try:
    path.unlink(missing_ok=True)
  except Exception:  # pylint: disable=broad-except
    pass


def load_index(shard: files.PathLike, index_dir: files.PathLike | None = None) -> dict:
  """A shard's index: the cached one if it matches the shard, else built and cached.

  Looked for beside the shard, then in `index_dir`; written beside the shard, else in
  `index_dir`, else not cached (with a warning). 'frame_table' is the cached frame table's path,
  or the table itself (bytes) where it could not be cached.
  """
  stamp = _stamp(shard)
  places = [index_path(shard)] + ([_cache_path(index_dir, shard)] if index_dir else [])
  for place in places:
    index = _read_cached(place, stamp)
    if index is not None:
      return index
  return _write_cached(build_index(shard), places)


# --- the random-access source ----------------------------------------------------------------

class TFRecordSource:
  """Random access over the records of TFRecord shards, in order: a grain data source.

  `source[i]` has the keys and types the prepared ArrayRecord source gives for the same video:
  {'fps': float, 'frames': frames.Frames (JPEG bytes), 'id': bytes, 'label': int (-1
  unlabeled), 'num_frames': int}. It reads nothing: the metadata is the index's, and the frames
  are read when taken (`read_frames`). Records that cannot be used are not counted; `skipped` lists
  them. The source holds no open file: it pickles (grain workers) and is read from many threads.

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
    self._tables = [index['frame_table'] for index in indexes]
    self._shard = np.array([s for s, _ in rows], np.int32)
    self._offset = np.array([row[0] for _, row in rows], np.int64)
    self._length = np.array([row[1] for _, row in rows], np.int64)
    self._table_row = np.array([row[6] for _, row in rows], np.int64)
    self._fps = [row[5] for _, row in rows]
    self.ids = [row[2] for _, row in rows]
    self.labels = [row[3] for _, row in rows]
    self.num_frames = [row[4] for _, row in rows]
    self.label_names = {int(k): v for index in indexes for k, v in index['label_names'].items()}
    self.skipped = [{'file': path, **s} for path, index in zip(self.paths, indexes)
                    for s in index['skipped']]
    self._local = threading.local()
    if self.skipped:
      logging.warning('TFRecord source: %d records skipped (first: %s)', len(self.skipped),
                      self.skipped[0]['reason'])

  def __getstate__(self):
    state = self.__dict__.copy()
    del state['_local']
    return state

  def __setstate__(self, state):
    self.__dict__.update(state)
    self._local = threading.local()

  def __len__(self) -> int:
    return len(self.ids)

  def __getitem__(self, i) -> dict:
    """Record `i` (negative counts from the end); its frames are read when taken."""
    i = operator.index(i)
    if i < 0:
      i += len(self)
    if not 0 <= i < len(self):
      raise IndexError(f'record {i} of a {len(self)}-record TFRecord source')
    return {'fps': self._fps[i], 'frames': frames_lib.Frames(self, i, self.num_frames[i]),
            'id': self.ids[i].encode('utf-8'), 'label': self.labels[i],
            'num_frames': self.num_frames[i]}

  def _frame_rows(self, i: int) -> np.ndarray:
    """Record `i`'s rows of its shard's frame table, `(num_frames, 3)` (the last one per thread
    is kept: eval reads a video's clips one after another)."""
    cached = getattr(self._local, 'rows', None)
    if cached is not None and cached[0] == i:
      return cached[1]
    table, start, n = self._tables[self._shard[i]], int(self._table_row[i]), self.num_frames[i]
    if isinstance(table, (bytes, bytearray)):
      raw = table[start * _TABLE_ROW:(start + n) * _TABLE_ROW]
    else:
      raw = files.read_range(table, start * _TABLE_ROW, n * _TABLE_ROW)
    if len(raw) != n * _TABLE_ROW:
      raise RecordError(f'{table}: the frame table is cut short at record {i} (rebuilt if its '
                        'index is deleted)')
    rows = np.frombuffer(raw, _TABLE_DTYPE).reshape(n, 3)
    self._local.rows = (i, rows)
    return rows

  def read_frames(self, i: int, positions: Sequence[int]) -> list[bytes]:
    """The frames `positions` of record `i`, each checked against its CRC-32C in the frame table;
    RecordError (file, byte offset) if the shard changed under the index."""
    path, offset = self.paths[self._shard[i]], int(self._offset[i])
    if self._table_row[i] < 0:  # Frames not located when indexed: the whole record, checked.
      frames = _parse_at(path, offset, read_record(path, offset, int(self._length[i])))['frames']
      return [frames[p] for p in positions]
    rows = self._frame_rows(i)
    base = offset + _HEADER.size
    datas = files.read_ranges(path, [(base + int(rows[p, 0]), int(rows[p, 1])) for p in positions])
    for p, data in zip(positions, datas):
      if len(data) != rows[p, 1] or crc32c(data) != rows[p, 2]:
        raise RecordError(f'{path} at byte {offset}: frame {p} does not match its checksum in the '
                          'index (the file changed after it was indexed, or is corrupt)')
    return datas

  def __repr__(self) -> str:
    return (f'TFRecordSource({len(self)} records in {len(self.paths)} shards, '
            f'{len(self.skipped)} skipped)')
