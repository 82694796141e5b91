"""Where a prepared dataset lives and how it is opened: names, directories, sources, class names.

`launch.py --mode=prepare` (input_pipeline/prepare/) writes a dataset to `dataset_dir(config)`;
training, evaluation and the tests read it back from there with `open_source`, a random-access
source (no TensorFlow) of the format `config.data.format` names:

  array_record  a TFDS dataset (`dataset_info.json`, ArrayRecord shards of video records) with
                each shard's frames as their own records beside it (`frames.ArrayRecordSource`);
  tfrecord      DMVR/scenic SequenceExample shards (`tfrecord.TFRecordSource`), either prepared
                here (`prepare` with data.output_format='tfrecord' writes them, with
                `classes.txt`, to `dataset_dir(config)`) or a user's own shards in
                `config.data.data_dir` itself (the split named in each file name; class names
                from a `classes.txt` beside them, if any).

Both may be local or in a bucket (`gs://...`).
"""

import os

from etils import epath
import tensorflow_datasets as tfds

from input_pipeline import errors
from input_pipeline import files
from input_pipeline import frames
from input_pipeline import tfrecord

VERSION = '1.0.0'
FORMATS = ('array_record', 'tfrecord')
# Written last by prepare: what says a dataset folder is complete, for each format.
SUMMARY_FILE = 'prepare_summary.json'
COMPLETE_FILE = {'array_record': 'dataset_info.json', 'tfrecord': SUMMARY_FILE}
# Class names of a TFRecord dataset, one a line (what the tfrecord raw layout reads too).
CLASSES_FILE = 'classes.txt'
# Where TFRecord shard indexes are cached when a shard's own folder cannot be written.
_INDEX_CACHE = os.path.join(os.path.expanduser('~'), '.cache', 'stm_jax', 'tfrecord_index')
# Datasets with official splits 1-3: one TFDS builder config each.
SPLIT_DATASETS = ('ucf101', 'hmdb51')


def dataset_name(config) -> str:
  """The TFDS name of the prepared dataset, e.g. 'stm_sthv1' or 'stm_ucf101/split2'."""
  name = f'stm_{config.data.dataset}'
  if config.data.dataset in SPLIT_DATASETS:
    name += f'/split{config.data.split}'
  return name


def data_dir(config) -> epath.Path:
  """The folder of prepared datasets: `config.data.data_dir`, else `$TFDS_DATA_DIR` (a local
  folder or a bucket, `gs://...`)."""
  folder = config.data.data_dir or os.environ.get('TFDS_DATA_DIR', '')
  if not folder:
    raise errors.ConfigError('config.data.data_dir is empty (and TFDS_DATA_DIR is not set): pass '
                             '--config.data.data_dir=<folder of prepared datasets>')
  return files.resolve(folder)


def dataset_dir(config) -> epath.Path:
  """The folder the prepared dataset lives in: <data_dir>/<dataset_name>/<version>."""
  return data_dir(config) / dataset_name(config) / VERSION


def _builder(config):
  """The TFDS builder of the prepared dataset, read from its files."""
  directory = dataset_dir(config)
  if not (directory / 'dataset_info.json').exists():
    raise errors.UserError(
        f'{directory}: no prepared {dataset_name(config)} dataset there; run launch.py '
        '--mode=prepare with the same --config.data.data_dir first (or fix data_dir)')
  return tfds.builder_from_directory(os.fspath(directory))


def _tfrecord_dir(config) -> epath.Path:
  """The folder of a TFRecord dataset's shards: the prepared dataset's folder when prepare wrote
  one there, else `data_dir` itself (shards the user already holds)."""
  prepared = dataset_dir(config)
  return prepared if (prepared / SUMMARY_FILE).exists() else data_dir(config)


def _tfrecord_source(config, split: str):
  folder = _tfrecord_dir(config)
  shards = tfrecord.find_shards(folder)
  if split not in shards:
    raise errors.UserError(f'{folder}: no TFRecord file of the {split!r} split there (it has '
                           f'{", ".join(shards)}; the split is a word of the file name)')
  return tfrecord.TFRecordSource(shards[split], index_dir=_INDEX_CACHE)


def open_source(config, split: str):
  """The random-access source of a prepared split ('train', 'validation', 'test').

  Its records are `{'fps', 'frames', 'id', 'label', 'num_frames'}`, `frames` a sequence of JPEG
  bytes that reads only the frames taken (`frames.Frames`). An ArrayRecord dataset prepared
  before frames were their own records loads too (its frames a list, read whole), with a warning
  saying how to prepare it again.
  """
  if config.data.format == 'tfrecord':
    return _tfrecord_source(config, split)
  builder = _builder(config)
  if split not in builder.info.splits:
    raise errors.UserError(f'{dataset_dir(config)}: the prepared dataset has no {split!r} split '
                           f'(it has {", ".join(sorted(builder.info.splits))})')
  videos = builder.as_data_source(split)
  if 'first_frame' not in builder.info.features:
    frames.warn_old_layout(dataset_dir(config))
    return videos
  info = builder.info.splits[split]
  return frames.ArrayRecordSource(videos, [os.fspath(p) for p in info.filepaths],
                                  info.shard_lengths)


def class_names(config) -> list[str] | None:
  """The class names stored with the prepared dataset, or None when it holds indices only."""
  if config.data.format == 'tfrecord':
    path = _tfrecord_dir(config) / CLASSES_FILE
    if not path.exists():
      return None
    return [line.strip() for line in path.read_text(encoding='utf-8').splitlines() if line.strip()]
  label = _builder(config).info.features['label']
  names = list(getattr(label, 'names', None) or [])
  return names or None
