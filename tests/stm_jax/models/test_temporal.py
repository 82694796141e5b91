"""The temporal operators: conventions, CSTM init, CMM's motion, and both conv implementations."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from stm_jax.models import temporal

T = 4


def _frames(shape=(2 * T, 5, 6, 8), seed=0):
  return jax.random.normal(jax.random.key(seed), shape, jnp.float32)


def test_cstm_init_is_a_quarter_shift_each_way():
  x = _frames()
  conv = temporal.ChannelwiseTemporalConv(num_frames=T)
  variables = conv.init(jax.random.key(0), x)
  np.testing.assert_array_equal(
      variables['params']['kernel'][:, [0, 1, 2, 3, 4, 5, 6, 7]],
      np.array([[1, 1, 0, 0, 0, 0, 0, 0], [0, 0, 1, 1, 1, 1, 0, 0], [0, 0, 0, 0, 0, 0, 1, 1]]))
  out = np.asarray(conv.apply(variables, x)).reshape(2, T, 5, 6, 8)
  clips = np.asarray(x).reshape(2, T, 5, 6, 8)
  # First quarter: u_{t-1} (zero at t=0); last quarter: u_{t+1} (zero at the end); middle: u_t.
  np.testing.assert_allclose(out[:, 1:, ..., :2], clips[:, :-1, ..., :2])
  np.testing.assert_allclose(out[:, 0, ..., :2], 0)
  np.testing.assert_allclose(out[:, :-1, ..., 6:], clips[:, 1:, ..., 6:])
  np.testing.assert_allclose(out[:, -1, ..., 6:], 0)
  np.testing.assert_allclose(out[..., 2:6], clips[..., 2:6])


def test_full_temporal_conv_starts_as_the_same_shift():
  x = _frames()
  channelwise = temporal.ChannelwiseTemporalConv(num_frames=T)
  full = temporal.FullTemporalConv(num_frames=T)
  a = channelwise.apply(channelwise.init(jax.random.key(0), x), x)
  b = full.apply(full.init(jax.random.key(0), x), x)
  np.testing.assert_allclose(a, b, atol=1e-6)


def test_temporal_kernel_is_cross_correlation():
  """v_t = w0 u_{t-1} + w1 u_t + w2 u_{t+1}, checked against a direct loop, both impls."""
  x = _frames(seed=1)
  kernel = jax.random.normal(jax.random.key(2), (3, 8))
  clips = np.asarray(x).reshape(2, T, 5, 6, 8)
  padded = np.pad(clips, ((0, 0), (1, 1), (0, 0), (0, 0), (0, 0)))
  expected = sum(padded[:, i:i + T] * np.asarray(kernel[i]) for i in range(3))
  for impl in temporal.IMPLS:
    out = temporal.ChannelwiseTemporalConv(num_frames=T, impl=impl).apply(
        {'params': {'kernel': kernel}}, x)
    np.testing.assert_allclose(np.asarray(out).reshape(expected.shape), expected, atol=1e-5)


@pytest.mark.parametrize('module', [
    temporal.ChannelwiseTemporalConv(num_frames=T, impl='shift'),
    temporal.DepthwiseConv3x3(impl='shift'),
], ids=['channelwise_temporal', 'depthwise3x3'])
def test_shift_and_grouped_forms_agree_in_value_and_gradient(module):
  x = _frames(seed=3)
  params = module.init(jax.random.key(4), x)['params']
  params = jax.tree_util.tree_map(lambda p: jax.random.normal(jax.random.key(5), p.shape), params)
  grouped = module.clone(impl='grouped')
  cotangent = jax.random.normal(jax.random.key(6), x.shape)

  def loss(m, p, inputs):
    return jnp.sum(m.apply({'params': p}, inputs) * cotangent)

  np.testing.assert_allclose(module.apply({'params': params}, x),
                             grouped.apply({'params': params}, x), rtol=1e-5, atol=1e-5)
  for argnum in (1, 2):
    g_shift = jax.grad(loss, argnums=argnum)(module, params, x)
    g_grouped = jax.grad(loss, argnums=argnum)(grouped, params, x)
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4),
                           g_shift, g_grouped)


def test_depthwise_conv_matches_a_direct_loop():
  x = _frames(seed=7)
  kernel = np.asarray(jax.random.normal(jax.random.key(8), (3, 3, 8)))
  padded = np.pad(np.asarray(x), ((0, 0), (1, 1), (1, 1), (0, 0)))
  expected = sum(padded[:, i:i + 5, j:j + 6] * kernel[i, j] for i in range(3) for j in range(3))
  out = temporal.DepthwiseConv3x3(impl='shift').apply({'params': {'kernel': kernel}}, x)
  np.testing.assert_allclose(out, expected, atol=1e-5)


def _identity_cmm_variables(channels, depthwise_centre):
  """CMM weights that make r = x and d = depthwise_centre * r, so m is readable."""
  eye = np.eye(channels, dtype=np.float32)[None, None]
  depthwise = np.zeros((3, 3, channels), np.float32)
  depthwise[1, 1] = depthwise_centre
  return {
      'params': {
          'stage_conv': {'kernel': eye},
          'stage_bn': {'scale': np.ones(channels, np.float32),
                       'bias': np.zeros(channels, np.float32)},
          'shift': {'kernel': depthwise},
          'conv1x1': {'kernel': eye},
      },
      'batch_stats': {'stage_bn': {'mean': np.zeros(channels, np.float32),
                                   'var': np.full(channels, 1 - 1e-5, np.float32)}},
  }


@pytest.mark.parametrize('impl', temporal.IMPLS)
def test_cmm_motion_is_next_depthwise_minus_current_and_zero_at_the_end(impl):
  x = _frames(seed=9)
  cmm = temporal.ChannelwiseMotion(planes=8, reduced=8, num_frames=T, impl=impl)
  # Depthwise centre 2: d = 2r, so m_t = 2 x_{t+1} - x_t tells d(t+1) - r(t) from r(t+1) - d(t).
  out = cmm.apply(_identity_cmm_variables(8, 2.0), x, train=False)
  clips = np.asarray(x).reshape(2, T, 5, 6, 8)
  out = np.asarray(out).reshape(clips.shape)
  np.testing.assert_allclose(out[:, :-1], 2 * clips[:, 1:] - clips[:, :-1], atol=1e-5)
  np.testing.assert_array_equal(out[:, -1], 0)


def test_cmm_stride_two_max_pools_its_output():
  x = _frames(seed=10)
  cmm = temporal.ChannelwiseMotion(planes=8, reduced=8, num_frames=T, stride=2)
  variables = _identity_cmm_variables(8, 1.0)
  full = np.asarray(cmm.clone(stride=1).apply(variables, x, train=False))
  pooled = np.asarray(cmm.apply(variables, x, train=False))
  # 5x6 pools to 3x3 (ceil mode), the size a 3x3 conv with stride 2 and padding 1 gives.
  assert pooled.shape == (2 * T, 3, 3, 8)
  padded = np.pad(full, ((0, 0), (0, 1), (0, 0), (0, 0)), constant_values=-np.inf)
  np.testing.assert_allclose(pooled, padded.reshape(2 * T, 3, 2, 3, 2, 8).max(axis=(2, 4)))


def test_temporal_shift_moves_an_eighth_each_way():
  x = _frames(shape=(2 * T, 3, 3, 16), seed=11)
  out = np.asarray(temporal.temporal_shift(x, T, fold_div=8)).reshape(2, T, 3, 3, 16)
  clips = np.asarray(x).reshape(out.shape)
  np.testing.assert_array_equal(out[:, :-1, ..., 0:2], clips[:, 1:, ..., 0:2])
  np.testing.assert_array_equal(out[:, -1, ..., 0:2], 0)
  np.testing.assert_array_equal(out[:, 1:, ..., 2:4], clips[:, :-1, ..., 2:4])
  np.testing.assert_array_equal(out[:, 0, ..., 2:4], 0)
  np.testing.assert_array_equal(out[..., 4:], clips[..., 4:])


def test_unknown_impl_is_an_error():
  with pytest.raises(ValueError, match='impl'):
    temporal.DepthwiseConv3x3(impl='fast').init(jax.random.key(0), _frames())


def test_ceil_max_pool_matches_reduce_window_in_value_and_gradient():
  x = _frames(shape=(2, 7, 6, 3), seed=12)
  reference = lambda x: nn.max_pool(x, (2, 2), strides=(2, 2), padding=((0, 1), (0, 0)))
  np.testing.assert_array_equal(temporal.max_pool_ceil(x, 2), reference(x))
  np.testing.assert_allclose(jax.grad(lambda x: jnp.sum(temporal.max_pool_ceil(x, 2) ** 2))(x),
                             jax.grad(lambda x: jnp.sum(reference(x) ** 2))(x), rtol=1e-6)
