"""Where a prepared dataset lives and how it is opened: names, directories, sources, class names.

`launch.py --mode=prepare` (input_pipeline/prepare/) writes a dataset to `dataset_dir(config)`;
training, evaluation and the tests read it back from there with `open_source` (a TFDS ArrayRecord
data source, random access, no TensorFlow).
"""

import os

import tensorflow_datasets as tfds

from input_pipeline import errors

VERSION = '1.0.0'
# Datasets with official splits 1-3: one TFDS builder config each.
SPLIT_DATASETS = ('ucf101', 'hmdb51')


def dataset_name(config) -> str:
  """The TFDS name of the prepared dataset, e.g. 'stm_sthv1' or 'stm_ucf101/split2'."""
  name = f'stm_{config.data.dataset}'
  if config.data.dataset in SPLIT_DATASETS:
    name += f'/split{config.data.split}'
  return name


def dataset_dir(config) -> str:
  """The folder the prepared dataset lives in: <data_dir>/<dataset_name>/<version>."""
  if not config.data.data_dir:
    raise errors.ConfigError('config.data.data_dir is empty: pass '
                             '--config.data.data_dir=<folder of prepared datasets>')
  return os.path.join(os.path.abspath(config.data.data_dir), dataset_name(config), VERSION)


def _builder(config):
  """The TFDS builder of the prepared dataset, read from its files."""
  directory = dataset_dir(config)
  if not os.path.isfile(os.path.join(directory, 'dataset_info.json')):
    raise errors.UserError(
        f'{directory}: no prepared {dataset_name(config)} dataset there; run launch.py '
        '--mode=prepare with the same --config.data.data_dir first (or fix data_dir)')
  return tfds.builder_from_directory(directory)


def open_source(config, split: str):
  """The random-access source of a prepared split ('train', 'validation', 'test')."""
  builder = _builder(config)
  if split not in builder.info.splits:
    raise errors.UserError(f'{dataset_dir(config)}: the prepared dataset has no {split!r} split '
                           f'(it has {", ".join(sorted(builder.info.splits))})')
  return builder.as_data_source(split)


def class_names(config) -> list[str] | None:
  """The class names stored with the prepared dataset, or None when it holds indices only."""
  label = _builder(config).info.features['label']
  names = list(getattr(label, 'names', None) or [])
  return names or None
