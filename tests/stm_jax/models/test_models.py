"""`models.create`: config checking and defaults, the compute dtype."""

import jax
import jax.numpy as jnp
import numpy as np
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


def test_auto_dtype_is_bfloat16_on_accelerators_and_float32_on_cpu(monkeypatch):
  config = sthv1.get_config()
  assert config.model.dtype == 'auto'
  assert models.compute_dtype(config.model.dtype) == 'float32'  # This CPU.
  assert models.create(config).dtype == jnp.float32
  for backend in ('gpu', 'tpu'):
    monkeypatch.setattr(jax, 'default_backend', lambda b=backend: b)
    assert models.compute_dtype(config.model.dtype) == 'bfloat16'
    assert models.create(config).dtype == jnp.bfloat16
  config.model.dtype = 'float32'  # A named dtype is kept on every backend.
  assert models.compute_dtype(config.model.dtype) == 'float32'


def test_stm_r50_in_bfloat16_gives_float32_logits_to_a_few_percent():
  """What `auto` changes on an accelerator: STM-ResNet-50's logits in bfloat16 (8 bits of
  mantissa) stay within 1% of the largest float32 logit, with the same top-1 class."""
  config = sthv1.get_config()
  config.data.crop_size = 32  # The real network at a small input, to keep the test short.
  config.model.dtype = 'float32'
  module = models.create(config)
  variables = jax.jit(lambda: models.init_variables(module, config))()
  clips = jax.random.randint(jax.random.key(3), (2, 8, 32, 32, 3), 0, 256).astype(jnp.uint8)
  full = np.asarray(jax.jit(lambda v, x: module.apply(v, x))(variables, clips))
  config.model.dtype = 'bfloat16'
  half_module = models.create(config)
  half = np.asarray(jax.jit(lambda v, x: half_module.apply(v, x))(variables, clips))
  assert half.dtype == np.float32
  np.testing.assert_allclose(half, full, atol=0.01 * np.abs(full).max())
  np.testing.assert_array_equal(half.argmax(axis=1), full.argmax(axis=1))
