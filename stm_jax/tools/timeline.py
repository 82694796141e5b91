"""`launch.py --mode=predict --timeline`: what a long video shows, window by window.

A clip window slides along one video file: `--window_s` seconds long (default 2), one every
`--stride_s` seconds (default 1). Each window is scored as `--mode=predict` scores a file of just
those frames: the val protocol (T frames at the segment centres of the window, stored at the run's
short side and JPEG quality as prepare stores them, centre crop; `input_pipeline/video_clips.py`),
so the one window of a video shorter than a window is predict's clip of that video. Windows are
scored in batches of `BATCH_SIZE`. Written into `--output` (a folder, local or `gs://`; default the
current directory), named after the video's stem:

  <stem>_timeline.csv  one row per window: start_s, end_s (seconds; end exclusive), then top1,
                       top1_probability, ..., top5, top5_probability (class names and softmax
                       probabilities, as predict's CSV);
  <stem>_timeline.png  the probability of the classes that are top-1 in some window (the
                       `MAX_LINES` that are top-1 most often) against the window centres' time,
                       the background coloured by each moment's top-1 class;
  <stem>_annotated.mp4 (`--annotate`) the video as a player shows it (rotation and pixel aspect
                       applied: its size is the displayed size, an odd side padded by one pixel
                       for 4:2:0 video), at its frame rate, with each frame's current window's top
                       class and probability drawn in its top-left corner. The current window of a
                       frame is the one whose centre is nearest to it. H.264 (libx264) where the
                       installed PyAV has it, else MPEG-4 part 2. The audio is not copied.

Why the defaults: the models are trained on whole clips, a Something-Something video lasting 2-6
seconds (about 4 on average) and a Jester one 3, each sampled into 8 segments (frames about half a
second apart). A 2-second window holds all of a short action or most of a typical one (its 8
frames a quarter of a second apart), yet is short enough to place a change of action to within a
second. A stride of half the window puts every moment in two windows, so that a boundary is found
to within one stride, at the cost of one clip per second of video. For Kinetics models (10-second
training clips) longer windows fit better (`--window_s=10 --stride_s=5`).

Memory is bounded whatever the video's length: the video is decoded as a stream, frame by frame,
each frame kept only as the stored JPEG (the run's short side) while a window still to come needs
it (a deque of at most one window's frames), plus at most one batch of clips; what grows with the
length is the timeline itself (one float32 probability per class and window); the annotated video
is encoded frame by frame into its file, in a second pass over the video. Times are frame numbers over the stream's average frame rate
(exact for constant-rate video). Windows are whole frames: `round(window_s x fps)` frames,
starting every `round(stride_s x fps)` frames; where the last one ends before the video does, one
more window ends at the last frame, so that the whole video is scored.
"""

import collections
import csv
import dataclasses
import fractions
import math
import os
import sys
import tempfile
from typing import Callable

import av
import cv2
import jax
import ml_collections
import numpy as np
import tqdm

from input_pipeline import errors
from input_pipeline import files
from input_pipeline import pipeline
from input_pipeline import protocols
from input_pipeline import video
from input_pipeline import video_clips
from stm_jax.core import figures
from stm_jax.core import weights
from stm_jax.evaluation import metrics
from stm_jax.tools import predict

WINDOW_S = 2.0
STRIDE_S = 1.0
BATCH_SIZE = 8
MAX_LINES = 8  # Classes drawn in the PNG at most.
CSV_SUFFIX, PNG_SUFFIX, VIDEO_SUFFIX = '_timeline.csv', '_timeline.png', '_annotated.mp4'
# Encoders tried for the annotated video, in order.
ENCODERS = ('libx264', 'mpeg4')
# Videos at least this long (seconds) show a progress bar on stderr.
PROGRESS_MIN_S = 30.0

# uint8 clips (B, T, H, W, 3) -> logits (B, classes).
LogitsFn = Callable[[np.ndarray], np.ndarray]


class TimelineError(errors.UserError):
  """A flag, video or output that a timeline cannot be made of; the message names it."""


@dataclasses.dataclass
class Window:
  """One scored window: frames `[start, end)` and every class's probability (float32)."""
  start: int
  end: int
  probabilities: np.ndarray


@dataclasses.dataclass
class Timeline:
  """The windows of one video, in order, and how they were cut.

  `max_frames_held`: the most decoded frames held at once while scoring (the memory bound).
  """
  path: str
  fps: float
  num_frames: int
  window_frames: int
  stride_frames: int
  windows: list[Window]
  max_frames_held: int

  def seconds(self, frame: float) -> float:
    """The time (s) of a frame position."""
    return frame / self.fps

  def probabilities(self) -> np.ndarray:
    """(windows, classes) probabilities."""
    return np.stack([w.probabilities for w in self.windows])

  def centres(self) -> np.ndarray:
    """The windows' centres, in frames."""
    return np.array([(w.start + w.end) / 2 for w in self.windows], np.float64)

  def band_edges(self) -> np.ndarray:
    """(windows + 1,) times (s) between which each window is the current one: the first
    window's start, the midpoints between window centres, the last window's end."""
    centres = self.centres()
    return np.concatenate([[self.windows[0].start], (centres[1:] + centres[:-1]) / 2,
                           [self.windows[-1].end]]) / self.fps

  def runs(self) -> list[tuple[int, int, int]]:
    """(first window, last window + 1, class) of each run of windows with the same top-1."""
    top1 = self.probabilities().argmax(axis=1)
    result, begin = [], 0
    for i in range(1, len(top1) + 1):
      if i == len(top1) or top1[i] != top1[begin]:
        result.append((begin, i, int(top1[begin])))
        begin = i
    return result

  def current_window(self) -> Callable[[int], int]:
    """A function from a frame number to its current window's index: the window whose centre
    is nearest to the frame's centre (ties: the earlier)."""
    centres = self.centres()
    midpoints = (centres[1:] + centres[:-1]) / 2
    return lambda frame: int(np.searchsorted(midpoints, frame + 0.5, side='left'))


@dataclasses.dataclass
class Outputs:
  """What `make_timeline` wrote, and the timeline."""
  timeline: Timeline
  csv: str
  png: str
  video: str | None


def check_flags(window_s: float, stride_s: float) -> None:
  """Raises a TimelineError naming the flag when a window length or stride is not a positive
  number of seconds."""
  for name, value, default in (('window_s', window_s, WINDOW_S), ('stride_s', stride_s, STRIDE_S)):
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
      raise TimelineError(f'--{name}={value}: must be a positive number of seconds (default '
                          f'{default})')


def softmax(logits: np.ndarray) -> np.ndarray:
  """Row-wise softmax in float64 (the probabilities the CSV and the figure show)."""
  logits = np.asarray(logits, np.float64)
  e = np.exp(logits - logits.max(axis=-1, keepdims=True))
  return e / e.sum(axis=-1, keepdims=True)


def _probe(path: str) -> tuple[fractions.Fraction, float, float]:
  """(frame rate as a fraction, fps, duration in seconds or 0) of a video file; raises
  VideoError if unreadable."""
  with video._open(path) as container:  # pylint: disable=protected-access
    stream = video._video_stream(container, 1)  # pylint: disable=protected-access
    rate = stream.average_rate or stream.guessed_rate
    duration = 0.0
    if stream.duration and stream.time_base:
      duration = float(stream.duration * stream.time_base)
    elif container.duration:
      duration = container.duration / av.time_base
  if not rate or rate <= 0:
    raise video.VideoError('no frame rate in the container (a timeline needs one)')
  return rate, float(rate), duration


def _progress(duration: float, what: str) -> tqdm.tqdm:
  """A progress bar over the video's seconds on stderr, shown for long videos only."""
  interactive = sys.stderr.isatty()
  return tqdm.tqdm(total=round(duration, 1), unit='s', desc=what, file=sys.stderr,
                   dynamic_ncols=True, disable=duration < PROGRESS_MIN_S,
                   mininterval=0.1 if interactive else 60,
                   bar_format='{desc}: {percentage:3.0f}%|{bar}| {n:.0f}/{total:.0f} s '
                              '[{elapsed}<{remaining}]')


def score_video(path: str, logits_fn: LogitsFn, spec: pipeline.ClipSpec, *, jpeg_quality: int,
                window_s: float = WINDOW_S, stride_s: float = STRIDE_S,
                batch_size: int = BATCH_SIZE, threads: int = 1) -> Timeline:
  """Slides the window along the video file `path` and scores every window with `logits_fn`.

  Decodes as a stream and holds at most one window's frames (see the module docstring). Raises
  VideoError (the reason) if the video is unusable, TimelineError for a bad window or stride.
  """
  check_flags(window_s, stride_s)
  _, fps, duration = _probe(path)
  window = max(1, round(window_s * fps))
  stride = max(1, round(stride_s * fps))
  held = collections.deque(maxlen=window)
  pending, windows = [], []
  max_held = count = 0

  def flush():
    if not pending:
      return
    clips = np.stack([clip for _, _, clip in pending])
    padded = np.concatenate([clips, np.repeat(clips[-1:], batch_size - len(clips), axis=0)])
    probs = softmax(np.asarray(logits_fn(padded)))[:len(clips)]  # One batch shape: one compile.
    windows.extend(Window(start, end, p.astype(np.float32))
                   for (start, end, _), p in zip(pending, probs))
    pending.clear()

  def cut(start: int, end: int):
    clip = video_clips.views(list(held), spec, protocols.VAL)[0]
    pending.append((start, end, clip))
    if len(pending) == batch_size:
      flush()

  def store(frame, stream):
    return video.encode(video.frame_to_rgb(frame, stream, spec.storage_short_side), jpeg_quality)

  with _progress(duration, 'timeline') as bar:
    for jpeg in video.decoded_frames(path, store, threads):
      held.append(jpeg)
      count += 1
      max_held = max(max_held, len(held))
      start = count - window
      if start >= 0 and start % stride == 0:
        cut(start, count)
      bar.update(min(bar.total, count / fps) - bar.n)
  last_end = pending[-1][1] if pending else windows[-1].end if windows else 0
  if last_end < count:  # A video shorter than a window, or an end the stride left over.
    cut(max(0, count - window), count)
  flush()
  return Timeline(path=path, fps=fps, num_frames=count, window_frames=window,
                  stride_frames=stride, windows=windows, max_frames_held=max_held)


def _top(timeline: Timeline) -> np.ndarray:
  return metrics.top_k(timeline.probabilities(), predict.TOP_K)


def write_csv(path: str, timeline: Timeline, class_names: list[str]) -> None:
  """Writes the timeline's CSV (columns in the module docstring), atomically."""
  header = ['start_s', 'end_s']
  for k in range(1, predict.TOP_K + 1):
    header += [f'top{k}', f'top{k}_probability']
  with files.atomic_write(path, newline='', encoding='utf-8') as f:
    writer = csv.writer(f)
    writer.writerow(header)
    for w, top in zip(timeline.windows, _top(timeline)):
      row = [f'{timeline.seconds(w.start):.3f}', f'{timeline.seconds(w.end):.3f}']
      for k in range(predict.TOP_K):
        row += [class_names[top[k]], f'{w.probabilities[top[k]]:.7g}'] if k < len(top) else ['', '']
      writer.writerow(row)


def drawn_classes(timeline: Timeline) -> tuple[list[int], int]:
  """The classes the figure draws: those top-1 in the most windows (at most MAX_LINES), in the
  order they first lead; and how many other top-1 classes it leaves out."""
  top1 = timeline.probabilities().argmax(axis=1)
  classes, first, counts = np.unique(top1, return_index=True, return_counts=True)
  chosen = np.argsort(-counts, kind='stable')[:MAX_LINES]
  order = chosen[np.argsort(first[chosen])]
  return [int(c) for c in classes[order]], len(classes) - len(chosen)


def plot(path: str, timeline: Timeline, class_names: list[str], title: str) -> None:
  """Writes the timeline's PNG: the drawn classes' probabilities against time, a legend, and
  the background coloured by the top-1 class of each moment."""
  probs = timeline.probabilities()
  classes, left_out = drawn_classes(timeline)
  colour = {c: f'C{i}' for i, c in enumerate(classes)}
  x = timeline.centres() / timeline.fps
  edges = timeline.band_edges()
  fig = figures.new_figure((11, 4.2), layout='constrained')
  ax = fig.subplots()
  marker = 'o' if len(x) <= 30 else None
  for c in classes:
    name = class_names[c]
    ax.plot(x, probs[:, c], color=colour[c], marker=marker, markersize=3, linewidth=1.5,
            label=name if len(name) <= 40 else name[:39] + '…')
  for begin, end, c in timeline.runs():  # Each moment's top-1 class as a band.
    ax.axvspan(edges[begin], edges[end], color=colour.get(c, 'grey'), alpha=0.12, linewidth=0)
  ax.set_xlim(edges[0], edges[-1])
  ax.set_ylim(0, 1.02)
  ax.set_xlabel('time (s), window centres')
  ax.set_ylabel('probability')
  ax.grid(alpha=0.3)
  ax.legend(loc='upper left', bbox_to_anchor=(1.01, 1), fontsize=8, frameon=False,
            title='top-1 somewhere', title_fontsize=8)
  note = f'; {left_out} more top-1 class(es) not drawn' if left_out else ''
  ax.set_title(title + note, fontsize=10)
  figures.save_png(fig, path)


def encoder() -> str:
  """The first of ENCODERS the installed PyAV can encode with."""
  for name in ENCODERS:
    try:
      av.codec.Codec(name, 'w')
      return name
    except ValueError:  # av's UnknownCodecError
      continue
  raise TimelineError(f'the installed PyAV has none of the encoders {", ".join(ENCODERS)}; '
                      'drop --annotate or install a PyAV wheel with libx264')


def draw_label(rgb: np.ndarray, text: str) -> np.ndarray:
  """`rgb` with `text` in white on a dark box in its top-left corner (sized to the frame)."""
  height = rgb.shape[0]
  scale = max(0.3, height / 720)
  thickness = max(1, round(2 * scale))
  font = cv2.FONT_HERSHEY_SIMPLEX
  (w, h), baseline = cv2.getTextSize(text, font, scale, thickness)
  pad = max(2, round(6 * scale))
  out = np.ascontiguousarray(rgb)
  cv2.rectangle(out, (0, 0), (w + 2 * pad, h + baseline + 2 * pad), (0, 0, 0), cv2.FILLED)
  cv2.putText(out, text, (pad, pad + h), font, scale, (255, 255, 255), thickness, cv2.LINE_AA)
  return out


def write_annotated(path: str, output: str, timeline: Timeline, class_names: list[str],
                    threads: int = 1) -> None:
  """Writes the annotated copy of the video `path` (see the module docstring) to `output`,
  encoded frame by frame; the file appears whole when done (`files.put_file`)."""
  rate, _, duration = _probe(path)
  codec = encoder()
  top1 = timeline.probabilities().argmax(axis=1)
  labels = [f'{class_names[c]} {100 * w.probabilities[c]:.0f}%'
            for w, c in zip(timeline.windows, top1)]
  current = timeline.current_window()
  local = files.local_path(output)
  folder = os.path.dirname(local) if local else None
  handle, tmp = tempfile.mkstemp(prefix='.annotated-', suffix='.mp4', dir=folder)
  os.close(handle)
  try:
    with av.open(tmp, 'w', format='mp4') as container, _progress(duration, 'annotate') as bar:
      stream = None
      frames = video.decoded_frames(path, lambda f, s: video.frame_to_rgb(f, s, 0), threads)
      for i, rgb in enumerate(frames):
        if stream is None:
          stream = container.add_stream(codec, rate=rate)
          height, width = rgb.shape[:2]
          stream.height, stream.width = height + height % 2, width + width % 2
          stream.pix_fmt = 'yuv420p'
          if codec == 'libx264':
            stream.options = {'preset': 'veryfast', 'crf': '20'}
          else:
            stream.bit_rate = max(400_000, int(stream.width * stream.height * float(rate) * 0.2))
        if rgb.shape[:2] != (stream.height, stream.width):  # 4:2:0 needs even sides.
          rgb = np.pad(rgb, ((0, stream.height - rgb.shape[0]), (0, stream.width - rgb.shape[1]),
                             (0, 0)), mode='edge')
        label = labels[current(i)]
        frame = av.VideoFrame.from_ndarray(draw_label(rgb, label), format='rgb24')
        container.mux(stream.encode(frame))
        bar.update(min(bar.total, (i + 1) / float(rate)) - bar.n)
      container.mux(stream.encode())
    files.put_file(tmp, output)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def segments(timeline: Timeline, class_names: list[str]) -> list[str]:
  """Lines 'start-end s: class (mean probability)', one per run of moments with the same
  top-1 class (the current window's, as the annotation and the PNG's bands): the timeline in
  words."""
  probs, edges = timeline.probabilities(), timeline.band_edges()
  return [f'{edges[begin]:7.1f}-{edges[end]:.1f} s: {class_names[c]} '
          f'({100 * probs[begin:end, c].mean():.0f}%)' for begin, end, c in timeline.runs()]


def stem(input_path: str) -> str:
  """The name the outputs start with: the video file's name without its extension."""
  return os.path.splitext(os.path.basename(os.path.normpath(input_path)))[0]


def make_timeline(input_path: str, logits_fn: LogitsFn, spec: pipeline.ClipSpec,
                  class_names: list[str], output_dir: str, *, jpeg_quality: int,
                  window_s: float = WINDOW_S, stride_s: float = STRIDE_S,
                  annotate_video: bool = False, batch_size: int = BATCH_SIZE,
                  threads: int = 1) -> Outputs:
  """Scores the windows of the video `input_path` with `logits_fn` and writes the CSV, the PNG
  and (`annotate_video`) the annotated video into `output_dir`; returns what it wrote.

  Everything but loading a model: `main` passes the model's logits, tests a function of the
  pixels. Raises TimelineError naming the video if it cannot be read."""
  try:
    timeline = score_video(input_path, logits_fn, spec, jpeg_quality=jpeg_quality,
                           window_s=window_s, stride_s=stride_s, batch_size=batch_size,
                           threads=threads)
  except video.VideoError as e:
    raise TimelineError(f'{input_path}: {e}') from None
  folder = files.resolve(output_dir)
  folder.mkdir(parents=True, exist_ok=True)
  name = stem(input_path)
  csv_path = os.fspath(folder / (name + CSV_SUFFIX))
  png_path = os.fspath(folder / (name + PNG_SUFFIX))
  write_csv(csv_path, timeline, class_names)
  plot(png_path, timeline, class_names,
       f'{os.path.basename(input_path)}: {window_s:g} s windows every {stride_s:g} s '
       f'({len(timeline.windows)} windows, {timeline.num_frames / timeline.fps:.1f} s)')
  video_path = None
  if annotate_video:
    video_path = os.fspath(folder / (name + VIDEO_SUFFIX))
    write_annotated(input_path, video_path, timeline, class_names, threads)
  return Outputs(timeline=timeline, csv=csv_path, png=png_path, video=video_path)


def check_input(input_path: str, output: str | None) -> None:
  """Raises a TimelineError when `input_path` is not one local video file or `output` is not a
  folder, before anything is loaded or written."""
  if files.is_remote(input_path):
    raise TimelineError(f'{input_path}: the timeline reads a local video; copy it here first '
                        '(e.g. gcloud storage cp)')
  if not os.path.exists(input_path):
    raise TimelineError(f'{input_path}: no such file')
  if os.path.isdir(input_path):
    kind = ('a folder of JPEG frames, which has no frame rate; encode it as a video first'
            if video_clips.is_frame_folder(input_path)
            else 'a folder; give one of its videos (--mode=predict without --timeline scores a '
                 'whole folder)')
    raise TimelineError(f'--timeline takes one video file; {input_path} is {kind}')
  if output and (os.path.splitext(output.rstrip('/'))[1].lower() in ('.csv', '.png', '.mp4')
                 or files.resolve(output).is_file()):
    raise TimelineError(f'--output={output}: with --timeline, --output is the folder the '
                        f'timeline files go to (<stem>{CSV_SUFFIX}, ...), not a file')


def main(config: ml_collections.ConfigDict, checkpoint: str, input_path: str,
         output: str | None = None, *, window_s: float = WINDOW_S, stride_s: float = STRIDE_S,
         annotate: bool = False, protocol: str = 'val') -> Outputs:
  """`--mode=predict --timeline`: scores the windows of the video `input_path` with the
  checkpoint's model and writes the timeline files into `output` (default: the current
  directory); prints the timeline's segments and the paths written."""
  if protocol != 'val':
    raise TimelineError(f'--eval_protocol={protocol}: --timeline scores each window with the val '
                        'protocol (one centre clip); drop --eval_protocol')
  check_flags(window_s, stride_s)
  check_input(input_path, output)
  loaded = weights.load(checkpoint, config)
  spec = pipeline.ClipSpec.from_config(loaded.config)
  print(f'model: {loaded.description}; val protocol, {spec.num_frames} x {spec.crop_size} x '
        f'{spec.crop_size} per window of {window_s:g} s every {stride_s:g} s', flush=True)
  outputs = make_timeline(input_path, jax.jit(loaded.logits), spec, loaded.class_names,
                          output or os.getcwd(), jpeg_quality=int(loaded.config.data.jpeg_quality),
                          window_s=window_s, stride_s=stride_s, annotate_video=annotate,
                          threads=min(8, os.cpu_count() or 1))
  t = outputs.timeline
  print(f'{input_path} ({t.num_frames} frames, {t.num_frames / t.fps:.1f} s at {t.fps:g} fps): '
        f'{len(t.windows)} windows of {t.window_frames} frames', flush=True)
  lines = segments(t, loaded.class_names)
  shown = 30
  print('\n'.join(lines[:shown]) + (f'\n  ... {len(lines) - shown} more (see the CSV)'
                                    if len(lines) > shown else ''), flush=True)
  for path in (outputs.csv, outputs.png, outputs.video):
    if path:
      print(f'wrote {path}', flush=True)
  return outputs
