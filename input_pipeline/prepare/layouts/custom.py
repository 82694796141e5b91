"""Your own videos: list files of `path label` lines, or a folder per class.

List mode: raw_dir (or a subfolder) holds `train.txt`, `val.txt`/`validation.txt`, `test.txt` (or
`.csv`, `.lst`), one video a line: `path label` or `path,label` (the path is absolute, or relative
to the list file's folder or to raw_dir; a video file or a folder of JPEG frames; the label a class
name or a 0-based index; a line with a path only is unlabeled). raw_dir may also be a single list
file, read as the train split. An optional `classes.txt` (one name a line) fixes the class order;
without it the classes are the sorted names found (or 0..max for integer labels).

Folder mode (no list file): `raw_dir/<class>/<video or frame folder>` is one train split, or
`raw_dir/{train,val,test}/<class>/...` gives one split each. Classes are the sorted folder names.
"""

import os

from input_pipeline.prepare.layouts import common

_SPLIT_NAMES = {
    'train': ('train',),
    'validation': ('val', 'validation', 'valid'),
    'test': ('test',),
}
_LIST_EXTS = ('.txt', '.csv', '.lst')
_CLASS_FILES = ('classes.txt', 'class_names.txt', 'labels.txt')


def _kind(path: str) -> str:
  return common.FRAMES if os.path.isdir(path) else common.VIDEO


def _is_item(entry: os.DirEntry) -> bool:
  if entry.is_file():
    return entry.name.lower().endswith(common.VIDEO_EXTENSIONS)
  if entry.is_dir():
    with os.scandir(entry.path) as it:
      return any(e.name.lower().endswith(common.JPEG_EXTENSIONS) for e in it)
  return False


def _parse_line(line: str) -> tuple[str, str | None]:
  if ',' in line:
    path, _, label = line.rpartition(',')
  else:
    parts = line.rsplit(None, 1)
    path, label = (parts[0], parts[1]) if len(parts) == 2 else (parts[0], '')
  path, label = path.strip(), label.strip()
  if not path:  # a single token with a comma at the end, or no comma at all
    path, label = label, ''
  return path, label or None


def _resolve(path: str, list_dir: str, raw_dir: str) -> str:
  if os.path.isabs(path):
    return path
  for base in (list_dir, raw_dir):
    candidate = os.path.join(base, path)
    if os.path.exists(candidate):
      return os.path.normpath(candidate)
  return os.path.normpath(os.path.join(list_dir, path))


def _video_id(path: str, raw_dir: str) -> str:
  inside = path.startswith(raw_dir + os.sep)
  rel = os.path.relpath(path, raw_dir) if inside else os.path.basename(path)
  stem, ext = os.path.splitext(rel)
  return stem if ext.lower() in common.VIDEO_EXTENSIONS else rel


def _read_lists(raw_dir, lists, class_file):
  """List mode: returns (class_names, splits)."""
  parsed = {}
  for split, path in lists.items():
    rows, list_dir = [], os.path.dirname(path)
    for line_no, line in common.read_lines(path):
      if line.startswith('#'):
        continue
      video, label = _parse_line(line)
      if line_no == 1 and label is not None and label.lower() in ('label', 'class'):
        continue  # header
      rows.append((line_no, _resolve(video, list_dir, raw_dir), label))
    parsed[split] = rows
  labels = [(split, n, l) for split, rows in parsed.items() for n, _, l in rows if l is not None]
  if class_file:
    class_names = [line for _, line in common.read_lines(class_file)]
  elif all(l.isdigit() for _, _, l in labels):
    class_names = [str(i) for i in range(max((int(l) for _, _, l in labels), default=-1) + 1)]
  else:
    numeric = [(s, n, l) for s, n, l in labels if l.isdigit()]
    if numeric:
      s, n, l = numeric[0]
      raise common.AnnotationError(lists[s], n, f'label {l!r} is a number while other lines name '
                                   'classes: use one or the other, or add a classes.txt')
    class_names = sorted({l for _, _, l in labels})
  index = common.class_index(class_names)
  splits = {}
  for split, rows in parsed.items():
    entries = []
    for line_no, video, label in rows:
      if label is None:
        idx = -1
      elif label in index:
        idx = index[label]
      elif label.isdigit() and int(label) < len(class_names):
        idx = int(label)
      else:
        raise common.unknown_class(lists[split], line_no, label, class_names)
      entries.append(common.Entry(_video_id(video, raw_dir), idx, _kind(video), video))
    splits[split] = entries
  return class_names, splits


def _read_folders(raw_dir, dirs):
  """Folder mode: returns (class_names, splits, used)."""
  trees = {split: d for split, d in dirs.items()} or {'train': raw_dir}
  found = {}
  for split, tree in trees.items():
    classes = sorted(e.name for e in os.scandir(tree) if e.is_dir())
    found[split] = {c: sorted((e for e in os.scandir(os.path.join(tree, c)) if _is_item(e)),
                              key=lambda e: e.name) for c in classes}
  first = 'train' if 'train' in found else next(iter(found))
  class_names = sorted(found[first])
  index = {n: i for i, n in enumerate(class_names)}
  splits = {}
  for split, classes in found.items():
    entries = []
    for c, items in classes.items():
      if c not in index:
        raise common.unknown_class(os.path.join(trees[split], c), '-', c, class_names)
      for e in items:
        entries.append(common.Entry(_video_id(e.path, raw_dir), index[c], _kind(e.path), e.path))
    splits[split] = entries
  return class_names, splits, [trees[s] for s in found]


def read(raw_dir: str, config=None) -> common.Layout:
  """Reads list files or class folders under `raw_dir`; returns the Layout (see common)."""
  del config
  if raw_dir and os.path.isfile(raw_dir):
    list_file = os.path.abspath(raw_dir)
    raw_dir = os.path.dirname(list_file)
    lists = {'train': list_file}
  else:
    raw_dir = common.check_raw_dir(raw_dir)
    lists = {}
    for d in common.directories(raw_dir, max_depth=2):
      for split, names in _SPLIT_NAMES.items():
        if split not in lists:
          path = common.find_file(raw_dir, [n + e for n in names for e in _LIST_EXTS], [d])
          if path:
            lists[split] = path
      if lists:
        break
  if lists:
    list_dir = os.path.dirname(next(iter(lists.values())))
    class_file = common.find_file(raw_dir, _CLASS_FILES, [list_dir, raw_dir])
    class_names, splits = _read_lists(raw_dir, lists, class_file)
    used = list(lists.values()) + ([class_file] if class_file else [])
    notes = [f'{split} list (no {split} split)' for split in _SPLIT_NAMES if split not in lists]
    notes += [] if class_file else ['classes.txt (classes are the sorted names or indices found)']
  else:
    split_dirs = {}
    for split, names in _SPLIT_NAMES.items():
      for n in names:
        if os.path.isdir(os.path.join(raw_dir, n)):
          split_dirs[split] = os.path.join(raw_dir, n)
          break
    class_names, splits, used = _read_folders(raw_dir, split_dirs)
    notes = ['train.txt / val.txt / test.txt (read class folders instead)']
  if not class_names or not any(splits.values()):
    raise common.LayoutError(f'custom: found no videos under {raw_dir}: expected train.txt '
                             '(`path label` lines) or a folder per class holding videos or JPEG '
                             'frame folders')
  return common.Layout(class_names, splits, used, notes)
