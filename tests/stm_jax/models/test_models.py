"""`models.create`: config checking and defaults."""

import pytest

from configs import sthv1
from configs import tiny
from stm_jax import models


@pytest.mark.parametrize('field,value', [
    ('model.temporal_module', 'tam'),
    ('model.temporal_conv', 'depthwise'),
    ('model.stages', (1, 2)),
    ('model.depth', 34),
    ('model.blocks', (1, 1, 1)),
    ('model.dtype', 'float16'),
    ('model.channelwise_impl', 'cudnn'),
    ('model.dropout_rate', 1.0),
    ('model.cmm_reduction', 32),
    ('model.tsm_fold_div', 32),
    ('data.num_frames', 0),
    ('data.num_classes', 0),
])
def test_bad_config_values_are_errors_naming_the_field(field, value):
  config = tiny.get_config()
  config.model.blocks = ()  # Blocks from depth, so that depth is read.
  group, name = field.split('.')
  setattr(config[group], name, value)
  if field == 'model.tsm_fold_div':
    config.model.temporal_module = 'tsm'  # Width 16 // 32: layer1_0 would shift nothing.
  with pytest.raises(ValueError, match=f'config.{field}='):
    models.create(config)


def test_create_reads_the_config():
  config = sthv1.get_config()
  module = models.create(config)
  assert module.blocks == (3, 4, 6, 3) and module.num_classes == 174
  assert module.temporal_module == 'stm' and module.num_frames == 8
  assert module.channelwise_impl == models.DEFAULT_CHANNELWISE_IMPL['cpu']
  config.model.depth = 101
  assert models.create(config).blocks == (3, 4, 23, 3)
