"""Where a prepared dataset is looked for: data_dir, else TFDS_DATA_DIR; local or a bucket."""

import os

import pytest

from configs import sthv1
from input_pipeline import datasets
from input_pipeline import errors


def test_an_empty_data_dir_falls_back_to_tfds_data_dir(monkeypatch):
  config = sthv1.get_config()
  config.data.data_dir = ''
  monkeypatch.setenv('TFDS_DATA_DIR', 'gs://bucket/tfds')
  assert os.fspath(datasets.dataset_dir(config)) == 'gs://bucket/tfds/stm_sthv1/1.0.0'
  config.data.data_dir = 'relative/tfds'  # A given data_dir wins, made absolute.
  assert os.fspath(datasets.dataset_dir(config)) == os.path.join(
      os.getcwd(), 'relative', 'tfds', 'stm_sthv1', '1.0.0')
  config.data.data_dir = ''
  monkeypatch.delenv('TFDS_DATA_DIR')
  with pytest.raises(errors.ConfigError, match='TFDS_DATA_DIR is not set'):
    datasets.dataset_dir(config)
