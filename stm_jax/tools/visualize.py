"""`launch.py --mode=visualize`: the paper's Figure 1 for one video, as a PNG.

Rows, one column per frame of the video's val-protocol clip (T frames at the segment centres,
short side and centre crop from the checkpoint's config, the clip `--mode=predict` scores):
  1. the input frames;
  2. the input features of stage 2's first block (`conv2_1`, module `layer1_0`);
  3. that block's CSTM output (`a = ReLU(BN(conv3x3(channelwise_temporal_conv(u))))`);
  4. that block's CMM output (`b = conv1x1(m)`, the motion branch), both before fusion. Its last
     frame is zero by construction (`m_{T-1} = 0`, docs/design.md section 1), not a lack of motion.
Each feature row is the channel average per frame, drawn as a heat map. The colour scale is per
row: shared by the T frames of a row (so changes over time are comparable) and set by that row's
min/max (the three kinds of features differ in range by orders of magnitude); each row has its
own colour bar. Rows a model lacks (TSN / TSM: no CSTM or CMM; `cstm`: no CMM; `cmm`: no CSTM; or
stage 2 not in `model.stages`) are left out and named in the figure and on stdout. The title gives
the predicted class and its probability.

The maps come from the `intermediates` collection that `resnet.Bottleneck` sows into
(`block_input`, `cstm`, `cmm`; see its docstring).
"""

import functools
import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from input_pipeline import errors
from input_pipeline import files
from input_pipeline import pipeline
from input_pipeline import protocols
from input_pipeline import video_clips
from stm_jax.core import figures
from stm_jax.core import weights

BLOCK = 'layer1_0'  # Stage 2's (conv2_x) first block, as the paper's Figure 1.
# (name sown by the block, row label) in figure order.
ROWS = (('block_input', 'conv2_1 input'), ('cstm', 'CSTM output'), ('cmm', 'CMM output'))
SUFFIX = '_stm.png'
COLORMAP = 'jet'


class VisualizeError(errors.UserError):
  """A video or model that cannot be visualised; the message names it and says why."""


def capture(model, variables: Any, clips: Any) -> tuple[np.ndarray, dict[str, np.ndarray]]:
  """Runs the model on one clip `(1, T, H, W, 3)` in inference mode and returns its logits
  `(num_classes,)` and the channel-averaged stage-2 maps (see `stage2_maps`), from one pass."""
  clips = np.asarray(clips)
  if clips.ndim != 5 or clips.shape[0] != 1:
    raise ValueError(f'expected one clip of shape (1, T, H, W, 3), got {clips.shape}')
  logits, state = _apply(model, variables, clips)
  block = state.get('intermediates', {}).get(BLOCK)
  if block is None:
    raise VisualizeError(f'the model has no block {BLOCK!r} (stage 2, first block)')
  frames = clips.shape[1]
  maps = {}
  for name, _ in ROWS:
    if name in block:
      x = block[name][0]  # sow keeps a tuple of the values sown; the block sows each once
      maps[name] = np.asarray(jnp.mean(x.astype(jnp.float32), axis=-1)).reshape(
          (frames,) + x.shape[1:3])
  return np.asarray(logits, np.float32)[0], maps


@functools.partial(jax.jit, static_argnums=0)
def _apply(model, variables, clips):
  # Linen modules hash by their fields, so a model is compiled once per process.
  return model.apply(variables, clips, train=False, mutable=['intermediates'])


def stage2_maps(model, variables: Any, clips: Any) -> dict[str, np.ndarray]:
  """The Figure 1 feature maps of one clip `(1, T, H, W, 3)`: `block_input`, and `cstm` / `cmm`
  where stage 2's first block has them, each the channel average per frame, `(T, H', W')`
  float32. Missing keys mean the model has no such module there."""
  return capture(model, variables, clips)[1]


def absent_rows(maps: dict[str, np.ndarray]) -> list[str]:
  """The row labels of the Figure 1 rows the model does not have (no CSTM / CMM there)."""
  return [label for name, label in ROWS if name not in maps]


def default_output(input_path: str) -> str:
  """`<video stem>_stm.png` in the current directory (a frame folder's name is its stem)."""
  stem = os.path.splitext(os.path.basename(os.path.normpath(input_path)))[0]
  return os.path.abspath(stem + SUFFIX)


def plot(path: str, clip: np.ndarray, maps: dict[str, np.ndarray], title: str,
         note: str = '') -> None:
  """Saves the figure: the frames of `clip` `(T, H, W, 3)` uint8, then one heat-map row per map
  present (in ROWS order, colour scale per row with its colour bar), `note` under the title."""
  rows = [(label, maps[name]) for name, label in ROWS if name in maps]
  frames = clip.shape[0]
  fig = figures.new_figure((1.6 * frames + 1.2, 1.7 * (len(rows) + 1) + 0.6),
                           layout='constrained')
  axes = np.asarray(fig.subplots(len(rows) + 1, frames, squeeze=False))
  for t in range(frames):
    axes[0, t].imshow(clip[t])
    axes[0, t].set_title(f't={t}', fontsize=8)
  axes[0, 0].set_ylabel('input frames', fontsize=8)
  for r, (label, values) in enumerate(rows, 1):
    vmin, vmax = float(values.min()), float(values.max())
    if vmax <= vmin:  # a constant row (e.g. all zero): any non-empty range draws it flat
      vmax = vmin + 1e-6
    for t in range(frames):
      image = axes[r, t].imshow(values[t], cmap=COLORMAP, vmin=vmin, vmax=vmax,
                                interpolation='bilinear')
    axes[r, 0].set_ylabel(label, fontsize=8)
    fig.colorbar(image, ax=list(axes[r]), shrink=0.9, pad=0.01)
  for ax in axes.ravel():
    ax.set_xticks([])
    ax.set_yticks([])
  fig.suptitle(title + (f'\n{note}' if note else ''), fontsize=10)
  figures.save_png(fig, path)


def main(config: ml_collections.ConfigDict, checkpoint: str, input_path: str,
         output: str | None = None) -> str:
  """`--mode=visualize`: writes the Figure 1 PNG of `input_path` (a video file or JPEG frame
  folder) under the checkpoint's model to `output` (default `<video stem>_stm.png` here);
  prints and returns its path."""
  if files.is_remote(input_path):
    raise VisualizeError(f'{input_path}: visualize reads a local video; copy it here first')
  if not os.path.exists(input_path):
    raise errors.NotFoundError(f'{input_path}: no such file or folder')
  if os.path.isdir(input_path) and not video_clips.is_frame_folder(input_path):
    raise VisualizeError(f'{input_path}: a folder without JPEG frames; visualize takes one video '
                         '(a file or a folder of its frames)')
  loaded = weights.load(checkpoint, config)
  spec = pipeline.ClipSpec.from_config(loaded.config)
  try:
    frames = video_clips.read_frames(input_path, spec, protocols.VAL,
                                     loaded.config.data.jpeg_quality, min(8, os.cpu_count() or 1))
    clips = video_clips.views(frames, spec, protocols.VAL)
  except video_clips.VideoError as e:
    raise VisualizeError(f'{input_path}: {e}') from None

  logits, maps = capture(loaded.model, loaded.variables, clips)
  probs = np.asarray(jax.nn.softmax(logits.astype(np.float64)))
  best = int(np.argmax(probs))
  name = loaded.class_names[best]
  m = loaded.config.model
  missing = absent_rows(maps)
  note = ''
  if missing:
    note = (f'absent in this model (temporal_module={m.temporal_module!r}, '
            f'stages={tuple(m.stages)}): {", ".join(missing)}')
  title = (f'{os.path.basename(os.path.normpath(input_path))}: {name} ({100 * probs[best]:.1f}%)'
           f'  |  {m.temporal_module}, {spec.num_frames} x {spec.crop_size}px')

  path = os.fspath(files.resolve(output)) if output else default_output(input_path)
  files.resolve(path).parent.mkdir(parents=True, exist_ok=True)
  plot(path, clips[0], maps, title, note)
  print(f'model: {loaded.description}', flush=True)
  print(f'{input_path} ({len(frames)} frames): {name} {100 * probs[best]:.2f}%', flush=True)
  if missing:
    print(f'rows {note}', flush=True)
  print(f'wrote {path}', flush=True)
  return path
