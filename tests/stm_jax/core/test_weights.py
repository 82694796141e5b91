"""Converted weights in a bucket (the GCS emulator): written by `save_converted` (what
`--mode=convert --output=gs://...` does), loaded back by `weights.load` (what
`--config.init_checkpoint=gs://...` and `--checkpoint=gs://...` do), and never overwritten."""

import jax
import numpy as np
import pytest

from configs import tiny
from input_pipeline import errors
from stm_jax import models
from stm_jax.core import weights


def test_converted_weights_round_trip_through_a_bucket(gcs_bucket):
  config = tiny.get_config()
  config.data.num_classes = 3
  variables = models.init_variables(models.create(config), config)
  path = f'{gcs_bucket}/weights/tiny'
  weights.save_converted(variables, path)
  assert not weights.is_run_directory(path)
  loaded = weights.load(path, config)
  assert loaded.description == f'converted weights in {path}'
  for (key, want), (_, got) in zip(jax.tree_util.tree_leaves_with_path(variables),
                                   jax.tree_util.tree_leaves_with_path(loaded.variables)):
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want), err_msg=str(key))
  with pytest.raises(errors.ExistsError, match=f'{path}: already exists'):
    weights.save_converted(variables, path)
