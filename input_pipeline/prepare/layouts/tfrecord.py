"""The `tfrecord` raw input: DMVR/scenic TFRecord files of `tf.train.SequenceExample` to convert.

The format (framing, CRCs, the SequenceExample keys, file naming) is `input_pipeline.tfrecord`'s;
this module only finds the files of a raw folder and lists their records as entries.

Files are found below raw_dir (names containing `tfrecord`, or sharded `-NNNNN-of-NNNNN`), and the
split is read from the name (`train`; `val`/`valid`/`validation`/`eval`; `test`). A class list
(`classes.txt`, `labels.txt`, `class_names.txt`: one name a line) fixes class names; otherwise they
come from the records' class names, else they are the indices.
"""

import os

from input_pipeline import files
from input_pipeline import tfrecord as tfrecord_format
from input_pipeline.prepare.layouts import common

_CLASS_FILES = ('classes.txt', 'labels.txt', 'class_names.txt')


def read(raw_dir: str, config=None) -> common.Layout:
  """Finds TFRecord files under `raw_dir` (or one file; local or in a bucket) and indexes their
  records; returns a Layout.

  Entries are (file, offset) references; ids and labels are filled in from the records when they
  are converted.
  """
  del config
  if raw_dir and files.resolve(raw_dir).is_file():
    paths = [os.fspath(files.resolve(raw_dir))]
    raw_dir = os.fspath(files.resolve(raw_dir).parent)
  else:
    raw_dir = common.check_raw_dir(raw_dir)
    paths = tfrecord_format.tfrecord_files(raw_dir)
  if not paths:
    raise common.LayoutError(f'tfrecord: found no TFRecord file under {raw_dir} (names containing '
                             '"tfrecord" or ending in -NNNNN-of-NNNNN)')
  by_split, notes = {}, []
  for path in paths:
    split = tfrecord_format.split_of(files.resolve(path).name)
    if split is None and len(paths) == 1:
      split = 'train'
    if split is None:
      notes.append(f'the split of {path} (name it train*/val*/test*); skipped')
      continue
    by_split.setdefault(split, []).append(path)
  if not by_split:
    raise common.LayoutError(f'tfrecord: no TFRecord file under {raw_dir} names its split '
                             '(train*, val*/validation*, test*)')
  splits, used = {}, []
  for split in tfrecord_format.SPLITS:
    if split not in by_split:
      notes.append(f'{split} TFRecord files (no {split} split)')
      continue
    entries = []
    for path in by_split[split]:
      base, offsets = files.resolve(path).name, tfrecord_format.index_file(path)
      entries += [common.Entry(f'{base}:{i}', None, common.TFRECORD, path, offset)
                  for i, offset in enumerate(offsets)]
      used.append(f'{path} ({len(offsets)} records, {split})')
    splits[split] = entries
  class_names, class_file = _class_names(raw_dir)
  if class_file:
    used.append(class_file)
  else:
    notes.append('classes.txt (class names from the records, else their indices)')
  return common.Layout(class_names, splits, used, notes)


def _class_names(raw_dir: str) -> tuple[list[str] | None, str | None]:
  """The class list found in `raw_dir` (below it when local, beside the shards in a bucket) and
  its path, or (None, None)."""
  if not files.is_remote(raw_dir):
    class_file = common.find_file(raw_dir, _CLASS_FILES, [raw_dir])
    return ([line for _, line in common.read_lines(class_file)] if class_file else None,
            class_file)
  folder = files.resolve(raw_dir)
  class_file = next((folder / n for n in _CLASS_FILES if (folder / n).is_file()), None)
  if class_file is None:
    return None, None
  with files.local_copy(class_file) as local:
    return [line for _, line in common.read_lines(local)], os.fspath(class_file)
