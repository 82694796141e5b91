"""The streaming step: a clip streamed frame by frame gives the causal clip model's per-frame
logits and clip score, for every temporal module; one compile for a whole stream; the offline
models are refused.

"Equal" is within 1e-5 of the logits' scale (max(1, largest |logit|)): the stream and the clip
model run the same float32 operations on batches of different sizes (B frames against B*T), which
XLA may sum in a different order, so they can differ in the last bits (measured: up to 2e-5 on
logits of 45, 5e-7 relative).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import tiny
from input_pipeline import errors
from stm_jax import models
from stm_jax.models import streaming

CROP = 32


def _config(module, temporal_conv='channelwise', impl='shift'):
  config = tiny.get_config()
  config.data.num_classes = 5
  config.data.crop_size = CROP
  config.model.temporal_module = module
  config.model.temporal_conv = temporal_conv
  config.model.channelwise_impl = impl
  config.model.causal = True
  return config


def _perturbed_variables(config):
  """Fresh variables with every parameter and BN statistic moved off its init (CSTM starts as a
  plain shift and BN as the identity: a wrong tap or a missing cache would hide behind them)."""
  variables = jax.jit(lambda: models.init_variables(models.create(config), config))()
  leaves, tree = jax.tree.flatten(variables)
  keys = jax.random.split(jax.random.key(3), len(leaves))
  def move(key, x):
    noise = jax.random.normal(key, x.shape)
    if x.ndim == 1:  # BN scales, biases and statistics: variances stay positive.
      return x * (1 + 0.1 * jnp.abs(noise)) + 0.05 * noise
    return x + 0.3 * jnp.maximum(jnp.std(x), 0.05) * noise
  return jax.tree.unflatten(tree, [move(k, x) for k, x in zip(keys, leaves)])


def _assert_close(actual, expected, what):
  scale = max(1.0, float(np.abs(expected).max()))
  np.testing.assert_allclose(actual, expected, atol=1e-5 * scale, rtol=0, err_msg=what)


@pytest.mark.parametrize('module,temporal_conv,impl', [
    ('none', 'channelwise', 'shift'), ('tsm', 'channelwise', 'shift'),
    ('cstm', 'channelwise', 'shift'), ('cmm', 'channelwise', 'shift'),
    ('stm', 'channelwise', 'shift'), ('stm', 'full', 'shift')])
def test_streaming_a_clip_gives_the_causal_models_outputs_for_every_frame(
    module, temporal_conv, impl):
  config = _config(module, temporal_conv, impl)
  t = config.data.num_frames
  variables = _perturbed_variables(config)
  clips = jax.random.randint(jax.random.key(0), (2, t, CROP, CROP, 3), 0, 256).astype(jnp.uint8)
  clip_model = models.create(config)
  clip_logits, state = jax.jit(
      lambda v, c: clip_model.apply(v, c, train=False, mutable=['intermediates']))(
          variables, clips)
  frame_logits = state['intermediates']['frame_logits'][0]  # (2, T, classes)
  assert float(jnp.abs(frame_logits[:, 1:] - frame_logits[:, :1]).max()) > 1e-3  # Frames differ.

  step = streaming.create_step(config)
  run = jax.jit(step)
  stream = step.initial_state(variables, batch=2, crop_size=CROP)
  for i in range(t):
    logits, running, stream = run(variables, stream, clips[:, i])
    _assert_close(logits, frame_logits[:, i], f'{module} frame {i}')
    _assert_close(running, frame_logits[:, :i + 1].mean(axis=1), f'{module} score {i}')
  _assert_close(running, clip_logits, f'{module} clip')  # The whole clip's score.
  np.testing.assert_array_equal(stream['seen'], [t, t])


def test_the_state_carries_the_past_and_the_score_covers_the_last_t_frames():
  config = _config('stm')
  t = config.data.num_frames
  variables = _perturbed_variables(config)
  frames = jax.random.randint(jax.random.key(1), (2 * t, 1, CROP, CROP, 3), 0,
                              256).astype(jnp.uint8)
  step = streaming.create_step(config)
  traces = []

  def counted(*args):
    traces.append(1)
    return step(*args)

  run = jax.jit(counted)
  stream = step.initial_state(variables, batch=1, crop_size=CROP)
  outputs = []
  for frame in frames:
    outputs.append(run(variables, stream, frame))
    stream = outputs[-1][2]
  assert len(traces) == 1  # Fixed shapes: one compile for the whole stream.
  last = np.stack([np.asarray(o[0]) for o in outputs[-t:]])
  _assert_close(outputs[-1][1], last.mean(axis=0), 'running score')
  # Frame t streamed after t frames differs from the same frame at the start of a stream (the
  # state is the past, not a restart), and equals the causal model on the 2T-frame clip.
  fresh, _, _ = run(variables, step.initial_state(variables, 1, CROP), frames[t])
  assert float(jnp.abs(outputs[t][0] - fresh).max()) > 1e-3
  long_config = _config('stm')
  long_config.data.num_frames = 2 * t
  long_model = models.create(long_config)
  _, state = long_model.apply(variables, frames[:, 0][None], train=False,
                              mutable=['intermediates'])
  _assert_close(outputs[t][0], state['intermediates']['frame_logits'][0][:, t], 'frame T')


def test_only_the_causal_model_streams():
  config = _config('stm')
  config.model.causal = False
  with pytest.raises(errors.ConfigError, match='model.causal'):
    streaming.create(config)
