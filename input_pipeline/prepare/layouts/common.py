"""Types and file-finding helpers shared by the native-layout readers.

A layout reader turns an unpacked official download (`raw_dir`) into a `Layout`: per split, a list
of `Entry`s (one per video) plus the class names, and a record of which files it used and what it
could not find. Readers never decode video: whether a listed video exists and decodes is the
converter's business (it quarantines the ones that do not), so that reading a layout stays fast.
"""

import collections
import dataclasses
import os
from typing import Iterable, Sequence

from input_pipeline import errors
from input_pipeline import files
from input_pipeline import video

# Entry kinds: a video file PyAV decodes, a folder of JPEG frames, a record inside a TFRecord file.
VIDEO = 'video'
FRAMES = 'frames'
TFRECORD = 'tfrecord'

VIDEO_EXTENSIONS = video.VIDEO_EXTENSIONS
JPEG_EXTENSIONS = video.JPEG_EXTENSIONS

# Directories with more entries than this are not descended into while searching for annotation
# files (they are video or frame folders, e.g. 108k frame folders for Something-Something v1).
_MAX_LISTED = 5000
_MAX_DEPTH = 4


class LayoutError(errors.UserError):
  """The raw folder lacks what the layout needs (names what is missing and where it looked)."""


class AnnotationError(errors.UserError):
  """An annotation file is wrong at a given line (e.g. it names a class that does not exist)."""

  def __init__(self, path: str, line: int | str, message: str):
    super().__init__(f'{path}:{line}: {message}')
    self.path = path
    self.line = line


@dataclasses.dataclass(frozen=True)
class Entry:
  """One video to convert.

  Attributes:
    video_id: the dataset's id for it (a TFRecord entry's provisional id is `<file>:<index>`; the
      converter replaces it with the id stored in the record, if any).
    label: class index, -1 for unlabeled (test) splits, None when it is read from a TFRecord record.
    kind: VIDEO, FRAMES or TFRECORD.
    path: the video file, the frame folder or the TFRecord file.
    offset: byte offset of the record in a TFRecord file; -1 otherwise.
  """
  video_id: str
  label: int | None
  kind: str
  path: str
  offset: int = -1


@dataclasses.dataclass
class Layout:
  """What a layout reader found in `raw_dir`.

  Attributes:
    class_names: names by class index; None when they are only known after reading the records
      (TFRecord input without a class list file).
    splits: split name ('train', 'validation', 'test') -> entries, in annotation order.
    used: the annotation files and video folders the reader used.
    notes: what it could not find (a split without annotations, say), for the user to read.
    fps: frame rate to record for frame folders, whose rate no file states (0 means unknown).
  """
  class_names: list[str] | None
  splits: dict[str, list[Entry]]
  used: list[str] = dataclasses.field(default_factory=list)
  notes: list[str] = dataclasses.field(default_factory=list)
  fps: float = 0.0


def _listdir(path: str) -> list[os.DirEntry]:
  try:
    with os.scandir(path) as it:
      return sorted(it, key=lambda e: e.name)
  except OSError:
    return []


def directories(raw_dir: str, max_depth: int = _MAX_DEPTH) -> list[str]:
  """Lists `raw_dir` and its subfolders breadth first (shallowest first, sorted within a depth).

  Folders with more than a few thousand entries are listed but not descended into: they hold videos
  or frame folders, not annotation files, and walking them would take minutes on a full dataset.
  """
  found, frontier = [raw_dir], [raw_dir]
  for _ in range(max_depth):
    nxt = []
    for d in frontier:
      entries = _listdir(d)
      if len(entries) > _MAX_LISTED:
        continue
      nxt.extend(e.path for e in entries if e.is_dir(follow_symlinks=True))
    found.extend(nxt)
    frontier = nxt
  return found


def check_raw_dir(raw_dir: str) -> str:
  """Returns `raw_dir` made absolute (a bucket path as given), or raises LayoutError if it is unset or not a folder."""
  if not raw_dir:
    raise LayoutError('config.data.raw_dir is empty: pass --config.data.raw_dir=<the folder where '
                      'you unpacked the official download>')
  if not files.resolve(raw_dir).is_dir():
    raise LayoutError(f'config.data.raw_dir={raw_dir!r} is not a folder')
  return os.fspath(files.resolve(raw_dir))


def find_file(raw_dir: str, names: Sequence[str], dirs: Sequence[str] | None = None) -> str | None:
  """Returns the shallowest file under `raw_dir` whose name is one of `names` (case-insensitive).

  `names` are tried in order of preference at each depth. Returns None if none exists.
  """
  wanted = [n.lower() for n in names]
  for d in dirs if dirs is not None else directories(raw_dir):
    by_lower = {e.name.lower(): e.path for e in _listdir(d) if e.is_file()}
    for n in wanted:
      if n in by_lower:
        return by_lower[n]
  return None


def require_file(raw_dir: str, names: Sequence[str], what: str, dataset: str,
                 dirs: Sequence[str] | None = None) -> str:
  """Like find_file, but raises a LayoutError naming `what`, the names tried and `raw_dir`."""
  path = find_file(raw_dir, names, dirs)
  if path is None:
    raise LayoutError(f'{dataset}: could not find {what} under {raw_dir} (searched subfolders '
                      f'{_MAX_DEPTH} deep for {", ".join(names)})')
  return path


def find_root(raw_dir: str, probes: Sequence[str], preferred: Sequence[str] = (),
              dirs: Sequence[str] | None = None) -> str | None:
  """Returns the folder under `raw_dir` that holds the most of `probes` (relative names).

  Used to find the video or frame folder from a few ids of the annotations, whatever the folder is
  called. Folders whose name is in `preferred` (the official name) win ties. None if no folder holds
  any probe.
  """
  best, best_hits = None, 0
  pref = {p.lower() for p in preferred}
  for d in dirs if dirs is not None else directories(raw_dir):
    hits = sum(os.path.exists(os.path.join(d, p)) for p in probes)
    if hits > best_hits or (hits == best_hits and hits and os.path.basename(d).lower() in pref):
      best, best_hits = d, hits
  return best


def index_files(root: str, extensions: Iterable[str]) -> dict[str, str]:
  """Maps the lower-cased name of every file under `root` with one of `extensions` to its path.

  Used where the official archives nest videos differently across mirrors (Kinetics: flat or
  `<split>/<class>/`; UCF-101 and HMDB-51: a folder per class): a video is found by its file name.
  The first path in sorted walk order wins when two files share a name.
  """
  exts = tuple(e.lower() for e in extensions)
  index = {}
  for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
    dirnames.sort()
    for f in sorted(filenames):
      if f.lower().endswith(exts):
        index.setdefault(f.lower(), os.path.join(dirpath, f))
  return index


def stem_index(index: dict[str, str]) -> dict[str, str]:
  """Maps lower-cased file names without extension to paths (for ids given without extension)."""
  out = {}
  for name, path in index.items():
    out.setdefault(os.path.splitext(name)[0], path)
  return out


def read_lines(path: str) -> list[tuple[int, str]]:
  """Returns (1-based line number, stripped line) for the non-blank lines of a text file."""
  with open(path, encoding='utf-8-sig') as f:
    return [(i, line.strip()) for i, line in enumerate(f, 1) if line.strip()]


def class_index(names: Sequence[str]) -> dict[str, int]:
  """Maps class names to indices; raises ValueError if a name repeats."""
  index = {}
  for i, n in enumerate(names):
    if n in index:
      raise errors.UserError(f'class {n!r} listed twice (indices {index[n]} and {i})')
    index[n] = i
  return index


def unknown_class(path: str, line: int | str, name: str, known: Sequence[str]) -> AnnotationError:
  """Builds the error for an annotation naming a class that is not in the class list."""
  close = [k for k in known if k.lower() == str(name).lower()]
  hint = f' (did you mean {close[0]!r}?)' if close else ''
  return AnnotationError(path, line, f'unknown class {name!r}{hint}; the class list has '
                         f'{len(known)} classes')


def check_unique_ids(layout: Layout, dataset: str) -> None:
  """Raises a LayoutError if two entries of one split share a video id.

  Why: the id keys a video's record and its per-video results (eval CSVs); two videos under one id
  (the custom layout's `x.mp4` and `x.webm` in one class folder both give `train/a/x`) would be
  told apart by nothing. Checked for every layout, before anything is converted; the message names
  both files.
  """
  for split, entries in layout.splits.items():
    seen = {}
    for e in entries:
      where = e.path if e.offset < 0 else f'{e.path}@{e.offset}'
      if e.video_id not in seen:
        seen[e.video_id] = where
        continue
      first = seen[e.video_id]
      if first == where:
        raise LayoutError(f'{dataset}: {where} is listed twice in the {split} split (id '
                          f'{e.video_id!r}): remove the repeated annotation line')
      raise LayoutError(f'{dataset}: two videos of the {split} split get the id {e.video_id!r}: '
                        f'{first} and {where}. Video ids must be unique (the id is the file\'s '
                        'path without its extension in the custom layout): rename or remove one '
                        'of them')


def summarize(layout: Layout) -> str:
  """One human-readable paragraph: files used, entries per split, what was not found."""
  counts = collections.OrderedDict((s, len(e)) for s, e in layout.splits.items())
  lines = ['used: ' + p for p in layout.used]
  lines.append('entries: ' + ', '.join(f'{s} {n}' for s, n in counts.items()))
  lines += ['not found: ' + n for n in layout.notes]
  return '\n'.join(lines)
