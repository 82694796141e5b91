"""The temporal operators of STM and its baselines (docs/design.md section 1).

Between blocks a batch of clips is kept as frames, `(N*T, H, W, C)`; the operators here
reshape to `(N, T, H, W, C)` where they mix time and back.

Each channel-wise convolution has two implementations with the same parameters:
`grouped` (an XLA convolution with `feature_group_count`, the reference form) and `shift`
(the same sum written as shifted multiply-adds, which XLA fuses into one loop and which is
far faster where grouped convolutions are slow, e.g. XLA:CPU).
"""

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from stm_jax.models import layers

IMPLS = ('shift', 'grouped')
# The parameter scopes a temporal module adds to a bottleneck: CSTM's temporal conv (`shift`),
# CMM's branch (`mb`) and the concat fusion (`fuse`). Names follow the authors' PyTorch.
CSTM_SCOPE, CMM_SCOPE, FUSE_SCOPE = 'shift', 'mb', 'fuse'


@dataclasses.dataclass(frozen=True)
class TemporalModule:
  """How a bottleneck uses a temporal module (resnet.Bottleneck reads these flags).

  A new module is an operator in this file and one entry in `TEMPORAL_MODULES`; the network,
  weight conversion, the summary and the demo read the table.
  """
  display_name: str  # In tables, plots and the demo.
  input_shift: bool = False  # TSM: the block input shifted in time before conv1.
  cstm: bool = False  # CSTM's temporal conv on conv1's output, before the 3x3 conv.
  cmm: bool = False  # CMM's motion branch from conv1's output, added to the 3x3's output.
  concat_fusion: bool = False  # CSTM and CMM concatenated and reduced by a 1x1 conv.

  @property
  def scopes(self) -> tuple[str, ...]:
    """The parameter scopes this module adds to a block (empty for TSN and TSM)."""
    return tuple(name for name, used in ((CSTM_SCOPE, self.cstm), (CMM_SCOPE, self.cmm),
                                         (FUSE_SCOPE, self.concat_fusion)) if used)


TEMPORAL_MODULES = {
    'none': TemporalModule('TSN'),
    'tsm': TemporalModule('TSM', input_shift=True),
    'cstm': TemporalModule('CSTM', cstm=True),
    'cmm': TemporalModule('CMM', cmm=True),
    'stm': TemporalModule('STM', cstm=True, cmm=True),
    'stm_concat': TemporalModule('STM (concat)', cstm=True, cmm=True, concat_fusion=True),
}
# Every scope any temporal module adds: a checkpoint without them holds a backbone only.
TEMPORAL_SCOPES = (CSTM_SCOPE, CMM_SCOPE, FUSE_SCOPE)


def to_clips(x: jax.Array, num_frames: int) -> jax.Array:
  """Reshapes frames `(N*T, ...)` into clips `(N, T, ...)`."""
  return x.reshape((-1, num_frames) + x.shape[1:])


def to_frames(x: jax.Array) -> jax.Array:
  """Reshapes clips `(N, T, ...)` into frames `(N*T, ...)`."""
  return x.reshape((-1,) + x.shape[2:])


def _check_impl(impl: str) -> None:
  if impl not in IMPLS:
    raise ValueError(f'channel-wise conv impl {impl!r} is not one of {IMPLS}')


def causal_shift_init(key, shape, dtype=jnp.float32):
  """The causal CSTM's init: a temporal shift of a quarter of the channels from the previous
  frame, the rest passed through (a kernel `(2, C)` or `(2, C, C)`: taps t-1, t)."""
  del key
  channels = shape[1]
  taps = np.zeros((2, channels), np.float32)
  taps[0, :channels // 4] = 1.0
  taps[1, channels // 4:] = 1.0
  if len(shape) == 2:
    return jnp.asarray(taps, dtype)
  return jnp.asarray(taps[:, :, None] * np.eye(channels, dtype=np.float32)[None], dtype)


def quarter_shift_init(key, shape, dtype=jnp.float32):
  """CSTM init (paper 4.2): a temporal shift of a quarter of the channels each way.

  For a kernel `(3, C)` (channel-wise) channels `[0, C/4)` get `[1, 0, 0]`, channels
  `[C - C/4, C)` get `[0, 0, 1]` and the middle half `[0, 1, 0]`. For a kernel
  `(3, C, C)` (ordinary temporal conv) the same pattern sits on the diagonal, so both
  start as the same shift.
  """
  del key
  channels = shape[1]
  quarter = channels // 4
  tap = np.ones(channels, np.int64)  # index of the non-zero tap per channel
  tap[:quarter] = 0
  tap[channels - quarter:] = 2
  taps = np.zeros((3, channels), np.float32)
  taps[tap, np.arange(channels)] = 1.0
  if len(shape) == 2:
    return jnp.asarray(taps, dtype)
  return jnp.asarray(taps[:, :, None] * np.eye(channels, dtype=np.float32)[None], dtype)


class ChannelwiseTemporalConv(nn.Module):
  """CSTM's temporal conv: kernel 3 over T, one kernel per channel, no bias, zero padding.

  `v_t = w0 * u_{t-1} + w1 * u_t + w2 * u_{t+1}` per channel (cross-correlation).
  Parameter `kernel`: `(3, C)`. `causal`: taps t-1 and t only, `v_t = w0 * u_{t-1} + w1 * u_t`,
  kernel `(2, C)` (the online STM: no frame's output waits for a later frame).
  """
  num_frames: int
  impl: str = 'shift'
  dtype: Any = jnp.float32
  causal: bool = False

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    _check_impl(self.impl)
    channels = x.shape[-1]
    init = causal_shift_init if self.causal else quarter_shift_init
    kernel = self.param('kernel', init, (2 if self.causal else 3, channels)).astype(self.dtype)
    clips = to_clips(x, self.num_frames)
    if self.impl == 'grouped':
      return _conv_over_time(clips, kernel[:, None, :], groups=channels)
    zeros = jnp.zeros_like(clips[:, :1])
    previous = jnp.concatenate([zeros, clips[:, :-1]], axis=1)
    if self.causal:
      return to_frames(previous * kernel[0] + clips * kernel[1])
    following = jnp.concatenate([clips[:, 1:], zeros], axis=1)
    return to_frames(previous * kernel[0] + clips * kernel[1] + following * kernel[2])


class FullTemporalConv(nn.Module):
  """The ordinary temporal conv of Table 8: kernel 3 over T, every channel to every channel.

  Parameter `kernel`: `(3, C_in, C_out)`, no bias, initialised as the same quarter shift;
  `causal`: `(2, C_in, C_out)`, taps t-1 and t.
  """
  num_frames: int
  dtype: Any = jnp.float32
  causal: bool = False

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    channels = x.shape[-1]
    init = causal_shift_init if self.causal else quarter_shift_init
    kernel = self.param('kernel', init, (2 if self.causal else 3, channels, channels))
    return _conv_over_time(to_clips(x, self.num_frames), kernel.astype(self.dtype), groups=1)


def _conv_over_time(clips: jax.Array, kernel: jax.Array, groups: int) -> jax.Array:
  """Convolves clips `(N, T, H, W, C)` over T by `kernel` `(taps, C / groups, C_out)`: 3 taps
  (t-1, t, t+1) or 2 (t-1, t: causal), zeros beyond the clip; returns frames `(N*T, H, W, C_out)`."""
  n, t, h, w, c = clips.shape
  out = jax.lax.conv_general_dilated(
      clips.reshape(n, t, h * w, c), kernel[:, None], window_strides=(1, 1),
      padding=((1, kernel.shape[0] - 2), (0, 0)), dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
      feature_group_count=groups)
  return to_frames(out.reshape(n, t, h, w, -1))


class DepthwiseConv3x3(nn.Module):
  """CMM's spatial conv: one 3x3 kernel per channel, stride 1, zero padding 1, no bias.

  Parameter `kernel`: `(3, 3, C)`.
  """
  impl: str = 'shift'
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    _check_impl(self.impl)
    channels = x.shape[-1]
    # Fan-in 9, as PyTorch's default init for a depthwise conv.
    kernel = self.param('kernel', nn.initializers.variance_scaling(1 / 3, 'fan_in', 'uniform',
                                                                    in_axis=(0, 1), out_axis=2),
                        (3, 3, channels)).astype(self.dtype)
    if self.impl == 'shift':
      _, h, w, _ = x.shape
      padded = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
      out = sum(padded[:, i:i + h, j:j + w] * kernel[i, j] for i in range(3) for j in range(3))
      return out
    return jax.lax.conv_general_dilated(
        x, kernel[:, :, None, :], window_strides=(1, 1), padding=((1, 1), (1, 1)),
        dimension_numbers=('NHWC', 'HWIO', 'NHWC'), feature_group_count=channels)


def temporal_shift(x: jax.Array, num_frames: int, fold_div: int = 8,
                   causal: bool = False) -> jax.Array:
  """TSM's shift: 1/fold_div of the channels from t+1, the next 1/fold_div from t-1, zeros at the ends.

  `causal` (TSM's online shift): only the first 1/fold_div from t-1, the rest unshifted.
  """
  clips = to_clips(x, num_frames)
  fold = clips.shape[-1] // fold_div
  zeros = jnp.zeros_like(clips[:, :1, ..., :fold])
  if causal:
    from_prev = jnp.concatenate([zeros, clips[:, :-1, ..., :fold]], axis=1)
    return to_frames(jnp.concatenate([from_prev, clips[..., fold:]], axis=-1))
  from_next = jnp.concatenate([clips[:, 1:, ..., :fold], zeros], axis=1)
  from_prev = jnp.concatenate([zeros, clips[:, :-1, ..., fold:2 * fold]], axis=1)
  return to_frames(jnp.concatenate([from_next, from_prev, clips[..., 2 * fold:]], axis=-1))


class ChannelwiseMotion(nn.Module):
  """CMM (paper 3.2): feature-level motion between adjacent frames.

  `r = BN(conv1x1_{p/r}(u))`, `d = depthwise3x3(r)`, `m_t = d_{t+1} - r_t` with `m_{T-1} = 0`,
  output `conv1x1_p(m)`, max-pooled 2x2 when the block has stride 2 (so it meets CSTM's
  strided 3x3 conv; ceil mode for odd sizes). Submodule names follow the authors' PyTorch (`mb.*`).
  `causal`: the same operator one step back, `m_t = d_t - r_{t-1}` with `m_0 = 0`.
  """
  planes: int
  reduced: int
  num_frames: int
  stride: int = 1
  impl: str = 'shift'
  dtype: Any = jnp.float32
  causal: bool = False

  @nn.compact
  def __call__(self, u: jax.Array, train: bool) -> jax.Array:
    conv = layers.conv(self.dtype)
    r = conv(self.reduced, (1, 1), name='stage_conv')(u)
    r = layers.batch_norm(train, self.dtype, name='stage_bn')(r)
    d = DepthwiseConv3x3(impl=self.impl, dtype=self.dtype, name='shift')(r)
    r, d = to_clips(r, self.num_frames), to_clips(d, self.num_frames)
    motion = d[:, 1:] - r[:, :-1]
    zeros = jnp.zeros_like(motion[:, :1])
    motion = jnp.concatenate([zeros, motion] if self.causal else [motion, zeros], axis=1)
    out = conv(self.planes, (1, 1), name='conv1x1')(to_frames(motion))
    if self.stride > 1:
      out = max_pool_ceil(out, self.stride)
    return out


def max_pool_ceil(x: jax.Array, size: int) -> jax.Array:
  """Max-pools `(N, H, W, C)` over size x size windows with stride size, in ceil mode.

  Odd maps are padded with -inf, so the output meets a 3x3 conv with stride 2 and padding 1
  at any input size. Written as a reshape and a max (not reduce_window): its gradient is a
  select instead of the scatter XLA makes for reduce_window, which is slow on GPU.
  """
  n, h, w, c = x.shape
  x = jnp.pad(x, ((0, 0), (0, -h % size), (0, -w % size), (0, 0)), constant_values=-jnp.inf)
  return x.reshape(n, x.shape[1] // size, size, x.shape[2] // size, size, c).max(axis=(2, 4))

