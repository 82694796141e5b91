"""The online (causal) variants: no frame's features depend on a later frame, and the offline
ones do (so the check can fail); both forms of the channel-wise convs agree."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import tiny
from stm_jax import models
from stm_jax.models import temporal


def _config(module, causal, impl='shift'):
  config = tiny.get_config()
  config.data.num_classes = 5
  config.data.crop_size = 32
  config.model.temporal_module = module
  config.model.causal = causal
  config.model.channelwise_impl = impl
  return config


def _block_inputs(config):
  """A jitted function of (variables, clips): every block's input, as clips `(N, T, ...)`, by
  block name (eval mode)."""
  module = models.create(config)
  t = config.data.num_frames

  def run(variables, clips):
    _, state = module.apply(variables, clips, train=False, mutable=['intermediates'])
    return {name: temporal.to_clips(v['block_input'][0], t)
            for name, v in state['intermediates'].items() if 'block_input' in v}
  return jax.jit(run)


# STM holds both CSTM and CMM: a look-ahead in either would show there.
@pytest.mark.parametrize('module', ['tsm', 'stm'])
def test_a_later_frame_never_reaches_an_earlier_one_in_the_causal_model(module):
  t = tiny.get_config().data.num_frames
  clips = jax.random.randint(jax.random.key(0), (2, t, 32, 32, 3), 0, 256).astype(jnp.uint8)
  changed = clips.at[:, -1].set(255 - clips[:, -1])  # Only the last frame differs.
  for causal in (True, False):
    config = _config(module, causal)
    variables = jax.jit(lambda: models.init_variables(models.create(config), config))()
    block_inputs = _block_inputs(config)
    before, after = block_inputs(variables, clips), block_inputs(variables, changed)
    leaked = max(float(jnp.abs(before[k][:, :-1] - after[k][:, :-1]).max()) for k in before)
    if causal:
      assert leaked == 0.0, (module, causal, leaked)
    else:  # The offline operators look ahead: earlier frames change.
      assert leaked > 0.0, (module, causal)


def test_causal_cstm_has_two_taps_and_both_forms_agree():
  config = _config('stm', True, 'grouped')
  clips = jax.random.randint(jax.random.key(1), (1, config.data.num_frames, 32, 32, 3), 0,
                             256).astype(jnp.uint8)
  grouped = models.create(config)
  variables = jax.jit(lambda: models.init_variables(grouped, config))()
  assert variables['params']['layer1_0']['shift']['kernel'].shape == (2, 16)
  config.model.channelwise_impl = 'shift'
  shifted = models.create(config)
  np.testing.assert_allclose(jax.jit(shifted.apply)(variables, clips),
                             jax.jit(grouped.apply)(variables, clips), rtol=1e-5, atol=1e-5)
