"""The STM-ResNet family: every variant runs, trains, and behaves as its design says."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import tiny
from input_pipeline import errors
from stm_jax import models
from stm_jax.models import resnet

VARIANTS = [('none', 'channelwise'), ('tsm', 'channelwise'), ('cstm', 'channelwise'),
            ('cstm', 'full'), ('cmm', 'channelwise'), ('stm', 'channelwise'),
            ('stm', 'full'), ('stm_concat', 'channelwise')]


def _config(**model_fields):
  config = tiny.get_config()
  for key, value in model_fields.items():
    setattr(config.model, key, value)
  return config


def _clips(config, batch=2, seed=0):
  size, frames = config.data.crop_size, config.data.num_frames
  return jax.random.randint(jax.random.key(seed), (batch, frames, size, size, 3), 0, 256,
                            jnp.int32).astype(jnp.uint8)


def _init(module, clips):
  return module.init(jax.random.key(1), clips)


@pytest.mark.parametrize('temporal_module,temporal_conv', VARIANTS)
def test_every_variant_gives_logits_and_trains_batch_stats(temporal_module, temporal_conv):
  config = _config(temporal_module=temporal_module, temporal_conv=temporal_conv,
                   dropout_rate=0.5)
  module = models.create(config)
  clips = _clips(config)
  variables = _init(module, clips)
  logits = module.apply(variables, clips, train=False)
  assert logits.shape == (2, config.data.num_classes) and logits.dtype == jnp.float32
  assert np.all(np.isfinite(logits))
  train_logits, updates = module.apply(variables, clips, train=True,
                                       rngs={'dropout': jax.random.key(2)},
                                       mutable=['batch_stats'])
  assert train_logits.shape == logits.shape
  before = variables['batch_stats']['layer1_0']['bn1']['mean']
  after = updates['batch_stats']['layer1_0']['bn1']['mean']
  assert not np.allclose(before, after)


def _temporal_blocks(variables):
  return sorted(name for name, block in variables['params'].items()
                if name.startswith('layer') and ('shift' in block or 'mb' in block))


def test_stages_and_first_block_only_place_the_modules():
  config = _config(blocks=(2, 2, 1, 1), stages=(2, 5), first_block_only=True)
  variables = _init(models.create(config), _clips(config))
  assert _temporal_blocks(variables) == ['layer1_0', 'layer4_0']
  config.model.first_block_only = False
  variables = _init(models.create(config), _clips(config))
  assert _temporal_blocks(variables) == ['layer1_0', 'layer1_1', 'layer4_0']


def test_module_parameters_per_variant():
  names = {}
  for temporal_module in ('none', 'tsm', 'cstm', 'cmm', 'stm', 'stm_concat'):
    config = _config(temporal_module=temporal_module)
    block = _init(models.create(config), _clips(config))['params']['layer2_0']
    names[temporal_module] = {k for k in block if k in ('shift', 'mb', 'fuse')}
  assert names == {'none': set(), 'tsm': set(), 'cstm': {'shift'}, 'cmm': {'mb'},
                   'stm': {'shift', 'mb'}, 'stm_concat': {'shift', 'mb', 'fuse'}}


def test_reversing_time_leaves_tsn_unchanged_and_changes_stm():
  for temporal_module, should_change in (('none', False), ('stm', True)):
    config = _config(temporal_module=temporal_module)
    module = models.create(config)
    clips = _clips(config)
    variables = _init(module, clips)
    forward = module.apply(variables, clips)
    backward = module.apply(variables, clips[:, ::-1])
    changed = not np.allclose(forward, backward, rtol=1e-5, atol=1e-5)
    assert changed == should_change, temporal_module


def test_uint8_and_float_inputs_agree():
  config = _config()
  module = models.create(config)
  clips = _clips(config)
  variables = _init(module, clips)
  np.testing.assert_allclose(module.apply(variables, clips),
                             module.apply(variables, clips.astype(jnp.float32)), rtol=1e-6)


def test_jit_matches_eager_and_bfloat16_runs_close_to_float32():
  config = _config()
  module = models.create(config)
  clips = _clips(config)
  variables = _init(module, clips)
  eager = module.apply(variables, clips)
  jitted = jax.jit(lambda v, x: module.apply(v, x))(variables, clips)
  np.testing.assert_allclose(eager, jitted, rtol=1e-5, atol=1e-5)

  config.model.dtype = 'bfloat16'
  bf16 = models.create(config)
  assert jax.eval_shape(bf16.init, jax.random.key(1), clips)['params']['fc']['kernel'].dtype == (
      jnp.float32)
  logits = jax.jit(lambda v, x: bf16.apply(v, x))(variables, clips)
  assert logits.dtype == jnp.float32
  # bfloat16 keeps 8 bits of mantissa: the logits follow float32's to a few percent.
  scale = np.abs(eager).max()
  np.testing.assert_allclose(logits, eager, atol=0.05 * scale)


def test_shift_form_gives_the_grouped_forms_logits_and_gradients():
  """The shift form of the channel-wise convs is the same function, gradients included."""
  config = _config(temporal_module='stm', channelwise_impl='grouped')
  reference = models.create(config)
  clips = _clips(config)
  variables = _init(reference, clips)
  config.model.channelwise_impl = 'shift'
  fast = models.create(config)
  labels = jnp.array([1, 3])

  def loss(module, params):
    logits, _ = module.apply({'params': params, 'batch_stats': variables['batch_stats']}, clips,
                             train=True, mutable=['batch_stats'])
    return -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(2), labels])

  np.testing.assert_allclose(reference.apply(variables, clips), fast.apply(variables, clips),
                             rtol=1e-4, atol=1e-5)
  grads_reference = jax.jit(jax.grad(lambda p: loss(reference, p)))(variables['params'])
  grads_fast = jax.jit(jax.grad(lambda p: loss(fast, p)))(variables['params'])
  jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5),
                         grads_reference, grads_fast)


def test_wrong_frame_count_is_an_error_naming_the_field():
  config = _config()
  module = models.create(config)
  clips = _clips(config)
  variables = _init(module, clips)
  with pytest.raises(ValueError, match='num_frames'):
    module.apply(variables, clips[:, :2])


def test_odd_feature_map_sizes_work():
  """At 48x48 stage 5 meets a 3x3 map: CMM's pooling must match the strided 3x3 conv."""
  config = _config(temporal_module='stm')
  config.data.crop_size = 48
  module = models.create(config)
  clips = _clips(config, batch=1)
  assert module.apply(_init(module, clips), clips).shape == (1, config.data.num_classes)


def test_tsm_placement_follows_tsms_rule_at_every_depth():
  """TSM's blockres rule: every block, but every other block of every stage (index % 2 == 0)
  when conv4_x has 23 or more blocks; `every_block` shifts all of them; other modules ignore it."""
  r101 = (3, 4, 23, 3)
  every_other = {(s, i) for s, n in enumerate(r101) for i in range(0, n, 2)}
  assert resnet.module_blocks(r101, 'tsm') == every_other
  assert len(every_other) == 18
  assert len(resnet.module_blocks(r101, 'tsm', tsm_placement='every_block')) == 33
  assert len(resnet.module_blocks((3, 4, 22, 3), 'tsm')) == 32  # Below the threshold: all.
  assert len(resnet.module_blocks((3, 4, 6, 3), 'tsm')) == 16
  assert len(resnet.module_blocks(r101, 'stm')) == 33
  assert resnet.module_blocks(r101, 'none') == frozenset()
  assert resnet.module_blocks(r101, 'tsm', stages=(5,)) == {(3, 0), (3, 2)}
  assert resnet.module_blocks(r101, 'tsm', stages=(4,), first_block_only=True) == {(2, 0)}


def test_an_unknown_tsm_placement_is_an_error_naming_the_field():
  config = _config(tsm_placement='every_other')
  with pytest.raises(errors.ConfigError, match=r"config\.model\.tsm_placement='every_other'"):
    models.create(config)
