"""Decoding and spatial transforms of a clip (paper 4.2; TSN/TSM's Group* transforms).

Geometry is defined, as in the paper, on frames whose short side is the run's `short_side`
(256), whatever size the frames were stored at (`to_short_side`, applied by training, evaluation,
predict and visualize alike):
  * a frame stored larger is first resized to `short_side` with area averaging (as the converter
    stores frames; a bilinear resize of the crop alone would alias when the frame is several times
    larger), so the boxes below are exact integers on it;
  * a frame stored smaller (e.g. Something-Something v1's 100-pixel frames, never upscaled by the
    converter) is not resized first: its crop box is the box on the frame at `short_side` (the
    "virtual" frame) scaled to its pixels, and the box is resized once, bilinearly, to the output
    size. A warning says so, once per process: such views are blurrier than the run's
    `short_side` promises.
On frames at `short_side` the result equals TSN/TSM's resize-then-crop-then-resize.

  train  multi-scale crop (TSM's GroupMultiScaleCrop, fix_crop): crop width and height are each
         one of `scales` x short side (sizes within 3 pixels of `crop_size` snap to it), with
         |index(width) - index(height)| <= `max_distort`; the box is placed at one of 5 positions
         (4 corners and centre; 13 with `more_fix_crop`, TSM's default) on a grid of quarter steps
         of the free space; resized to `crop_size`; then flipped horizontally with probability 1/2
         when flipping is enabled. Pair, position and flip are drawn once per clip.
  val    the centre `crop_size` square of the virtual frame (TSM's GroupScale + GroupCenterCrop).
  test   `num_crops` squares of side `short_side` (the whole short side): 1 = centre; 3 = left,
         centre, right (top, centre, bottom for portrait frames), as TSM's GroupFullResSample
         but with the third square flush with the far edge; each resized to `crop_size`.

Every frame of a clip gets the same box. JPEG decoding uses simplejpeg with `fastdct` (about 10%
faster than the exact IDCT, mean absolute difference about 1 grey level, below the JPEG error
itself) and exact chroma upsampling (`fastupsample` saves nothing measurable and differs by up to
~30 grey levels at colour edges). Resizing is OpenCV bilinear (half-pixel centres), about 5x faster
than PIL's here.
"""

import dataclasses
from typing import Sequence

from absl import logging
import cv2
import numpy as np
import simplejpeg

# Parallelism comes from grain's threads and worker processes; OpenCV's own threads only add
# contention on these small images (a 224x224 resize: 79 us with 1 thread, 91 us with 2, here).
cv2.setNumThreads(1)

# TSN/TSM scale jitter.
SCALES = (1.0, 0.875, 0.75, 0.66)
# Crop sizes within this many pixels of the output size snap to it (TSM).
_SNAP = 3


@dataclasses.dataclass(frozen=True)
class Box:
  """A crop rectangle in pixels of a stored frame: left, top, width, height."""
  x: int
  y: int
  w: int
  h: int


@dataclasses.dataclass(frozen=True)
class TrainCrop:
  """The random choices of one training clip, shared by all its frames."""
  size_index: int
  offset_index: int
  flip: bool


def decode(frames: Sequence[bytes], indices: Sequence[int]) -> list[np.ndarray]:
  """Returns the frames at `indices` as uint8 RGB arrays, decoding each distinct frame once.

  Only the sampled frames are read and decoded: a clip reads 8 of a video's frames, not all of
  them. Frames that read on demand (`frames.Frames`, anything with `take(indices)`) are read in
  one `take` of the distinct indices.
  """
  indices = [int(i) for i in indices]
  distinct = list(dict.fromkeys(indices))
  take = getattr(frames, 'take', None)
  data = take(distinct) if take is not None else [frames[i] for i in distinct]
  cache = {i: simplejpeg.decode_jpeg(d, colorspace='RGB', fastdct=True, fastupsample=False)
           for i, d in zip(distinct, data)}
  return [cache[i] for i in indices]


def output_size(height: int, width: int, short_side: int) -> tuple[int, int]:
  """Returns (height, width) scaled so the shorter side is `short_side`; unchanged if smaller.

  The one rule for the size of stored frames (the converter, predict) and of the frames views are
  cut from (`to_short_side`). Aspect ratio is kept, rounding the longer side to the nearest pixel.
  `short_side <= 0` keeps the size.
  """
  short = min(height, width)
  if short_side <= 0 or short <= short_side:
    return height, width
  scale = short_side / short
  if height <= width:
    return short_side, max(1, round(width * scale))
  return max(1, round(height * scale)), short_side


_warned_small = False


def to_short_side(images: Sequence[np.ndarray], short_side: int) -> list[np.ndarray]:
  """Returns the frames a view is cut from: those larger than `short_side` area-resized to it.

  Why: a view must be the same whatever size the frames were stored at, and equal to what the
  converter stores at `short_side` (area averaging), so that training, evaluation and predict
  see one image. Frames smaller than `short_side` are returned as they are (the boxes are scaled
  to them, see the module docstring) and logged once per process. A frame repeated in `images`
  (the same array) is resized once.
  """
  cache = {}
  out = []
  for image in images:
    key = id(image)
    if key not in cache:
      height, width = image.shape[:2]
      size = output_size(height, width, short_side)
      if size != (height, width):
        cache[key] = cv2.resize(image, (size[1], size[0]), interpolation=cv2.INTER_AREA)
      else:
        if min(height, width) < short_side:
          _warn_small(height, width, short_side)
        cache[key] = image
    out.append(cache[key])
  return out


def _warn_small(height: int, width: int, short_side: int) -> None:
  """Logs, once per process, that stored frames are smaller than the run's short side."""
  global _warned_small
  if _warned_small:
    return
  _warned_small = True
  logging.warning(
      'stored frames of %dx%d are smaller than config.data.short_side=%d: views are upscaled from '
      'them (the videos are that small, or were prepared at a smaller short side: prepare again '
      'with --config.data.short_side=%d to get more pixels; or run at '
      '--config.data.short_side=%d with a crop_size to match). Logged once per process.',
      height, width, short_side, short_side, min(height, width))


def _virtual_size(height: int, width: int, short_side: int) -> tuple[int, int, float]:
  """(height, width) of the frame rescaled to `short_side`, and stored pixels per virtual pixel."""
  short = min(height, width)
  if short < 1:
    raise ValueError(f'Empty frame {height}x{width}.')
  factor = short / short_side
  if height <= width:
    return short_side, int(round(width / factor)), factor
  return int(round(height / factor)), short_side, factor


def _to_stored(x: float, y: float, w: float, h: float, factor: float, height: int,
               width: int) -> Box:
  """Maps a virtual box to stored pixels: sizes and corner rounded, kept inside the frame."""
  if factor == 1.0:
    return Box(int(x), int(y), int(w), int(h))
  w_s = min(max(int(round(w * factor)), 1), width)
  h_s = min(max(int(round(h * factor)), 1), height)
  x_s = min(max(int(round(x * factor)), 0), width - w_s)
  y_s = min(max(int(round(y * factor)), 0), height - h_s)
  return Box(x_s, y_s, w_s, h_s)


def crop_sizes(short_side: int, crop_size: int, scales: Sequence[float] = SCALES,
               max_distort: int = 1) -> list[tuple[int, int]]:
  """Returns the (width, height) pairs of the multi-scale crop, in virtual pixels.

  Width and height jitter independently (aspect-ratio jitter) up to `max_distort` scale steps apart.
  """
  sizes = [int(short_side * s) for s in scales]
  sizes = [crop_size if abs(s - crop_size) < _SNAP else s for s in sizes]
  return [(w, h) for i, h in enumerate(sizes) for j, w in enumerate(sizes)
          if abs(i - j) <= max_distort]


def crop_offsets(width: int, height: int, crop_w: int, crop_h: int,
                 more_fix_crop: bool = False) -> list[tuple[int, int]]:
  """Returns the candidate (x, y) corners of a crop: 4 corners and centre (13 with more_fix_crop).

  Positions lie on a grid of quarter steps of the free space, as TSM's `_sample_fix_offset`.
  """
  w_step = (width - crop_w) // 4
  h_step = (height - crop_h) // 4
  offsets = [(0, 0), (4 * w_step, 0), (0, 4 * h_step), (4 * w_step, 4 * h_step),
             (2 * w_step, 2 * h_step)]
  if more_fix_crop:
    offsets += [(0, 2 * h_step), (4 * w_step, 2 * h_step), (2 * w_step, 4 * h_step),
                (2 * w_step, 0), (1 * w_step, 1 * h_step), (3 * w_step, 1 * h_step),
                (1 * w_step, 3 * h_step), (3 * w_step, 3 * h_step)]
  return offsets


def num_offsets(more_fix_crop: bool) -> int:
  """Returns how many crop positions the multi-scale crop chooses from."""
  return 13 if more_fix_crop else 5


def sample_train_crop(rng: np.random.Generator, *, num_sizes: int, more_fix_crop: bool,
                      random_flip: bool) -> TrainCrop:
  """Draws a training clip's crop size, position and flip (size, then position, then flip)."""
  size_index = int(rng.integers(num_sizes))
  offset_index = int(rng.integers(num_offsets(more_fix_crop)))
  flip = bool(rng.random() < 0.5) if random_flip else False
  return TrainCrop(size_index, offset_index, flip)


def train_box(height: int, width: int, crop: TrainCrop, *, short_side: int, crop_size: int,
              scales: Sequence[float] = SCALES, max_distort: int = 1,
              more_fix_crop: bool = False) -> Box:
  """Returns the multi-scale crop box chosen by `crop` on a stored frame of this size."""
  vh, vw, factor = _virtual_size(height, width, short_side)
  crop_w, crop_h = crop_sizes(short_side, crop_size, scales, max_distort)[crop.size_index]
  x, y = crop_offsets(vw, vh, crop_w, crop_h, more_fix_crop)[crop.offset_index]
  return _to_stored(x, y, crop_w, crop_h, factor, height, width)


def center_box(height: int, width: int, *, short_side: int, crop_size: int) -> Box:
  """Returns the validation box: the centre `crop_size` square of the frame at `short_side`."""
  vh, vw, factor = _virtual_size(height, width, short_side)
  side = min(crop_size, vh, vw)
  x = int(round((vw - side) / 2.0))
  y = int(round((vh - side) / 2.0))
  return _to_stored(x, y, side, side, factor, height, width)


def test_boxes(height: int, width: int, *, num_crops: int) -> list[Box]:
  """Returns the test boxes: `num_crops` (1 or 3) full-short-side squares along the long side.

  1: centre. 3: left/top, centre, right/bottom, covering the whole frame (paper 4.2).
  """
  side = min(height, width)
  free = max(height, width) - side
  if num_crops == 1:
    starts = [free // 2]
  elif num_crops == 3:
    starts = [0, free // 2, free]
  else:
    raise ValueError(f'num_crops must be 1 or 3, got {num_crops}.')
  if width >= height:
    return [Box(s, 0, side, side) for s in starts]
  return [Box(0, s, side, side) for s in starts]


def crop_resize(images: Sequence[np.ndarray], boxes: Sequence[Box], size: int,
                flip: bool = False) -> np.ndarray:
  """Crops `boxes[t]` out of `images[t]`, resizes to `size` x `size`, optionally mirrors.

  Returns the clip as one uint8 `(T, size, size, 3)` array, written in place frame by frame.
  """
  out = np.empty((len(images), size, size, 3), np.uint8)
  for t, (image, box) in enumerate(zip(images, boxes)):
    region = image[box.y:box.y + box.h, box.x:box.x + box.w]
    if region.shape[0] == size and region.shape[1] == size:
      out[t] = region
    else:
      cv2.resize(region, (size, size), dst=out[t], interpolation=cv2.INTER_LINEAR)
    if flip:
      cv2.flip(out[t], 1, dst=out[t])
  return out


def boxes_for(images: Sequence[np.ndarray], box_fn) -> list[Box]:
  """Returns `box_fn(height, width)` for every image, computed once per distinct frame size."""
  cache = {}
  boxes = []
  for image in images:
    shape = image.shape[:2]
    if shape not in cache:
      cache[shape] = box_fn(*shape)
    boxes.append(cache[shape])
  return boxes
