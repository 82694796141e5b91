"""Something-Something v2: webm videos and JSON annotations (174 classes).

raw_dir holds `20bn-something-something-v2/<id>.webm` and, in any subfolder (the download puts them
in `labels/`), `labels.json` (`{class name: "index"}`), `train.json` and `validation.json` (lists of
`{"id", "label", "template", "placeholders"}`, the class being the template without `[` `]`) and
`test.json` (`[{"id"}]`). The `something-something-v2-*.json` names of the original 20BN release
are accepted too.
"""

import json
import os
import re

from input_pipeline.prepare.layouts import common

_PREFIX = 'something-something-v2-'
_PROBES = 20


def _load_json(path):
  try:
    with open(path, encoding='utf-8') as f:
      return json.load(f)
  except json.JSONDecodeError as e:
    raise common.AnnotationError(path, e.lineno, f'not valid JSON: {e.msg}') from None


def _line_of(path: str, vid: str) -> int | str:
  """Returns the line of `"id": "<vid>"` in a JSON file (for error messages), or '?'."""
  with open(path, encoding='utf-8') as f:
    text = f.read()
  m = re.search(r'"id"\s*:\s*"?%s"?\s*[,}]' % re.escape(vid), text)
  return text.count('\n', 0, m.start()) + 1 if m else '?'


def read(raw_dir: str, config=None) -> common.Layout:
  """Finds the annotations and videos in `raw_dir`; returns the Layout (see common)."""
  del config
  raw_dir = common.check_raw_dir(raw_dir)
  dirs = common.directories(raw_dir)
  labels_path = common.require_file(raw_dir, ['labels.json', _PREFIX + 'labels.json'],
                                    'the class list', 'sthv2', dirs)
  mapping = _load_json(labels_path)
  if not isinstance(mapping, dict):
    raise common.AnnotationError(labels_path, 1, 'expected a JSON object {class name: "index"}')
  class_names = [None] * len(mapping)
  for name, idx in mapping.items():
    i = int(idx)
    if not 0 <= i < len(mapping) or class_names[i] is not None:
      raise common.AnnotationError(labels_path, _line_of_name(labels_path, name),
                                   f'class {name!r} has index {idx}: indices must be 0..'
                                   f'{len(mapping) - 1}, each once')
    class_names[i] = name
  used, notes = [labels_path], []
  search = [os.path.dirname(labels_path)] + dirs
  annotated = {}
  for split in ('train', 'validation', 'test'):
    path = common.find_file(raw_dir, [f'{split}.json', f'{_PREFIX}{split}.json'], search)
    if path is None:
      notes.append(f'{split}.json (no {split} split)')
      continue
    used.append(path)
    items = _load_json(path)
    rows = []
    for i, item in enumerate(items):
      if not isinstance(item, dict) or 'id' not in item:
        raise common.AnnotationError(path, f'entry {i}', 'expected an object with an "id"')
      vid = str(item['id'])
      if split == 'test':
        rows.append((vid, -1))
        continue
      if 'template' not in item:
        raise common.AnnotationError(path, _line_of(path, vid), f'video {vid} has no "template"')
      name = item['template'].replace('[', '').replace(']', '')
      if name not in mapping:
        raise common.unknown_class(path, _line_of(path, vid), name, class_names)
      rows.append((vid, int(mapping[name])))
    annotated[split] = rows
  if not annotated:
    raise common.LayoutError(f'sthv2: found {labels_path} but no train.json, validation.json or '
                             f'test.json under {raw_dir}')
  probes = [f'{vid}.webm' for rows in annotated.values() for vid, _ in rows[:_PROBES]]
  root = common.find_root(raw_dir, probes, ['20bn-something-something-v2'], dirs)
  if root is None:
    raise common.LayoutError(
        f'sthv2: could not find the video folder (official name 20bn-something-something-v2/<id>'
        f'.webm) under {raw_dir}: no folder holds any of {", ".join(probes[:3])}, ...')
  used.append(root)
  splits = {
      split: [common.Entry(vid, label, common.VIDEO, os.path.join(root, f'{vid}.webm'))
              for vid, label in rows]
      for split, rows in annotated.items()
  }
  return common.Layout(class_names, splits, used, notes)


def _line_of_name(path: str, name: str) -> int | str:
  with open(path, encoding='utf-8') as f:
    text = f.read()
  pos = text.find(json.dumps(name))
  return text.count('\n', 0, pos) + 1 if pos >= 0 else '?'
