"""The csv annotation format 20BN used for Something-Something v1 and Jester.

`<prefix>-labels.csv` lists one class name a line (line order is the class index);
`<prefix>-train.csv` and `<prefix>-validation.csv` have lines `<id>;<class name>`;
`<prefix>-test.csv` has lines `<id>`. Frames are JPEG folders `<root>/<id>/00001.jpg ...`.
"""

import os

from input_pipeline.prepare.layouts import common

SPLITS = (('train', 'train'), ('validation', 'validation'), ('test', 'test'))
_PROBES = 20


def read(raw_dir: str, *, dataset: str, prefix: str, root_name: str, fps: float) -> common.Layout:
  """Reads a 20BN csv layout; see the module docstring. Raises LayoutError/AnnotationError."""
  raw_dir = common.check_raw_dir(raw_dir)
  dirs = common.directories(raw_dir)
  labels_path = common.require_file(raw_dir, [f'{prefix}-labels.csv'], 'the class list', dataset,
                                    dirs)
  class_names = [line for _, line in common.read_lines(labels_path)]
  try:
    index = common.class_index(class_names)
  except ValueError as e:
    raise common.LayoutError(f'{labels_path}: {e}') from None
  used, notes = [labels_path], []
  # Prefer split files beside the class list, then anywhere.
  search = [os.path.dirname(labels_path)] + dirs
  annotated = {}
  for split, suffix in SPLITS:
    name = f'{prefix}-{suffix}.csv'
    path = common.find_file(raw_dir, [name], search)
    if path is None:
      notes.append(f'{name} (no {split} split)')
      continue
    used.append(path)
    rows = []
    for line_no, line in common.read_lines(path):
      vid, _, label = line.partition(';')
      vid, label = vid.strip(), label.strip()
      if split == 'test':
        rows.append((vid, -1))
      elif label not in index:
        raise common.unknown_class(path, line_no, label, class_names)
      else:
        rows.append((vid, index[label]))
    annotated[split] = rows
  if not annotated:
    raise common.LayoutError(f'{dataset}: found {labels_path} but none of the split files '
                             f'{", ".join(f"{prefix}-{s}.csv" for _, s in SPLITS)} under {raw_dir}')
  probes = [vid for rows in annotated.values() for vid, _ in rows[:_PROBES]]
  root = common.find_root(raw_dir, probes, [root_name], dirs)
  if root is None:
    raise common.LayoutError(
        f'{dataset}: could not find the frame folders (official name {root_name}/<id>/00001.jpg) '
        f'under {raw_dir}: no folder holds any of the ids {", ".join(probes[:3])}, ...')
  used.append(root)
  splits = {
      split: [common.Entry(vid, label, common.FRAMES, os.path.join(root, vid))
              for vid, label in rows]
      for split, rows in annotated.items()
  }
  return common.Layout(class_names, splits, used, notes, fps)
