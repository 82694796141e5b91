"""Frame-by-frame inference of the causal (online) models: one new frame in, its logits out.

The causal network (`config.model.causal=True`) lets no frame's features depend on a later frame,
so it can run as a stream: `create(config)` builds the same network over clips of one frame, in
which every temporal operator takes what it needs of the previous frame from a carried state
(models/temporal.py: CSTM's input, CMM's reduced map, TSM's shifted channels, per block) instead
of from the clip. The parameters are the causal clip model's, unchanged.

`StreamingStep` is the pure step function, jitted with fixed shapes: `(variables, state, frames)
-> (frame_logits, clip_logits, state)`. The state is a dict of arrays, all with the batch
(streams) as their first axis and all zeros at the start of a stream (`initial_state`):
  cache   the network's per-block previous-frame values (the `cache` collection);
  recent  the last T frames' logits `(B, T, num_classes)`, float32;
  seen    frames streamed so far `(B,)`, int32.
`clip_logits` is the running clip score: the mean of the last T frames' logits (of all frames so
far while fewer than T have arrived). For the first T frames of a stream it is what the causal
clip model gives those T frames; later, the frames' features also carry the past before the clip
(the online model's state never restarts), as in TSM's online demo.
"""

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from input_pipeline import errors
from stm_jax import models
from stm_jax.models import resnet
from stm_jax.models import temporal

State = dict[str, Any]


def check_causal(config: ml_collections.ConfigDict) -> None:
  """Raises a ConfigError unless the config's model is the causal variant (the only one that can
  stream: the offline CSTM and CMM look at the next frame)."""
  if not config.model.causal:
    raise errors.bad_field('model.causal', config.model.causal,
                           'streaming needs the online model: the offline CSTM and CMM look at '
                           'the next frame; train (or convert) with --config.model.causal=True')


def create(config: ml_collections.ConfigDict) -> resnet.STMResNet:
  """The streaming network of a causal config: one frame per clip, previous frames in the cache."""
  check_causal(config)
  return models.create(config).clone(num_frames=1, streaming=True)


@dataclasses.dataclass(frozen=True)
class StreamingStep:
  """The step of a stream of `num_frames`-frame clip scores over `model` (from `create`).

  Call it (under `jax.jit`) as `step(variables, state, frames)` with uint8 frames
  `(B, crop, crop, 3)` cut as the val protocol cuts a clip's frames; returns that frame's logits
  `(B, num_classes)`, the running clip score `(B, num_classes)` (float32) and the new state.
  """
  model: resnet.STMResNet
  num_frames: int

  def __call__(self, variables: dict[str, Any], state: State,
               frames: jax.Array) -> tuple[jax.Array, jax.Array, State]:
    logits, updated = self.model.apply({**variables, temporal.CACHE: state['cache']},
                                       frames[:, None], train=False, mutable=[temporal.CACHE])
    recent = jnp.concatenate([state['recent'][:, 1:], logits[:, None]], axis=1)
    seen = state['seen'] + 1
    count = jnp.minimum(seen, self.num_frames).astype(jnp.float32)[:, None]
    clip_logits = recent.sum(axis=1) / count
    return logits, clip_logits, {'cache': updated.get(temporal.CACHE, {}), 'recent': recent,
                                 'seen': seen}

  def state_shapes(self, variables: dict[str, Any], batch: int, crop_size: int) -> State:
    """The shapes and dtypes of the state of `batch` streams of `crop_size` frames."""
    frames = jax.ShapeDtypeStruct((batch, 1, crop_size, crop_size, 3), jnp.uint8)
    _, cache = jax.eval_shape(
        lambda v, f: self.model.apply(v, f, train=False, mutable=[temporal.CACHE]),
        variables, frames)
    return {
        'cache': cache.get(temporal.CACHE, {}),  # TSN has none.
        'recent': jax.ShapeDtypeStruct((batch, self.num_frames, self.model.num_classes),
                                       jnp.float32),
        'seen': jax.ShapeDtypeStruct((batch,), jnp.int32),
    }

  def initial_state(self, variables: dict[str, Any], batch: int, crop_size: int) -> State:
    """The state before the first frame of `batch` streams: all zeros."""
    return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype),
                        self.state_shapes(variables, batch, crop_size))


def create_step(config: ml_collections.ConfigDict) -> StreamingStep:
  """The streaming step of a causal config's model, scoring clips of `data.num_frames` frames."""
  return StreamingStep(create(config), int(config.data.num_frames))
