"""The temporal operators of STM and its baselines (docs/design.md section 1).

Between blocks a batch of clips is kept as frames, `(N*T, H, W, C)`; the operators here
reshape to `(N, T, H, W, C)` where they mix time and back.

Each channel-wise convolution has two implementations with the same parameters:
`grouped` (an XLA convolution with `feature_group_count`, the reference form) and `shift`
(the same sum written as shifted multiply-adds, which XLA fuses into one loop and which is
far faster where grouped convolutions are slow, e.g. XLA:CPU).

Streaming (`streaming=True`, causal operators only; models/streaming.py): the network sees one
frame at a time, `(N, H, W, C)`, and each operator takes what it needs of the previous frame from
the `cache` collection (`previous_frame`) instead of from a neighbour in the clip, so that a frame
streamed after the frames before it gets the features the causal clip model gives it.
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
# The variable collection that carries a stream's state from one frame to the next.
CACHE = 'cache'


def to_clips(x: jax.Array, num_frames: int) -> jax.Array:
  """Reshapes frames `(N*T, ...)` into clips `(N, T, ...)`."""
  return x.reshape((-1, num_frames) + x.shape[1:])


def to_frames(x: jax.Array) -> jax.Array:
  """Reshapes clips `(N, T, ...)` into frames `(N*T, ...)`."""
  return x.reshape((-1,) + x.shape[2:])


def previous_frame(module: nn.Module, name: str, x: jax.Array) -> jax.Array:
  """Streaming: the value `x` had at the previous frame (zeros before the first), remembering `x`
  for the next one, in `module`'s `cache` variable `name`.

  Flax's decoding-cache idiom: an apply that finds no cache (with `mutable=['cache']`) creates it,
  as zeros, and changes nothing; every later apply reads it and writes `x` into it. Zeros are what
  the causal clip operators pad the first frame with, so a stream starts as a clip does.
  """
  initialized = module.has_variable(CACHE, name)
  cached = module.variable(CACHE, name, jnp.zeros, x.shape, x.dtype)
  previous = cached.value
  if initialized:
    cached.value = x
  return previous


def _check_streaming(module: nn.Module) -> None:
  if module.streaming and not module.causal:
    raise ValueError(f'{type(module).__name__}: streaming needs the causal operator (causal=True): '
                     'the offline one looks at the next frame')


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
  kernel `(2, C)` (the online STM: no frame's output waits for a later frame). `streaming`: `x` is
  one frame, `u_{t-1}` comes from the cache.
  """
  num_frames: int
  impl: str = 'shift'
  dtype: Any = jnp.float32
  causal: bool = False
  streaming: bool = False

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    _check_impl(self.impl)
    _check_streaming(self)
    channels = x.shape[-1]
    init = causal_shift_init if self.causal else quarter_shift_init
    kernel = self.param('kernel', init, (2 if self.causal else 3, channels)).astype(self.dtype)
    if self.streaming:
      return previous_frame(self, 'input', x) * kernel[0] + x * kernel[1]
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
  `causal`: `(2, C_in, C_out)`, taps t-1 and t. `streaming`: `x` is one frame, `u_{t-1}` comes
  from the cache.
  """
  num_frames: int
  dtype: Any = jnp.float32
  causal: bool = False
  streaming: bool = False

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    _check_streaming(self)
    channels = x.shape[-1]
    init = causal_shift_init if self.causal else quarter_shift_init
    kernel = self.param('kernel', init, (2 if self.causal else 3, channels, channels))
    kernel = kernel.astype(self.dtype)
    if self.streaming:  # The two frames (t-1, t) as a clip, convolved without padding: frame t.
      pair = jnp.stack([previous_frame(self, 'input', x), x], axis=1)
      return _conv_over_time(pair, kernel, groups=1, padded=False)
    return _conv_over_time(to_clips(x, self.num_frames), kernel, groups=1)


def _conv_over_time(clips: jax.Array, kernel: jax.Array, groups: int,
                    padded: bool = True) -> jax.Array:
  """Convolves clips `(N, T, H, W, C)` over T by `kernel` `(taps, C / groups, C_out)`: 3 taps
  (t-1, t, t+1) or 2 (t-1, t: causal), zeros beyond the clip (`padded`; else only the frames
  whose taps all fall inside it); returns frames `(N*T', H, W, C_out)`."""
  n, t, h, w, c = clips.shape
  padding = (1, kernel.shape[0] - 2) if padded else (0, 0)
  out = jax.lax.conv_general_dilated(
      clips.reshape(n, t, h * w, c), kernel[:, None], window_strides=(1, 1),
      padding=(padding, (0, 0)), dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
      feature_group_count=groups)
  t = out.shape[1]
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


def streaming_shift(module: nn.Module, x: jax.Array, fold_div: int = 8) -> jax.Array:
  """TSM's online shift on one frame `(N, H, W, C)`: its first 1/fold_div of the channels replaced
  by the previous frame's (the cache of `module`), as `temporal_shift(..., causal=True)` does."""
  fold = x.shape[-1] // fold_div
  previous = previous_frame(module, 'shifted', x[..., :fold])
  return jnp.concatenate([previous, x[..., fold:]], axis=-1)


class ChannelwiseMotion(nn.Module):
  """CMM (paper 3.2): feature-level motion between adjacent frames.

  `r = BN(conv1x1_{p/r}(u))`, `d = depthwise3x3(r)`, `m_t = d_{t+1} - r_t` with `m_{T-1} = 0`,
  output `conv1x1_p(m)`, max-pooled 2x2 when the block has stride 2 (so it meets CSTM's
  strided 3x3 conv; ceil mode for odd sizes). Submodule names follow the authors' PyTorch (`mb.*`).
  `causal`: the same operator one step back, `m_t = d_t - r_{t-1}` with `m_0 = 0`. `streaming`:
  `u` is one frame; `r_{t-1}`, and whether there was a previous frame, come from the cache.
  """
  planes: int
  reduced: int
  num_frames: int
  stride: int = 1
  impl: str = 'shift'
  dtype: Any = jnp.float32
  causal: bool = False
  streaming: bool = False

  @nn.compact
  def __call__(self, u: jax.Array, train: bool) -> jax.Array:
    _check_streaming(self)
    conv = layers.conv(self.dtype)
    r = conv(self.reduced, (1, 1), name='stage_conv')(u)
    r = layers.batch_norm(train, self.dtype, name='stage_bn')(r)
    d = DepthwiseConv3x3(impl=self.impl, dtype=self.dtype, name='shift')(r)
    if self.streaming:
      # 0 at the first frame (m_0 = 0), 1 once a previous frame exists.
      started = previous_frame(self, 'started', jnp.ones(r.shape[:1] + (1, 1, 1), r.dtype))
      motion = (d - previous_frame(self, 'reduced', r)) * started
    else:
      r, d = to_clips(r, self.num_frames), to_clips(d, self.num_frames)
      motion = d[:, 1:] - r[:, :-1]
      zeros = jnp.zeros_like(motion[:, :1])
      motion = to_frames(jnp.concatenate([zeros, motion] if self.causal else [motion, zeros],
                                         axis=1))
    out = conv(self.planes, (1, 1), name='conv1x1')(motion)
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

