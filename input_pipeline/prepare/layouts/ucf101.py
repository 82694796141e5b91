"""UCF-101: avi videos in a folder per class, official train/test lists (101 classes, splits 1-3).

raw_dir holds `UCF-101/<Class>/v_<Class>_gXX_cYY.avi` and `ucfTrainTestlist/` with `classInd.txt`
(`1 ApplyEyeMakeup`: 1-based index and name), `trainlist0{1,2,3}.txt` (`Class/file.avi 1`) and
`testlist0{1,2,3}.txt` (`Class/file.avi`). `config.data.split` picks the split. Class names match
case-insensitively (the lists and the files disagree on `HandstandPushups`), videos are found by
file name.
"""

import os

from input_pipeline.prepare.layouts import common


def _split_number(config) -> int:
  split = int(getattr(getattr(config, 'data', None), 'split', 1) or 1) if config else 1
  if split not in (1, 2, 3):
    raise common.LayoutError(f'ucf101: config.data.split={split}: the official splits are 1, 2, 3')
  return split


def read(raw_dir: str, config=None) -> common.Layout:
  """Finds the lists and videos in `raw_dir` for config.data.split; returns the Layout."""
  split_no = _split_number(config)
  raw_dir = common.check_raw_dir(raw_dir)
  dirs = common.directories(raw_dir)
  class_path = common.require_file(raw_dir, ['classInd.txt'], 'ucfTrainTestlist/classInd.txt',
                                   'ucf101', dirs)
  numbered = []
  for line_no, line in common.read_lines(class_path):
    parts = line.split()
    if len(parts) != 2 or not parts[0].isdigit():
      raise common.AnnotationError(class_path, line_no,
                                   f'expected "<index> <ClassName>", got {line!r}')
    numbered.append((int(parts[0]), parts[1], line_no))
  numbered.sort()
  if [n for n, _, _ in numbered] != list(range(1, len(numbered) + 1)):
    raise common.AnnotationError(class_path, numbered[0][2] if numbered else 1,
                                 'class indices must be 1..N, each once')
  class_names = [name for _, name, _ in numbered]
  by_lower = {n.lower(): i for i, n in enumerate(class_names)}
  used, notes = [class_path], []
  search = [os.path.dirname(class_path)] + dirs
  videos = common.index_files(raw_dir, ('.avi',))
  splits = {}
  lists = (('train', f'trainlist0{split_no}.txt'), ('test', f'testlist0{split_no}.txt'))
  for split, list_name in lists:
    path = common.find_file(raw_dir, [list_name], search)
    if path is None:
      notes.append(f'{list_name} (no {split} split)')
      continue
    used.append(path)
    entries = []
    for line_no, line in common.read_lines(path):
      parts = line.split()
      rel = parts[0].replace('\\', '/')
      folder, _, file_name = rel.rpartition('/')
      label = by_lower.get(folder.lower())
      if label is None:
        raise common.unknown_class(path, line_no, folder, class_names)
      if len(parts) > 1:
        given = int(parts[1]) - 1 if parts[1].isdigit() else -2
        if given != label:
          raise common.AnnotationError(path, line_no, f'{rel} is in folder {folder!r} (class '
                                       f'{label + 1} in classInd.txt) but the line says {parts[1]}')
      video = videos.get(file_name.lower(), os.path.join(raw_dir, 'UCF-101', rel))
      entries.append(common.Entry(os.path.splitext(file_name)[0], label, common.VIDEO, video))
    splits[split] = entries
  if not splits:
    raise common.LayoutError(f'ucf101: found {class_path} but neither trainlist0{split_no}.txt nor '
                             f'testlist0{split_no}.txt under {raw_dir}')
  used.append(f'{raw_dir} ({len(videos)} .avi files found below it)')
  return common.Layout(class_names, splits, used, notes)
