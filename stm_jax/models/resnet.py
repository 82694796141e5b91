"""STM-ResNet: ResNet-50/101 (v1, stride on the 3x3 conv) with a temporal module in its bottlenecks.

Module names mirror the PyTorch layout (`conv1`, `bn1`, `layer1_0.conv2`, `layer3_0.mb.shift`,
`fc`...; a `.` in PyTorch is `_` here) so that weight conversion is a renaming.
"""

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from stm_jax.models import layers
from stm_jax.models import temporal

TEMPORAL_CONVS = ('channelwise', 'full')
BLOCKS_BY_DEPTH = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}
# Where `tsm` shifts (config.model.tsm_placement). `tsm`: TSM's own rule (its code's
# `make_temporal_shift`, place 'blockres', which mmaction2's ResNetTSM repeats): every block, except
# that when the third stage (conv4_x) has TSM_EVERY_OTHER_FROM or more blocks, only every other
# block of every stage (index % 2 == 0): 18 of ResNet-101's 33. `every_block`: all of them.
TSM_PLACEMENTS = ('tsm', 'every_block')
TSM_EVERY_OTHER_FROM = 23
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def module_blocks(blocks: Sequence[int], temporal_module: str, stages: Sequence[int] = (2, 3, 4, 5),
                  first_block_only: bool = False,
                  tsm_placement: str = 'tsm') -> frozenset[tuple[int, int]]:
  """The bottlenecks that hold the temporal module, as `(stage index 0-3, block index)`.

  The one definition of placement: the network builds from it, and weight conversion compares a
  checkpoint's blocks with it. `stages` (2-5) and `first_block_only` restrict every module (paper
  Table 7); for `tsm`, `tsm_placement` adds TSM's own rule (see TSM_PLACEMENTS). Empty for TSN.
  """
  module = temporal.TEMPORAL_MODULES[temporal_module]
  if not (module.scopes or module.input_shift):
    return frozenset()
  step = 1
  if (module.input_shift and tsm_placement == 'tsm' and len(blocks) > 2
      and blocks[2] >= TSM_EVERY_OTHER_FROM):
    step = 2
  return frozenset(
      (index, block) for index, count in enumerate(blocks) for block in range(count)
      if index + 2 in stages and (block == 0 or not first_block_only) and block % step == 0)


class Bottleneck(nn.Module):
  """A ResNet bottleneck (1x1, 3x3, 1x1, expansion 4) holding one temporal module.

  `none`: TSN's plain block. `tsm`: the block input shifted in time (residual shift).
  `cstm`: channel-wise temporal conv before the 3x3. `cmm`: the motion branch added to the
  3x3's output. `stm`: both, summed. `stm_concat`: both, concatenated and reduced by a 1x1
  conv (`fuse`). docs/design.md section 1 gives the exact block.

  For feature visualisation (paper Figure 1, `stm_jax/tools/visualize.py`) the block sows into the
  `intermediates` collection, as frames `(N*T, H, W, C)`: `block_input` (x, before any TSM
  shift), `cstm` (the CSTM branch output `a = ReLU(BN(conv3x3(v)))`, only in blocks with CSTM)
  and `cmm` (the CMM branch output `b`, only in blocks with CMM), both before fusion. Unless
  `intermediates` is mutable in `apply`, sowing does nothing: outputs and variables are unchanged.
  """
  planes: int
  stride: int
  downsample: bool
  temporal_module: str
  temporal_conv: str
  num_frames: int
  cmm_reduction: int
  tsm_fold_div: int
  channelwise_impl: str
  dtype: Any
  causal: bool = False
  streaming: bool = False

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    conv = layers.conv(self.dtype)
    norm = lambda name: layers.batch_norm(train, self.dtype, name)
    module = temporal.TEMPORAL_MODULES[self.temporal_module]
    self.sow('intermediates', 'block_input', x)
    shortcut = x
    if module.input_shift and self.streaming:
      x = temporal.streaming_shift(self, x, self.tsm_fold_div)
    elif module.input_shift:
      x = temporal.temporal_shift(x, self.num_frames, self.tsm_fold_div, self.causal)
    u = nn.relu(norm('bn1')(conv(self.planes, (1, 1), name='conv1')(x)))

    v = u
    if module.cstm:
      if self.temporal_conv == 'channelwise':
        v = temporal.ChannelwiseTemporalConv(self.num_frames, self.channelwise_impl, self.dtype,
                                             self.causal, self.streaming,
                                             name=temporal.CSTM_SCOPE)(u)
      else:
        v = temporal.FullTemporalConv(self.num_frames, self.dtype, self.causal, self.streaming,
                                      name=temporal.CSTM_SCOPE)(u)
    a = conv(self.planes, (3, 3), strides=(self.stride, self.stride), padding=((1, 1), (1, 1)),
             name='conv2')(v)
    a = nn.relu(norm('bn2')(a))
    if module.cstm:
      self.sow('intermediates', 'cstm', a)

    if module.cmm:
      b = temporal.ChannelwiseMotion(self.planes, self.planes // self.cmm_reduction,
                                     self.num_frames, self.stride, self.channelwise_impl,
                                     self.dtype, self.causal, self.streaming,
                                     name=temporal.CMM_SCOPE)(u, train)
      self.sow('intermediates', 'cmm', b)
      if module.concat_fusion:
        a = conv(self.planes, (1, 1), name=temporal.FUSE_SCOPE)(jnp.concatenate([a, b], axis=-1))
      else:
        a = a + b

    y = norm('bn3')(conv(self.planes * 4, (1, 1), name='conv3')(a))
    if self.downsample:
      shortcut = conv(self.planes * 4, (1, 1), strides=(self.stride, self.stride),
                      name='downsample_conv')(shortcut)
      shortcut = norm('downsample_bn')(shortcut)
    return nn.relu(y + shortcut)


class STMResNet(nn.Module):
  """The STM network family on a ResNet backbone (paper Figure 3).

  Takes RGB clips `(B, T, H, W, 3)`, uint8 or float in [0, 255]; normalises with the
  ImageNet mean/std inside (so the host ships uint8); runs every frame through the
  backbone as a batch of `B*T` images with temporal modules mixing frames; returns the
  per-frame logits averaged over T (TSN's segment consensus), `(B, num_classes)`, float32.
  Which blocks hold the temporal module is `module_blocks(blocks, temporal_module, stages,
  first_block_only, tsm_placement)`. `causal`: the online variant, in which no frame's features
  depend on a later frame (temporal.py: CSTM with taps t-1 and t, CMM one step back, TSM's
  online shift); the parameters are those of the offline model but CSTM's (2 taps, not 3).
  The per-frame logits, `(B, T, num_classes)` float32, are sown as `intermediates/frame_logits`.
  `streaming` (causal only; models/streaming.py builds it): clips of one frame, the temporal
  operators' previous frame taken from the `cache` collection; same parameters.
  """
  num_classes: int
  num_frames: int
  blocks: Sequence[int] = BLOCKS_BY_DEPTH[50]
  width: int = 64
  temporal_module: str = 'stm'
  temporal_conv: str = 'channelwise'
  stages: Sequence[int] = (2, 3, 4, 5)
  first_block_only: bool = False
  tsm_placement: str = 'tsm'
  cmm_reduction: int = 16
  tsm_fold_div: int = 8
  dropout_rate: float = 0.5
  channelwise_impl: str = 'shift'
  dtype: Any = jnp.float32
  causal: bool = False
  streaming: bool = False

  @nn.compact
  def __call__(self, clips: jax.Array, train: bool = False) -> jax.Array:
    batch, frames = clips.shape[:2]
    if frames != self.num_frames:
      raise ValueError(f'clips have {frames} frames, the model was built for {self.num_frames} '
                       '(config.data.num_frames)')
    mean = jnp.asarray(IMAGENET_MEAN, jnp.float32) * 255.0
    std = jnp.asarray(IMAGENET_STD, jnp.float32) * 255.0
    x = ((clips.astype(jnp.float32) - mean) / std).astype(self.dtype)
    x = temporal.to_frames(x)

    x = layers.conv(self.dtype)(self.width, (7, 7), strides=(2, 2), padding=((3, 3), (3, 3)),
                                name='conv1')(x)
    x = nn.relu(layers.batch_norm(train, self.dtype, 'bn1')(x))
    x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))

    with_module = module_blocks(self.blocks, self.temporal_module, self.stages,
                                self.first_block_only, self.tsm_placement)
    for stage_index, num_blocks in enumerate(self.blocks):
      for block in range(num_blocks):
        x = Bottleneck(
            planes=self.width * 2**stage_index,
            stride=2 if block == 0 and stage_index > 0 else 1,
            downsample=block == 0,
            temporal_module=(self.temporal_module if (stage_index, block) in with_module
                             else 'none'),
            temporal_conv=self.temporal_conv,
            num_frames=self.num_frames,
            cmm_reduction=self.cmm_reduction,
            tsm_fold_div=self.tsm_fold_div,
            channelwise_impl=self.channelwise_impl,
            dtype=self.dtype,
            causal=self.causal,
            streaming=self.streaming,
            name=f'layer{stage_index + 1}_{block}')(x, train)

    x = jnp.mean(x, axis=(1, 2))
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    x = nn.Dense(self.num_classes, dtype=self.dtype, name='fc')(x)
    frame_logits = x.astype(jnp.float32).reshape(batch, frames, -1)
    self.sow('intermediates', 'frame_logits', frame_logits)
    return jnp.mean(frame_logits, axis=1)
