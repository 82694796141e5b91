"""HMDB-51: avi videos in a folder per class, official 70/30 split files (51 classes, splits 1-3).

raw_dir holds `<class>/<video>.avi` (the unpacked per-class archives) and
`testTrainMulti_7030_splits/<class>_test_split{1,2,3}.txt` with lines `<video>.avi <0|1|2>`
(1 train, 2 test, 0 unused). `config.data.split` picks the split. Class indices follow the sorted
class names; videos are found by file name.
"""

import os
import re

from input_pipeline.prepare.layouts import common


def read(raw_dir: str, config=None) -> common.Layout:
  """Finds the split files and videos in `raw_dir` for config.data.split; returns the Layout."""
  split_no = int(getattr(getattr(config, 'data', None), 'split', 1) or 1) if config else 1
  if split_no not in (1, 2, 3):
    raise common.LayoutError(f'hmdb51: config.data.split={split_no}: the official splits are '
                             '1, 2, 3')
  raw_dir = common.check_raw_dir(raw_dir)
  pattern = re.compile(r'^(.+)_test_split%d\.txt$' % split_no)
  split_files = {}
  for d in common.directories(raw_dir):
    found = {}
    for name in sorted(os.listdir(d)):
      m = pattern.match(name)
      if m and os.path.isfile(os.path.join(d, name)):
        found[m.group(1)] = os.path.join(d, name)
    if found:
      split_files = found
      break
  if not split_files:
    raise common.LayoutError(f'hmdb51: could not find testTrainMulti_7030_splits/<class>_test_split'
                             f'{split_no}.txt under {raw_dir}')
  class_names = sorted(split_files)
  videos = common.index_files(raw_dir, ('.avi',))
  used = [f'{os.path.dirname(next(iter(split_files.values())))} ({len(split_files)} '
          f'*_test_split{split_no}.txt files)',
          f'{raw_dir} ({len(videos)} .avi files found below it)']
  splits = {'train': [], 'test': []}
  for label, name in enumerate(class_names):
    path = split_files[name]
    for line_no, line in common.read_lines(path):
      parts = line.split()
      if len(parts) != 2 or parts[1] not in ('0', '1', '2'):
        raise common.AnnotationError(path, line_no, f'expected "<video>.avi <0|1|2>", got {line!r}')
      if parts[1] == '0':
        continue
      video = videos.get(parts[0].lower(), os.path.join(raw_dir, name, parts[0]))
      entry = common.Entry(os.path.splitext(parts[0])[0], label, common.VIDEO, video)
      splits['train' if parts[1] == '1' else 'test'].append(entry)
  return common.Layout(class_names, splits, used, [])
