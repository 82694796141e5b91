"""Kinetics-400: mp4 clips named by YouTube id and time span, csv annotations (400 classes).

raw_dir holds the annotation csvs (`train.csv`, `validate.csv`/`val.csv`, `test.csv`, or the same
with a `kinetics-400_`/`kinetics_400_`/`kinetics400_`/`kinetics_` prefix) with the header
`label,youtube_id,time_start,time_end,split[,is_cc]` (the test csv may lack `label`), and the clips
`<youtube_id>_<start:06d>_<end:06d>.mp4` anywhere below it (flat, or `<split>/<class>/`, as the
mirrors differ; clips named `<youtube_id>.<ext>` are found too). Class indices follow the sorted
class names of the train csv (the usual Kinetics label map).
"""

import csv
import os

from input_pipeline.prepare.layouts import common

_PREFIXES = ('', 'kinetics-400_', 'kinetics_400_', 'kinetics400_', 'kinetics_', 'k400_')
_NAMES = {
    'train': ('train',),
    'validation': ('validate', 'val', 'validation'),
    'test': ('test',),
}
_COLUMNS = ('label', 'youtube_id', 'time_start', 'time_end', 'split', 'is_cc')


def _candidates(split):
  return [f'{p}{n}.csv' for n in _NAMES[split] for p in _PREFIXES]


def _rows(path):
  """Yields (line number, dict) for the data rows of a Kinetics csv, with or without header."""
  with open(path, newline='', encoding='utf-8-sig') as f:
    reader = csv.reader(f)
    header = None
    for line_no, row in enumerate(reader, 1):
      if not row or not any(c.strip() for c in row):
        continue
      if header is None:
        if 'youtube_id' in [c.strip() for c in row]:
          header = [c.strip() for c in row]
          continue
        header = list(_COLUMNS)
      yield line_no, dict(zip(header, (c.strip() for c in row)))


def _clip_name(path, line_no, row):
  try:
    start, end = int(float(row['time_start'])), int(float(row['time_end']))
    return f'{row["youtube_id"]}_{start:06d}_{end:06d}'
  except (KeyError, ValueError) as e:
    raise common.AnnotationError(path, line_no,
                                 f'expected youtube_id,time_start,time_end: {e}') from None


def read(raw_dir: str, config=None) -> common.Layout:
  """Finds the annotation csvs and clips in `raw_dir`; returns the Layout (see common)."""
  del config
  raw_dir = common.check_raw_dir(raw_dir)
  dirs = common.directories(raw_dir)
  used, notes, files = [], [], {}
  for split in _NAMES:
    path = common.find_file(raw_dir, _candidates(split), dirs)
    if path is None:
      notes.append(f'{" / ".join(_candidates(split)[:3])} ... (no {split} split)')
    else:
      files[split] = path
      used.append(path)
  if 'train' not in files and 'validation' not in files:
    raise common.LayoutError(f'kinetics400: could not find the train or validation csv under '
                             f'{raw_dir} (searched for {", ".join(_candidates("train")[:3])}, ...)')
  rows = {split: list(_rows(path)) for split, path in files.items()}
  # Class list: sorted names of the train csv (validation if there is no train csv).
  source = 'train' if 'train' in rows else 'validation'
  class_names = sorted({r['label'] for _, r in rows[source] if r.get('label')})
  if not class_names:
    raise common.AnnotationError(files[source], 1, 'no "label" column with class names')
  index = {n: i for i, n in enumerate(class_names)}
  videos = common.index_files(raw_dir, common.VIDEO_EXTENSIONS)
  by_stem = common.stem_index(videos)
  used.append(f'{raw_dir} ({len(videos)} video files found below it)')
  splits = {}
  for split, split_rows in rows.items():
    entries = []
    for line_no, row in split_rows:
      name = _clip_name(files[split], line_no, row)
      label = row.get('label', '')
      if not label:
        label_idx = -1
      elif label not in index:
        raise common.unknown_class(files[split], line_no, label, class_names)
      else:
        label_idx = index[label]
      path = by_stem.get(name.lower()) or by_stem.get(row['youtube_id'].lower())
      entries.append(common.Entry(name, label_idx, common.VIDEO,
                                  path or os.path.join(raw_dir, name + '.mp4')))
    splits[split] = entries
  return common.Layout(class_names, splits, used, notes)
