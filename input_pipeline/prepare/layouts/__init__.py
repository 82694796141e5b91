"""Readers of the native dataset layouts: `read(config)` picks one from the config.

Each reader finds the official annotation files and video or frame folders inside
`config.data.raw_dir` and returns a `common.Layout` (entries per split, class names, files used,
what was not found). `config.data.raw_format='tfrecord'` reads DMVR/scenic TFRecord files instead,
whatever the dataset. Whatever the reader, two videos of a split never share an id
(`common.check_unique_ids`).
"""

import importlib

from input_pipeline import files
from input_pipeline.prepare.layouts import common

DATASETS = ('sthv1', 'sthv2', 'jester', 'kinetics400', 'ucf101', 'hmdb51', 'custom')
FORMATS = ('native', 'tfrecord')


def read(config) -> common.Layout:
  """Reads the layout named by config.data.dataset / raw_format from config.data.raw_dir."""
  fmt = config.data.raw_format
  name = 'tfrecord' if fmt == 'tfrecord' else config.data.dataset
  if name not in DATASETS + ('tfrecord',):
    raise common.LayoutError(f'config.data.dataset={name!r} has no native layout reader; known: '
                             f'{", ".join(DATASETS)} (or use raw_format=tfrecord, or '
                             'dataset=custom)')
  if files.is_remote(config.data.raw_dir) and name != 'tfrecord':
    raise common.LayoutError(
        f'config.data.raw_dir={config.data.raw_dir!r}: a bucket is read as raw input only for '
        'raw_format=tfrecord; copy the download to a local disk (or mount the bucket) first')
  module = importlib.import_module(f'input_pipeline.prepare.layouts.{name}')
  layout = module.read(config.data.raw_dir, config)
  common.check_unique_ids(layout, name)
  return layout
