"""Video and JPEG-frame decoding into JPEG frames at a given short side.

Three sources give the same output, a list of JPEG-encoded RGB frames whose shorter side is at most
`short_side` (never upscaled):
  * a video file, decoded with PyAV (frames are counted by decoding: webm/mkv report 0 in metadata);
  * a folder of JPEG frames (`00001.jpg ...`, name order);
  * JPEG frames already in memory (a TFRecord record).
`sampled_video_to_jpegs` gives the frames of a video file that a clip needs, byte for byte those of
`video_to_jpegs`, without keeping the others (prediction on files that were never prepared).
Frames of a video file are stored as a player shows them (`display_transform`): the container's
display matrix (phones record portrait video as landscape frames plus a 90-degree rotation) or,
without one, its legacy `rotate` tag is applied, and non-square pixels (a sample aspect ratio other
than 1, e.g. 128:117) are resized to square ones, before the short side is measured.
JPEG frames already at or under the short side are kept byte for byte; larger ones are decoded with
simplejpeg (scaled in the DCT where it can), resized with swscale's area filter and re-encoded.

Anything that makes a source unusable raises `VideoError` with a short reason; the converter
quarantines that video and carries on.
"""

import dataclasses
import fractions
import math
import os
import struct
from typing import Callable, Iterable, Iterator

import av
from av.sidedata import sidedata
import numpy as np
import simplejpeg

from input_pipeline import errors
from input_pipeline import transforms


# A video is called truncated when it decodes to fewer than this fraction of the frames its
# container announces (metadata frame count, or duration x rate). Real files can be a frame or two
# short of their metadata, and an audio track can make the container slightly longer than the video.
MIN_FRAME_FRACTION = 0.9
_INTERPOLATION = 'AREA'
# File name endings of the video containers and JPEG frames the project reads.
VIDEO_EXTENSIONS = ('.mp4', '.webm', '.avi', '.mkv', '.mov', '.m4v', '.mpg', '.mpeg', '.flv',
                    '.wmv', '.3gp', '.ogv')
JPEG_EXTENSIONS = ('.jpg', '.jpeg')


class VideoError(Exception):
  """A video (or frame folder, or record) cannot be used; `str(e)` is the reason for the report."""


def stored_short_side(data) -> int:
  """The short side frames are stored at: `data.stored_short_side`, or `data.short_side` if 0.

  One definition for prepare (the frames it writes) and predict/visualize (the frames of a raw
  video they build views from, so that those views equal evaluation's of the prepared video).
  Raises a ConfigError for a negative or non-integer value.
  """
  value = data.stored_short_side
  if not isinstance(value, int) or isinstance(value, bool) or value < 0:
    raise errors.bad_field('data.stored_short_side', value,
                           'must be 0 (frames stored at data.short_side) or the short side the '
                           'data was prepared at')
  return value or int(data.short_side)


@dataclasses.dataclass(frozen=True)
class Display:
  """How a decoded frame is turned into the image a player shows: transpose (swap rows and
  columns), then mirror rows (`flip_rows`) and columns (`flip_cols`); and the sample aspect ratio
  (pixel width / height) that the width is scaled by before that."""
  transpose: bool = False
  flip_rows: bool = False
  flip_cols: bool = False
  pixel_aspect: fractions.Fraction = fractions.Fraction(1)

  def display_size(self, height: int, width: int) -> tuple[int, int]:
    """(height, width) of a decoded `height` x `width` frame once shown: square pixels, oriented."""
    width = max(1, round(width * self.pixel_aspect))
    return (width, height) if self.transpose else (height, width)

  def orient(self, rgb: np.ndarray) -> np.ndarray:
    """Applies the transpose and the mirrors to an (H, W, C) array (a view, no copy)."""
    if self.transpose:
      rgb = rgb.transpose(1, 0, 2)
    if self.flip_rows:
      rgb = rgb[::-1]
    if self.flip_cols:
      rgb = rgb[:, ::-1]
    return rgb


# Orientation of a legacy `rotate` tag (degrees clockwise, as players read it).
_ROTATE_TAG = {0: Display(), 90: Display(transpose=True, flip_cols=True),
               180: Display(flip_rows=True, flip_cols=True), 270: Display(transpose=True,
                                                                          flip_rows=True)}


def display_from_matrix(matrix: Iterable[int]) -> Display:
  """The orientation of FFmpeg's 3x3 display matrix (9 int32, 16.16 fixed point, row-major).

  The matrix maps a stored pixel (x, y) to the displayed x' = m0 x + m3 y, y' = m1 x + m4 y (plus
  a translation); any angle snaps to the nearest multiple of 90 degrees, mirrors included.
  """
  m = list(matrix)
  a, b, c, d = m[0], m[1], m[3], m[4]
  if abs(a) + abs(d) >= abs(b) + abs(c):
    return Display(flip_cols=a < 0, flip_rows=d < 0)
  # x' follows y and y' follows x: transpose, then mirror by the signs.
  return Display(transpose=True, flip_rows=b < 0, flip_cols=c < 0)


def display_transform(frame, stream) -> Display:
  """How `frame` of `stream` is shown: its display matrix (side data), else the stream's legacy
  `rotate` tag; and the stream's sample aspect ratio.

  Why: a phone's portrait video is stored as landscape frames plus this metadata, and DV or
  anamorphic video as non-square pixels; a player applies both, and the model must see what the
  labeller saw (a sideways video is another video to it).
  """
  display = Display()
  data = frame.side_data.get(sidedata.Type.DISPLAYMATRIX)
  if data is not None and len(bytes(data)) >= 36:
    display = display_from_matrix(struct.unpack('<9i', bytes(data)[:36]))
  else:
    tag = next((v for k, v in stream.metadata.items() if k.lower() == 'rotate'), None)
    try:
      display = _ROTATE_TAG.get(int(float(tag)) % 360, display) if tag is not None else display
    except ValueError:
      pass  # An unreadable tag: shown as stored, as players do.
  sar = stream.sample_aspect_ratio
  if sar and sar > 0 and sar != 1:
    display = dataclasses.replace(display, pixel_aspect=fractions.Fraction(sar))
  return display


def _resize_rgb(rgb: np.ndarray, height: int, width: int) -> np.ndarray:
  if rgb.shape[:2] == (height, width):
    return rgb
  frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format='rgb24')
  return frame.to_ndarray(width=width, height=height, format='rgb24', interpolation=_INTERPOLATION)


def encode(rgb: np.ndarray, quality: int) -> bytes:
  """Encodes an (H, W, 3) uint8 RGB array as JPEG (4:2:0, as most video is)."""
  return simplejpeg.encode_jpeg(np.ascontiguousarray(rgb), quality=quality, colorspace='RGB',
                                colorsubsampling='420')


def _check_file(path: str) -> None:
  if not os.path.exists(path):
    raise VideoError('missing: file not found')
  if os.path.isdir(path):
    raise VideoError('not a video: a folder')
  if os.path.getsize(path) == 0:
    raise VideoError('empty file (0 bytes)')


def _expected_frames(container, stream) -> int:
  """Frames the container announces (metadata count, else duration x rate); 0 if unknown."""
  if stream.frames:
    return int(stream.frames)
  rate = stream.average_rate or stream.guessed_rate
  if stream.duration and stream.time_base and rate:
    return int(round(float(stream.duration * stream.time_base * rate)))
  if container.duration and rate:
    return int(round(container.duration / av.time_base * float(rate)))
  return 0


def _fps(stream) -> float:
  rate = stream.average_rate or stream.guessed_rate
  return float(rate) if isinstance(rate, (fractions.Fraction, int, float)) and rate else 0.0


def decoded_frames(path: str, convert: Callable, threads: int = 1) -> Iterator:
  """Yields `convert(frame, stream)` for every frame of a video file, in order, one at a time (a
  long video is never held whole); after the last one, raises VideoError for a frameless,
  truncated or corrupt file, as `video_to_jpegs` does.

  `threads` is the decoder's thread count: 1 when there is a worker process per core (threads
  would only compete), more when fewer workers than cores run.
  """
  with _open(path) as container:
    stream = _video_stream(container, threads)
    expected = _expected_frames(container, stream)
    count, error = 0, None
    try:
      for frame in container.decode(stream):
        yield convert(frame, stream)
        count += 1
    except (av.FFmpegError, OSError, ValueError) as e:
      error = e
  _check_decoded(count, expected, error)


def _rate(value: float) -> fractions.Fraction:
  """A frame rate as an exact fraction (29.97 and 30000/1001 alike: 6 significant decimals)."""
  return fractions.Fraction(value).limit_denominator(1_000_000)


def keeps_frame(i: int, fps: float, max_fps: float) -> bool:
  """Whether frame `i` of a video at `fps` is stored under the cap `max_fps` (0: no cap).

  The kept frames are the first at or after each multiple of `1 / max_fps` seconds: frame `i` is
  kept when `floor(i * max_fps / fps)` steps up at it (frame 0 always). 30 fps capped at 10 keeps
  0, 3, 6, ...; 25 fps at 10 keeps 0, 3, 5, 8, 10, ... No cap when `fps` is unknown (0) or at most
  `max_fps`.
  """
  if not max_fps or not fps or fps <= max_fps or i == 0:
    return True
  ratio = _rate(max_fps) / _rate(fps)
  return math.floor(i * ratio) != math.floor((i - 1) * ratio)


def capped_indices(num_frames: int, fps: float, max_fps: float) -> list[int]:
  """The frames of an `num_frames`-frame video at `fps` stored under `max_fps` (`keeps_frame`)."""
  return [i for i in range(num_frames) if keeps_frame(i, fps, max_fps)]


def capped_fps(fps: float, max_fps: float) -> float:
  """The frame rate recorded for a video at `fps` stored under `max_fps`: the lower of the two
  (`fps` when there is no cap or `fps` is unknown)."""
  return float(max_fps) if max_fps and fps and fps > max_fps else float(fps)


def cap_frames(frames: list, fps: float, max_fps: float) -> tuple[list, float]:
  """`frames` (and `fps`) as stored under the cap `max_fps`: (kept frames, recorded fps)."""
  if not max_fps or not fps or fps <= max_fps:
    return frames, fps
  return [frames[i] for i in capped_indices(len(frames), fps, max_fps)], capped_fps(fps, max_fps)


def video_to_jpegs(path: str, short_side: int, quality: int, threads: int = 1,
                   max_fps: float = 0.0) -> tuple[list[bytes], float]:
  """Decodes every frame of a video file; returns (JPEG frames at `short_side`, their fps).

  With `max_fps` (0: off) only the frames `keeps_frame` keeps are encoded, and the fps returned is
  `capped_fps`. Raises VideoError for missing, empty, unreadable, frameless, truncated or corrupt
  files.
  """
  fps, position = [], [0]

  def convert(frame, stream):
    if not fps:
      fps.append(_fps(stream))
    i, position[0] = position[0], position[0] + 1
    if not keeps_frame(i, fps[0], max_fps):
      return None
    return _frame_to_jpeg(frame, stream, short_side, quality)
  frames = [f for f in decoded_frames(path, convert, threads) if f is not None]
  return frames, capped_fps(fps[0], max_fps)


class SampledFrames:
  """Some JPEG frames of a video of `len()` frames: indexable like the full list, at the kept
  indices only (the others raise KeyError naming what was kept)."""

  def __init__(self, num_frames: int, frames: dict[int, bytes]):
    self._num_frames = num_frames
    self._frames = frames

  def __len__(self) -> int:
    return self._num_frames

  def __getitem__(self, index: int) -> bytes:
    try:
      return self._frames[int(index)]
    except KeyError:
      raise KeyError(f'frame {index} of {self._num_frames} was not decoded (kept: '
                     f'{sorted(self._frames)})') from None


def sampled_video_to_jpegs(path: str, short_side: int, quality: int,
                           select: Callable[[int], Iterable[int]],
                           threads: int = 1, max_fps: float = 0.0) -> tuple[SampledFrames, float]:
  """Decodes a video file, keeping only the frames `select(num_frames)` names; returns them and
  their fps.

  The kept frames, the frame count and the errors are those of `video_to_jpegs` with the same
  `max_fps` (a clip built from them equals one built from the prepared dataset: frame numbers
  and the count are those of the stored frames), but memory holds only the kept frames: a long
  video is not held whole. The count is first read from the container's packets (no decoding);
  where decoding gives another count, the video is decoded again for the true one. Raises
  VideoError as `video_to_jpegs` does.
  """
  guess = _count_packets(path)
  kept, count, fps = _decode_selected(path, short_side, quality, select, guess, threads, max_fps)
  if count != guess:
    kept, count, fps = _decode_selected(path, short_side, quality, select, count, threads,
                                        max_fps)
  return SampledFrames(len(capped_indices(count, fps, max_fps)), kept), capped_fps(fps, max_fps)


def _open(path: str):
  """Opens a video file for reading; raises VideoError if it is missing, empty or unreadable."""
  _check_file(path)
  try:
    return av.open(path, metadata_errors='ignore')
  except (av.FFmpegError, OSError, UnicodeDecodeError) as e:
    raise VideoError(f'not a readable video: {_reason(e)}') from None


def _video_stream(container, threads: int):
  if not container.streams.video:
    raise VideoError('no video stream')
  stream = container.streams.video[0]
  stream.codec_context.thread_count = max(1, threads)
  if threads > 1:
    stream.thread_type = 'AUTO'
  return stream


def frame_to_rgb(frame, stream, short_side: int) -> np.ndarray:
  """A decoded frame as a player shows it (`display_transform`), short side at most `short_side`:
  uint8 (H, W, 3) RGB, resized once (swscale's area filter) and then oriented."""
  display = display_transform(frame, stream)
  height, width = transforms.output_size(*display.display_size(frame.height, frame.width), short_side)
  if display.transpose:
    height, width = width, height
  rgb = frame.to_ndarray(width=width, height=height, format='rgb24', interpolation=_INTERPOLATION)
  return display.orient(rgb)


def _frame_to_jpeg(frame, stream, short_side: int, quality: int) -> bytes:
  return encode(frame_to_rgb(frame, stream, short_side), quality)


def _check_decoded(count: int, expected: int, error: BaseException | None) -> None:
  """Raises VideoError for a video that decoded to no frames, too few, or stopped on an error."""
  if not count:
    raise VideoError('no frames decoded' + (f' ({_reason(error)})' if error else ''))
  if expected and count < MIN_FRAME_FRACTION * expected:
    raise VideoError(f'truncated: decoded {count} of the {expected} frames the container '
                     'announces' + (f' ({_reason(error)})' if error else ''))
  if error is not None and not expected:
    raise VideoError(f'corrupt: decoding stopped after {count} frames ({_reason(error)})')


def _count_packets(path: str) -> int:
  """The video stream's non-empty packets (one per frame for nearly every codec); no decoding."""
  with _open(path) as container:
    stream = _video_stream(container, 1)
    count = 0
    try:
      for packet in container.demux(stream):
        count += packet.size > 0
    except (av.FFmpegError, OSError, ValueError):
      pass  # Decoding meets the same error and reports it.
  return count


def _decode_selected(path: str, short_side: int, quality: int,
                     select: Callable[[int], Iterable[int]], assumed: int,
                     threads: int, max_fps: float = 0.0) -> tuple[dict[int, bytes], int, float]:
  """Decodes every frame, keeping as JPEG those `select(stored count)` names (numbered among the
  frames `max_fps` stores, of `assumed` decoded); returns them by stored number, the decoded
  count and the source fps, after `video_to_jpegs`'s checks."""
  with _open(path) as container:
    stream = _video_stream(container, threads)
    expected = _expected_frames(container, stream)
    fps = _fps(stream)
    stored = capped_indices(assumed, fps, max_fps)
    wanted = {stored[int(i)]: int(i) for i in select(len(stored))} if stored else {}
    kept, count, error = {}, 0, None
    try:
      for frame in container.decode(stream):
        if count in wanted:
          kept[wanted[count]] = _frame_to_jpeg(frame, stream, short_side, quality)
        count += 1
    except (av.FFmpegError, OSError, ValueError) as e:
      error = e
  _check_decoded(count, expected, error)
  return kept, count, fps


def jpegs_to_jpegs(jpegs: list[bytes], short_side: int, quality: int,
                   names: list[str] | None = None) -> list[bytes]:
  """Returns JPEG frames at `short_side`: those already small enough unchanged, others re-encoded.

  `names` (file names, for error messages) default to frame numbers. Raises VideoError on the first
  frame that is not a JPEG.
  """
  out = []
  for i, data in enumerate(jpegs):
    name = names[i] if names else f'frame {i}'
    try:
      height, width, _, _ = simplejpeg.decode_jpeg_header(data)
    except ValueError as e:
      raise VideoError(f'{name}: not a JPEG ({e})') from None
    new_h, new_w = transforms.output_size(height, width, short_side)
    if (new_h, new_w) == (height, width):
      out.append(bytes(data))
      continue
    try:
      rgb = simplejpeg.decode_jpeg(data, colorspace='RGB', min_height=new_h, min_width=new_w)
    except ValueError as e:
      raise VideoError(f'{name}: corrupt JPEG ({e})') from None
    out.append(encode(_resize_rgb(rgb, new_h, new_w), quality))
  return out


def frame_folder_to_jpegs(folder: str, short_side: int, quality: int) -> list[bytes]:
  """Reads a folder of JPEG frames in name order; returns JPEG frames at `short_side`.

  Raises VideoError if the folder is missing, holds no JPEG, or holds an unreadable frame.
  """
  if not os.path.isdir(folder):
    raise VideoError('missing: frame folder not found' if not os.path.exists(folder)
                     else 'not a frame folder: a file')
  names = sorted(n for n in os.listdir(folder) if n.lower().endswith(JPEG_EXTENSIONS))
  if not names:
    raise VideoError('no frames: the folder holds no .jpg file')
  jpegs = []
  for n in names:
    with open(os.path.join(folder, n), 'rb') as f:
      data = f.read()
    if not data:
      raise VideoError(f'{n}: empty file (0 bytes)')
    jpegs.append(data)
  return jpegs_to_jpegs(jpegs, short_side, quality, names)


def _reason(error: BaseException | None) -> str:
  if error is None:
    return ''
  if isinstance(error, av.FFmpegError) and getattr(error, 'strerror', None):
    return error.strerror
  return f'{type(error).__name__}: {error}'
