"""`launch.py --mode=export`: a trained model as one serialized StableHLO function.

The function maps uint8 RGB clips `(B, T, crop, crop, 3)` (values 0-255, built as the val protocol
builds them: T frames at the segment centres, short side 256, centre crop) to float32 logits
`(B, num_classes)`; B is symbolic, so one export serves every batch size, while T and the crop are
the run's. The variables are baked in as constants: the file is self-contained (STM-ResNet-50:
about 96 MB, the float32 parameters). It is lowered for CPU, CUDA and TPU by default, so that an
export made on a CPU machine runs on accelerators too.

`<output>/` holds `model.stablehlo` (`jax.export.Exported.serialize()`) and `signature.json`
(input and output shapes with the symbolic batch, dtypes, T, crop size, class names, the
checkpoint it came from, platforms, jax version; `preprocessing`: every step from a video file to
the input, including the JPEG round trip the frames of the prepared dataset went through;
`architecture`: the network actually built, e.g. STM-ResNet-14 of width 16 for the tiny recipe,
with its block counts and parameter count, beside the raw `model` fields). `load(directory)` gives it back as a function of
clips; any program with the same or a newer jax can call it, no model code needed. The output
directory must not exist; it is written under a temporary name and renamed when complete.

`--streaming` exports the online model's streaming step instead (a causal run only;
models/streaming.py): `(state, frames) -> (frame_logits, clip_logits, state)`, frames uint8
`(B, crop, crop, 3)`, the state a dict of arrays with the same symbolic batch, zeros at the start
of a stream; `signature.json` says `"kind": "streaming_step"` and lists the state's arrays.
`load` gives back an `ExportedStream` (`initial_state(batch)`, then call it frame by frame).
"""

import dataclasses
import json
import os
from typing import Any, Sequence

from etils import epath
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from input_pipeline import errors
from input_pipeline import files
from input_pipeline import video
from stm_jax import models
from stm_jax.core import weights
from stm_jax.models import counting
from stm_jax.models import resnet
from stm_jax.models import streaming
from stm_jax.models import temporal

SERIALIZED_FILE = 'model.stablehlo'
SIGNATURE_FILE = 'signature.json'
DEFAULT_PLATFORMS = ('cpu', 'cuda', 'tpu')
BATCH = 'b'
CLIP_MODEL, STREAMING_STEP = 'clip_model', 'streaming_step'  # signature.json's "kind".


def input_shape(loaded: weights.Weights) -> tuple[Any, ...]:
  """The clip shape the export accepts: `(b, T, crop, crop, 3)` with a symbolic batch `b`."""
  data = loaded.config.data
  return jax.export.symbolic_shape(
      f'{BATCH}, {int(data.num_frames)}, {int(data.crop_size)}, {int(data.crop_size)}, 3')


def export_model(loaded: weights.Weights,
                 platforms: Sequence[str] = DEFAULT_PLATFORMS) -> jax.export.Exported:
  """Exports `loaded`'s inference function (uint8 clips -> float32 logits), variables closed
  over as constants, batch polymorphic, lowered for `platforms`."""
  variables = jax.device_get(loaded.variables)  # Host arrays: no device layout in the export.
  model = loaded.model

  def logits(clips):
    return model.apply(variables, clips, train=False).astype(jnp.float32)

  clips = jax.ShapeDtypeStruct(input_shape(loaded), jnp.uint8)
  return jax.export.export(jax.jit(logits), platforms=tuple(platforms))(clips)


def export_streaming_step(loaded: weights.Weights,
                          platforms: Sequence[str] = DEFAULT_PLATFORMS) -> jax.export.Exported:
  """Exports `loaded`'s streaming step (a causal model's; state and uint8 frames -> frame logits,
  clip logits, state), variables closed over as constants, the batch of streams polymorphic."""
  step = streaming.create_step(loaded.config)
  variables = jax.device_get(loaded.variables)
  crop = int(loaded.config.data.crop_size)
  batch, = jax.export.symbolic_shape(BATCH)
  state = jax.tree.map(lambda s: jax.ShapeDtypeStruct((batch,) + s.shape[1:], s.dtype),
                       step.state_shapes(variables, 1, crop))
  frames = jax.ShapeDtypeStruct((batch, crop, crop, 3), jnp.uint8)
  return jax.export.export(jax.jit(lambda s, f: step(variables, s, f)),
                           platforms=tuple(platforms))(state, frames)


def architecture(loaded: weights.Weights) -> dict[str, Any]:
  """The network an export computes, as built (the config's `model.depth` is ignored when
  `model.blocks` is set): name, depth, blocks per stage, width, temporal module, parameters."""
  m = loaded.config.model
  blocks = [int(b) for b in (tuple(m.blocks) or resnet.BLOCKS_BY_DEPTH[m.depth])]
  depth = 3 * sum(blocks) + 2  # Bottleneck ResNet: 3 convs a block, the stem conv and fc.
  module = temporal.TEMPORAL_MODULES[m.temporal_module]
  return {
      'name': f'{module.display_name}-ResNet-{depth}' + (f' (width {m.width})'
                                                         if m.width != 64 else ''),
      'depth': depth,
      'blocks_per_stage': blocks,
      'width': int(m.width),
      'temporal_module': m.temporal_module,
      'temporal_stages': [int(s) for s in m.stages],
      'first_block_only': bool(m.first_block_only),
      'num_classes': int(loaded.config.data.num_classes),
      'params': counting.count_params(loaded.variables['params']),
      'compute_dtype': models.compute_dtype(m.dtype),
  }


def preprocessing(config) -> dict[str, Any]:
  """How a clip the export accepts is made from a video, step by step, as `--mode=predict` and
  the prepared dataset make it (input_pipeline/video.py, video_clips.py, transforms.py), so that
  another program can feed the export the same pixels."""
  d = config.data
  t, crop, side, quality = int(d.num_frames), int(d.crop_size), int(d.short_side), int(
      d.jpeg_quality)
  stored = video.stored_short_side(d)
  return {
      'steps': [
          'decode every frame of the video to RGB (PyAV/FFmpeg; a folder of JPEG frames: its '
          'files in name order), shown as a player shows it: the container\'s rotation (display '
          'matrix or rotate tag) applied and non-square pixels made square',
          f'resize each frame so that its shorter side is {stored} pixels, keeping the aspect '
          'ratio (rounded to whole pixels); never enlarged: a smaller frame keeps its size '
          '(FFmpeg swscale, area filter)',
          f'encode each frame as JPEG, quality {quality}, 4:2:0 chroma (libjpeg-turbo via '
          'simplejpeg), as the prepared dataset stores frames; JPEG frames already at or under '
          f'{stored} pixels are kept byte for byte instead',
          'decode the JPEG frames back to RGB (simplejpeg, fast integer IDCT, exact chroma '
          'upsampling)',
          f'take {t} frames: the video cut into {t} equal segments, the frame at the centre of '
          'each (val protocol, input_pipeline/sampling.py)',
          f'resize frames whose shorter side is over {side} pixels to {side} (OpenCV INTER_AREA; '
          'smaller ones stay as they are)',
          f'cut the centre {crop}x{crop} square of the frame at shorter side {side} (on a smaller '
          f'frame the box is scaled to it) and resize it to {crop}x{crop} if it is not that size '
          '(OpenCV bilinear)',
          'stack to uint8 (batch, frames, height, width, RGB), values 0-255: no normalisation '
          '(the model subtracts the ImageNet mean and divides by its std itself)',
      ],
      'stored_short_side': stored,
      'short_side': side,
      'jpeg_quality': quality,
      'jpeg_chroma_subsampling': '4:2:0',
      'storage_resize_filter': 'area (swscale)',
      'view_resize_filter': 'area (OpenCV INTER_AREA)',
      'crop_resize_filter': 'bilinear (OpenCV INTER_LINEAR, half-pixel centres)',
      'frame_sampling': 'segment centres',
      'crop': 'centre',
      'value_range': [0, 255],
      'channel_order': 'RGB',
  }


def _shape(aval) -> list[int | str]:
  return [d if isinstance(d, int) else str(d) for d in aval.shape]


def _streaming_fields(exported: jax.export.Exported) -> dict[str, Any]:
  """signature.json's description of a streaming step's inputs and outputs."""
  state_avals = exported.in_avals[:-1]
  paths = [jax.tree_util.keystr(path) for path, _ in
           jax.tree_util.tree_flatten_with_path(exported.in_tree.unflatten(
               list(exported.in_avals))[0][0])[0]]
  return {
      'kind': STREAMING_STEP,
      'input': {
          'state': [{'path': p, 'shape': _shape(a), 'dtype': str(a.dtype)}
                    for p, a in zip(paths, state_avals)],
          'frames': {'shape': _shape(exported.in_avals[-1]), 'dtype': 'uint8',
                     'meaning': 'one RGB frame per stream (batch, height, width, channel), '
                                'values 0-255, cut as the val protocol cuts a clip\'s frames'},
          'meaning': 'call(state, frames); the state of a new stream is all zeros',
      },
      'output': {
          'frame_logits': {'shape': _shape(exported.out_avals[0]), 'dtype': 'float32'},
          'clip_logits': {'shape': _shape(exported.out_avals[1]), 'dtype': 'float32',
                          'meaning': 'the mean of the last num_frames frames\' logits'},
          'state': 'the next call\'s state',
      },
  }


def signature(loaded: weights.Weights, exported: jax.export.Exported,
              num_bytes: int) -> dict[str, Any]:
  """What `signature.json` says about an export: shapes, dtypes, clip geometry, classes, origin."""
  data = loaded.config.data
  if len(exported.in_avals) == 1:
    fields = {
        'kind': CLIP_MODEL,
        'input': {'shape': _shape(exported.in_avals[0]), 'dtype': 'uint8',
                  'meaning': 'RGB clips (batch, frames, height, width, channel), values 0-255'},
        'output': {'shape': _shape(exported.out_avals[0]), 'dtype': 'float32',
                   'meaning': 'logits; softmax over the last axis gives class probabilities'},
    }
  else:
    fields = _streaming_fields(exported)
  return {
      'format': 'jax.export serialized StableHLO (jax.export.deserialize)',
      'file': SERIALIZED_FILE,
      'bytes': num_bytes,
      **fields,
      'num_frames': int(data.num_frames),
      'crop_size': int(data.crop_size),
      'short_side': int(data.short_side),
      'clip': ('val protocol: num_frames frames at the segment centres, frames resized to '
               'short_side and JPEG round-tripped, centre crop_size square (see preprocessing; '
               'input_pipeline/video_clips.py)'),
      'preprocessing': preprocessing(loaded.config),
      'architecture': architecture(loaded),
      'num_classes': int(data.num_classes),
      'class_names': list(loaded.class_names),
      'checkpoint': loaded.description,
      'step': loaded.step,
      'model': json.loads(loaded.config.model.to_json()),
      'platforms': list(exported.platforms),
      'calling_convention_version': exported.calling_convention_version,
      'jax_version': jax.__version__,
  }


def write(loaded: weights.Weights, output: str, platforms: Sequence[str] = DEFAULT_PLATFORMS,
          streaming_step: bool = False) -> dict[str, Any]:
  """Exports `loaded` (its clip model, or with `streaming_step` its streaming step) into the new
  directory `output`; returns its signature.

  Raises FileExistsError if `output` exists: an export is never overwritten.
  """
  output = files.resolve(output)
  weights.check_new(output)
  exported = (export_streaming_step if streaming_step else export_model)(loaded, platforms)
  data = exported.serialize()
  sig = signature(loaded, exported, len(data))
  if files.is_remote(output):
    # A bucket has no folder rename: the module first, then the signature, which is what makes
    # the folder an export (`load` needs both).
    files.write_bytes(output / SERIALIZED_FILE, bytes(data))
    files.write_json(output / SIGNATURE_FILE, sig)
    return sig
  output.parent.mkdir(parents=True, exist_ok=True)
  tmp = epath.Path(f'{output}.tmp-{os.getpid()}')
  if tmp.exists():
    tmp.rmtree()
  tmp.mkdir()
  try:
    files.write_bytes(tmp / SERIALIZED_FILE, bytes(data))
    files.write_json(tmp / SIGNATURE_FILE, sig)
    if output.exists():
      raise errors.UserError(f'{output}: appeared while exporting; choose another --output')
    tmp.rename(output)
  except BaseException:
    if tmp.exists() and not output.exists():
      tmp.rmtree()
    raise
  return sig


@dataclasses.dataclass
class _Loaded:
  """What every loaded export holds: the deserialized function (jitted), its signature and the
  directory it came from."""
  exported: jax.export.Exported
  signature: dict[str, Any]
  directory: str

  def __post_init__(self):
    self._call = jax.jit(self.exported.call)

  @property
  def class_names(self) -> list[str]:
    """The class names, by logit index."""
    return self.signature['class_names']


class ExportedModel(_Loaded):
  """A loaded export: call it on uint8 clips `(B, T, crop, crop, 3)` to get float32 logits."""

  def __call__(self, clips) -> jax.Array:
    """Logits of `clips`; raises ValueError naming the export if their shape or dtype differ."""
    clips = np.asarray(clips) if not isinstance(clips, jax.Array) else clips
    want = self.signature['input']['shape'][1:]
    if clips.ndim != 5 or list(clips.shape[1:]) != want or clips.dtype != np.uint8:
      raise errors.UserError(f'{self.directory}: expects uint8 clips of shape (batch, '
                       f'{", ".join(map(str, want))}), got {clips.dtype} {tuple(clips.shape)}')
    return self._call(clips)


class ExportedStream(_Loaded):
  """A loaded streaming-step export: `state = initial_state(batch)`, then
  `frame_logits, clip_logits, state = stream(state, frames)` for each new frame."""

  def initial_state(self, batch: int = 1) -> Any:
    """The state of `batch` new streams (zeros, in the structure the step takes)."""
    zeros = [np.zeros((batch,) + tuple(a.shape[1:]), a.dtype) for a in self.exported.in_avals]
    (state, _), _ = self.exported.in_tree.unflatten(zeros)
    return state

  def __call__(self, state, frames) -> tuple[jax.Array, jax.Array, Any]:
    """(frame logits, clip logits, new state) after `frames`; raises a UserError naming the export
    if the frames' shape or dtype differ."""
    frames = np.asarray(frames) if not isinstance(frames, jax.Array) else frames
    want = self.signature['input']['frames']['shape'][1:]
    if frames.ndim != 4 or list(frames.shape[1:]) != want or frames.dtype != np.uint8:
      raise errors.UserError(f'{self.directory}: expects uint8 frames of shape (batch, '
                             f'{", ".join(map(str, want))}), got {frames.dtype} '
                             f'{tuple(frames.shape)}')
    return self._call(state, frames)


def load(directory: str) -> ExportedModel | ExportedStream:
  """Reads an export written by `write`; returns a callable of clips (or, for a streaming step,
  of a state and frames). Raises NotFoundError / UserError naming the file that is missing or
  unreadable."""
  paths = {n: files.resolve(directory) / n for n in (SERIALIZED_FILE, SIGNATURE_FILE)}
  for path in paths.values():
    if not path.is_file():
      raise errors.NotFoundError(f'{path}: no such file; {directory} is not an export written '
                                 'by launch.py --mode=export')
  sig = files.read_json(paths[SIGNATURE_FILE])
  data = paths[SERIALIZED_FILE].read_bytes()
  try:
    exported = jax.export.deserialize(bytearray(data))
  except Exception as e:  # pylint: disable=broad-except
    raise errors.UserError(f'{paths[SERIALIZED_FILE]}: not a serialized jax.export module '
                           f'({type(e).__name__}: {e})') from None
  kind = ExportedStream if sig.get('kind') == STREAMING_STEP else ExportedModel
  return kind(exported=exported, signature=sig, directory=directory)


def main(config: ml_collections.ConfigDict, checkpoint: str, output: str,
         platforms: Sequence[str] = DEFAULT_PLATFORMS,
         streaming_step: bool = False) -> dict[str, Any]:
  """`--mode=export`: writes the checkpoint's inference function (or, `streaming_step`, the
  online model's streaming step) to `output`; returns its signature."""
  weights.check_new(output)  # Before loading the model.
  if streaming_step:
    streaming.check_causal(config)
  loaded = weights.load(checkpoint, config)
  sig = write(loaded, output, platforms, streaming_step)
  if streaming_step:
    shapes = (f'input a state of {len(sig["input"]["state"])} arrays and uint8 frames '
              f'{tuple(sig["input"]["frames"]["shape"])}')
  else:
    shapes = (f'input uint8 {tuple(sig["input"]["shape"])}, output float32 '
              f'{tuple(sig["output"]["shape"])}')
  print(f'exported {loaded.description} to {output}: {sig["bytes"] / 1e6:.1f} MB, {shapes}, '
        f'platforms {", ".join(sig["platforms"])}', flush=True)
  return sig
