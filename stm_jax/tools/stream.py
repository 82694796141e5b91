"""`launch.py --mode=stream`: the online model on a video as it arrives, one frame at a time.

The checkpoint must be of the causal model (`config.model.causal=True`, models/streaming.py). The
input is a video file or a V4L2 capture device (`/dev/video<N>`, Linux). Frames are taken at the
rate the model saw in training clips: `T / --window_s` per second (the tiny recipe's 4 frames and
the default 2 s window: 2 a second; Something-Something's 8: 4), the first frame at or after each
tick of that clock; the others are decoded and dropped. Each frame taken is cut as the val
protocol cuts a clip's frames (stored at the run's short side and JPEG quality as prepare stores
frames, resized to `short_side`, centre crop: `input_pipeline/video_clips.py`) and fed to the
jitted streaming step, which returns the frame's logits and the running clip score over the last
T frames (about `--window_s` seconds of video).

One line is printed per frame taken: its time in the video, the running score's top class and
probability, the frame's own top class, and the latency of the step (frame in to logits on the
host). At the end: frames, the latency per frame (step and preprocessing: median, 90th
percentile, max) and the frames per second the whole loop sustained. A file is read as fast as
it decodes, or at its own speed with `--realtime` (each frame not handled before its time in the
video; what a camera would give). The step is compiled before the first frame, so the latencies
are those of a running stream.
"""

import dataclasses
import math
import os
import sys
import time
from typing import Callable, Iterator

import av
import jax
import ml_collections
import numpy as np

from input_pipeline import errors
from input_pipeline import files
from input_pipeline import pipeline
from input_pipeline import protocols
from input_pipeline import video
from input_pipeline import video_clips
from stm_jax.core import weights
from stm_jax.models import streaming
from stm_jax.tools import timeline

DEVICE_PREFIX = '/dev/video'


class StreamError(errors.UserError):
  """An input or flag a stream cannot run on; the message names it."""


@dataclasses.dataclass
class StreamedFrame:
  """One frame taken from the input: its time, the scores after it, and what it cost."""
  index: int  # Frame number in the input.
  time_s: float
  frame_probabilities: np.ndarray  # This frame's own softmax, float32.
  clip_probabilities: np.ndarray  # The running clip score's softmax, float32.
  step_ms: float  # Frame on the host to logits on the host (the jitted step).
  preprocess_ms: float  # Decoded frame to the model's uint8 input.


@dataclasses.dataclass
class StreamReport:
  """What a stream did: every frame taken, the wall time of the loop, the compile time."""
  frames: list[StreamedFrame]
  decoded: int
  wall_s: float
  compile_s: float

  def latency(self, field: str) -> tuple[float, float, float]:
    """(median, 90th percentile, max) of a per-frame latency field, in ms."""
    values = np.array([getattr(f, field) for f in self.frames], np.float64)
    return (float(np.median(values)), float(np.percentile(values, 90)), float(values.max()))

  def frames_per_s(self) -> float:
    """Frames taken per second of the whole loop (decode, preprocessing, step, printing)."""
    return len(self.frames) / self.wall_s if self.wall_s > 0 else 0.0


def check_input(input_path: str, window_s: float) -> None:
  """Raises a StreamError for an input that is not a local video file or capture device, or a
  window that is not a positive number of seconds, before anything is loaded."""
  timeline.check_flags(window_s, timeline.STRIDE_S)
  if files.is_remote(input_path):
    raise StreamError(f'{input_path}: a stream reads a local video file or a capture device; copy '
                      'the video here first (e.g. gcloud storage cp)')
  if input_path.startswith(DEVICE_PREFIX):
    if not os.path.exists(input_path):
      raise StreamError(f'{input_path}: no such capture device (ls /dev/video* lists them)')
    return
  if not os.path.exists(input_path):
    raise StreamError(f'{input_path}: no such file')
  if os.path.isdir(input_path):
    raise StreamError(f'{input_path}: a folder; --mode=stream takes one video file or a capture '
                      'device (/dev/video<N>)')


def _decoded(input_path: str, threads: int) -> Iterator[tuple[float, av.VideoFrame, object]]:
  """Yields (time in seconds, frame, stream) for every frame of a file or capture device."""
  if not input_path.startswith(DEVICE_PREFIX):
    index = 0
    for frame, stream in video.decoded_frames(input_path, lambda f, s: (f, s), threads):
      if frame.time is not None:
        yield frame.time, frame, stream
      else:  # No timestamps: frame number over the stream's rate.
        yield index / float(stream.average_rate or stream.guessed_rate or 25), frame, stream
      index += 1
    return
  try:
    container = av.open(input_path, format='v4l2')
  except (av.FFmpegError, OSError) as e:
    raise StreamError(f'{input_path}: cannot open the capture device ({e})') from None
  with container:
    stream = container.streams.video[0]
    start = None
    for frame in container.decode(stream):
      now = frame.time if frame.time is not None else time.monotonic()
      start = now if start is None else start
      yield now - start, frame, stream


def stream_frames(input_path: str, step_fn: Callable, initial_state, preprocess: Callable, *,
                  rate: float, realtime: bool = False, threads: int = 1,
                  on_frame: Callable[[StreamedFrame], None] = lambda f: None) -> StreamReport:
  """Feeds the frames of `input_path` taken at `rate` per second to `step_fn(state, frame)` ->
  (frame logits, clip logits, state), one at a time; returns the report.

  `preprocess(frame, stream)` makes the step's uint8 input `(1, crop, crop, 3)`. Raises
  VideoError if the file is unusable."""
  state = initial_state
  taken, decoded = [], 0
  next_tick = 0.0
  start = time.perf_counter()
  for t, frame, stream in _decoded(input_path, threads):
    decoded += 1
    if t + 1e-9 < next_tick:
      continue
    next_tick = (math.floor(t * rate + 1e-9) + 1) / rate
    if realtime:
      wait = start + t - time.perf_counter()
      if wait > 0:
        time.sleep(wait)
    before = time.perf_counter()
    clip = preprocess(frame, stream)
    ready = time.perf_counter()
    frame_logits, clip_logits, state = step_fn(state, clip)
    frame_logits, clip_logits = jax.device_get((frame_logits, clip_logits))
    done = time.perf_counter()
    taken.append(StreamedFrame(
        index=decoded - 1, time_s=float(t),
        frame_probabilities=timeline.softmax(frame_logits)[0].astype(np.float32),
        clip_probabilities=timeline.softmax(clip_logits)[0].astype(np.float32),
        step_ms=(done - ready) * 1e3, preprocess_ms=(ready - before) * 1e3))
    on_frame(taken[-1])
  return StreamReport(frames=taken, decoded=decoded, wall_s=time.perf_counter() - start,
                      compile_s=0.0)


def frame_preprocessor(spec: pipeline.ClipSpec, jpeg_quality: int) -> Callable:
  """A function of a decoded frame (and its stream) giving the model's input `(1, crop, crop,
  3)`: the frame as a one-frame clip of the val protocol (the frames of a clip, cut one by one)."""
  one = dataclasses.replace(spec, num_frames=1)

  def preprocess(frame, stream) -> np.ndarray:
    jpeg = video.encode(video.frame_to_rgb(frame, stream, spec.storage_short_side), jpeg_quality)
    return video_clips.views([jpeg], one, protocols.VAL)[:, 0]
  return preprocess


def format_frame(frame: StreamedFrame, class_names: list[str]) -> str:
  """The console line of one frame taken."""
  clip, own = int(frame.clip_probabilities.argmax()), int(frame.frame_probabilities.argmax())
  return (f'{frame.time_s:8.2f} s  frame {frame.index:>6}  {class_names[clip]} '
          f'{frame.clip_probabilities[clip]:.2f}  (this frame: {class_names[own]} '
          f'{frame.frame_probabilities[own]:.2f})  step {frame.step_ms:.1f} ms')


def summary_line(report: StreamReport) -> str:
  """The closing line: frames, latencies and the rate the loop sustained."""
  if not report.frames:
    return f'no frames taken ({report.decoded} decoded)'
  step, prep = report.latency('step_ms'), report.latency('preprocess_ms')
  return (f'{len(report.frames)} frames taken of {report.decoded} decoded in '
          f'{report.wall_s:.1f} s: {report.frames_per_s():.1f} frames/s; latency per frame: step '
          f'{step[0]:.1f} ms median, {step[1]:.1f} ms p90, {step[2]:.1f} ms max; preprocessing '
          f'{prep[0]:.1f} / {prep[1]:.1f} / {prep[2]:.1f} ms; compile {report.compile_s:.1f} s '
          f'(before the first frame) on {jax.default_backend()}')


def main(config: ml_collections.ConfigDict, checkpoint: str, input_path: str, *,
         window_s: float = timeline.WINDOW_S, realtime: bool = False) -> StreamReport:
  """`--mode=stream`: runs the checkpoint's online model on `input_path` frame by frame,
  printing each frame's label and latency and a summary; returns the report."""
  check_input(input_path, window_s)
  streaming.check_causal(config)  # Before loading: the run's config says what it is.
  loaded = weights.load(checkpoint, config)
  spec = pipeline.ClipSpec.from_config(loaded.config)
  step = streaming.create_step(loaded.config)
  variables = loaded.variables
  state = step.initial_state(variables, batch=1, crop_size=spec.crop_size)
  run = jax.jit(step)
  began = time.perf_counter()
  warm = run(variables, state, np.zeros((1, spec.crop_size, spec.crop_size, 3), np.uint8))
  jax.block_until_ready(warm)
  compile_s = time.perf_counter() - began
  rate = spec.num_frames / window_s
  print(f'model: {loaded.description}; online {spec.num_frames}-frame score, {rate:g} frames/s '
        f'taken ({spec.num_frames} frames per {window_s:g} s), {spec.crop_size} x '
        f'{spec.crop_size}; {"real time" if realtime else "as fast as it decodes"}', flush=True)
  try:
    report = stream_frames(
        input_path, lambda s, f: run(variables, s, f), state,
        frame_preprocessor(spec, int(loaded.config.data.jpeg_quality)), rate=rate,
        realtime=realtime, threads=min(4, os.cpu_count() or 1),
        on_frame=lambda f: print(format_frame(f, loaded.class_names), flush=True))
  except video.VideoError as e:
    raise StreamError(f'{input_path}: {e}') from None
  report.compile_s = compile_s
  print(summary_line(report), file=sys.stdout, flush=True)
  return report
