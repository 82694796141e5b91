"""`--mode=predict --timeline`: windows follow a video's content (a video of red, green and blue
segments scored by its mean colour), the CSV, PNG and annotated video, the memory bound, a short
video scored as predict scores it, and the command line with a random tiny model."""

import concurrent.futures
import csv
import os

import av
import jax
import numpy as np
import pytest

from configs import tiny
from input_pipeline import files
from input_pipeline import pipeline
from input_pipeline import protocols
from input_pipeline import video
from input_pipeline import video_clips
from stm_jax import models
from stm_jax.core import weights
from stm_jax.tools import timeline
from tests import jax_subprocess
from tests import video_fixtures

FPS, HEIGHT, WIDTH = 8, 48, 64
CLASSES = ['red', 'green', 'blue']
# (start s, end s, class) of the test video's segments.
SEGMENTS = [(0, 12, 0), (12, 25, 1), (25, 40, 2)]
# The 2-minute video whose timeline the CSV, PNG, annotation and bucket tests read, at a lower
# frame rate to keep the test short (the window is still 2 s: 8 frames).
LONG_SECONDS, LONG_FPS = 120, 4
LONG_SEGMENTS = [(0, 40, 0), (40, 85, 1), (85, 120, 2)]
COLOURS = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]
QUALITY = 90


def _write_segments(path, seconds, segments=SEGMENTS, fps=FPS):
  """An h264 mp4 at `fps` of solid colour segments (class k in COLOURS[k]); returns path."""
  with av.open(path, 'w') as container:
    stream = container.add_stream('libx264', rate=fps)
    stream.height, stream.width, stream.pix_fmt = HEIGHT, WIDTH, 'yuv420p'
    for i in range(round(seconds * fps)):
      k = next(c for start, end, c in segments if start <= i / fps < end)
      image = np.empty((HEIGHT, WIDTH, 3), np.uint8)
      image[:] = COLOURS[k]
      container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format='rgb24')))
    container.mux(stream.encode())
  return path


def _colour_logits(clips):
  """Logits of the classes red, green, blue: the clips' mean colour (a function of the pixels)."""
  return np.asarray(clips, np.float32).mean(axis=(1, 2, 3)) / 255 * 20


def _spec():
  return pipeline.ClipSpec.from_config(tiny.get_config())


def _decode(path):
  """(frames as uint8 RGB, average rate) of a video file."""
  with av.open(path) as container:
    stream = container.streams.video[0]
    return [f.to_ndarray(format='rgb24') for f in container.decode(stream)], stream.average_rate


@pytest.fixture(scope='module')
def scored(tmp_path_factory):
  """The 2-minute segment video and its timeline files, annotated."""
  tmp = tmp_path_factory.mktemp('timeline')
  path = _write_segments(str(tmp / 'segments.mp4'), LONG_SECONDS, LONG_SEGMENTS, LONG_FPS)
  outputs = timeline.make_timeline(path, _colour_logits, _spec(), CLASSES, str(tmp / 'out'),
                                   jpeg_quality=QUALITY, annotate_video=True)
  return path, outputs


def test_the_csv_follows_the_segments(scored):
  _, outputs = scored
  with open(outputs.csv, newline='') as f:
    reader = csv.DictReader(f)
    rows = list(reader)
  header = ['start_s', 'end_s']
  for k in range(1, 6):
    header += [f'top{k}', f'top{k}_probability']
  assert reader.fieldnames == header
  assert len(rows) == 119  # 2 s windows starting every second, the last ending at 120 s.
  assert [float(r['start_s']) for r in rows] == list(range(119))
  assert all(float(r['end_s']) == float(r['start_s']) + 2 for r in rows)
  for row in rows:
    start, end = float(row['start_s']), float(row['end_s'])
    probs = [float(row[f'top{k}_probability']) for k in (1, 2, 3)]
    assert probs == sorted(probs, reverse=True) and sum(probs) == pytest.approx(1, abs=1e-5)
    assert row['top4'] == row['top5'] == ''  # 3 classes only.
    inside = [c for s, e, c in LONG_SEGMENTS if s <= start and end <= e]
    if inside:
      assert row['top1'] == CLASSES[inside[0]], row
  # Where the top-1 changes (between two windows' centres) is within one stride of a boundary.
  changes = [(float(a['start_s']) + float(b['end_s'])) / 2 for a, b in zip(rows, rows[1:])
             if a['top1'] != b['top1']]
  assert len(changes) == 2
  for change, boundary in zip(changes, (40, 85)):
    assert abs(change - boundary) <= 1, changes
  assert [r['top1'] for r in (rows[0], rows[60], rows[-1])] == CLASSES


def test_the_png_is_a_readable_figure(scored):
  _, outputs = scored
  with open(outputs.png, 'rb') as f:
    data = f.read()
  assert data[:8] == b'\x89PNG\r\n\x1a\n'
  width, height = int.from_bytes(data[16:20], 'big'), int.from_bytes(data[20:24], 'big')
  assert width >= 800 and 300 <= height <= width
  assert timeline.drawn_classes(outputs.timeline) == ([0, 1, 2], 0)
  assert not [n for n in os.listdir(os.path.dirname(outputs.png)) if 'tmp' in n]


def test_the_annotated_video_is_the_video_with_labels(scored):
  path, outputs = scored
  assert os.path.basename(outputs.video) == 'segments_annotated.mp4'
  source, source_rate = _decode(path)
  annotated, rate = _decode(outputs.video)
  assert len(annotated) == len(source) == 480 and rate == source_rate == LONG_FPS
  assert annotated[0].shape == source[0].shape == (HEIGHT, WIDTH, 3)
  for i in (0, 150, 300, 479):
    diff = np.abs(annotated[i].astype(int) - source[i].astype(int)).max(axis=-1)
    assert (diff[:10, :30] > 100).mean() > 0.3, i  # The label box (dark with white text) ...
    assert diff[24:].mean() < 8, i  # ... and the rest of the frame as it was.


def test_the_files_go_to_a_bucket(scored, gcs_bucket):
  path, local = scored
  outputs = timeline.make_timeline(path, _colour_logits, _spec(), CLASSES, f'{gcs_bucket}/tl',
                                   jpeg_quality=QUALITY, annotate_video=True)
  for name in ('csv', 'png'):
    with open(getattr(local, name), 'rb') as f:
      assert files.resolve(getattr(outputs, name)).read_bytes() == f.read(), name
  with files.local_copy(outputs.video) as copy:
    assert len(_decode(copy)[0]) == 480
  assert sorted(p.name for p in files.resolve(f'{gcs_bucket}/tl').iterdir()) == [
      'segments_annotated.mp4', 'segments_timeline.csv', 'segments_timeline.png']


def test_memory_is_one_window_whatever_the_length(tmp_path, monkeypatch):
  """At most one window's frames are held (16 at 8 fps), for a video 4 times as long too, and
  each clip is cut from one window's frames; a stride that leaves the end over adds a window
  ending at the last frame; every batch has one shape."""
  seen, shapes = [], []
  views = video_clips.views
  monkeypatch.setattr(video_clips, 'views', lambda f, *a: seen.append(len(f)) or views(f, *a))

  def logits_fn(clips):
    shapes.append(clips.shape)
    return _colour_logits(clips)

  short = _write_segments(str(tmp_path / 'short.mp4'), 10.25)  # 82 frames
  long = _write_segments(str(tmp_path / 'long.mp4'), 40)
  spec = _spec()
  held = {}
  for name, path in (('short', short), ('long', long)):
    t = timeline.score_video(path, logits_fn, spec, jpeg_quality=QUALITY)
    held[name] = t.max_frames_held
    assert t.window_frames == 16 and t.stride_frames == 8
  assert held == {'short': 16, 'long': 16}
  assert set(seen) == {16} and set(shapes) == {(8, 4, 32, 32, 3)}
  t = timeline.score_video(short, logits_fn, spec, jpeg_quality=QUALITY)
  assert [(w.start, w.end) for w in t.windows[-2:]] == [(64, 80), (66, 82)]
  t = timeline.score_video(long, logits_fn, spec, jpeg_quality=QUALITY, window_s=5, stride_s=3)
  assert t.max_frames_held == 40 and len(t.windows) == 13


def test_a_video_shorter_than_a_window_is_one_window_scored_as_predict(tmp_path):
  path = _write_segments(str(tmp_path / 'clip.mp4'), 1.5, [(0, 1, 0), (1, 2, 1)])
  clips = []

  def logits_fn(batch):
    clips.append(batch)
    return _colour_logits(batch)

  spec = _spec()
  t = timeline.score_video(path, logits_fn, spec, jpeg_quality=QUALITY)
  assert [(w.start, w.end) for w in t.windows] == [(0, 12)] and t.num_frames == 12
  frames = video_clips.read_frames(path, spec, protocols.VAL, QUALITY)
  expected = video_clips.views(frames, spec, protocols.VAL)[0]
  np.testing.assert_array_equal(clips[0][0], expected)


def test_a_rotated_video_is_scored_and_annotated_upright(tmp_path):
  """A phone video (landscape frames shown turned): its window is predict's clip, and the
  annotated copy has the displayed size and content, markers where a player shows them."""
  path = video_fixtures.write_marked_video(str(tmp_path / 'phone.mp4'), 7, 96, 144, rotation=-90)
  clips = []
  spec = _spec()
  outputs = timeline.make_timeline(path, lambda b: clips.append(b) or _colour_logits(b), spec,
                                   CLASSES, str(tmp_path), jpeg_quality=QUALITY,
                                   annotate_video=True)
  frames = video_clips.read_frames(path, spec, protocols.VAL, QUALITY)
  np.testing.assert_array_equal(clips[0][0], video_clips.views(frames, spec, protocols.VAL)[0])
  annotated, _ = _decode(outputs.video)
  assert len(annotated) == 7 and annotated[0].shape == (144, 96, 3)  # stored 96 x 144
  with av.open(path) as container:
    stream = container.streams.video[0]
    upright = video.frame_to_rgb(next(container.decode(stream)), stream, 0)
  assert video_fixtures.marker_corners(upright) == {'red': 'tr', 'blue': 'tl'}
  # Right of the label box (at most 50 pixels wide here): the upright frame, red marker included.
  assert np.abs(annotated[0][:, 60:].astype(int) - upright[:, 60:]).mean() < 6
  assert video_fixtures.marker_corners(annotated[0][:, 60:])['red'] == 'tr'


def test_bad_flags_and_inputs_are_one_clear_error(tmp_path):
  config = tiny.get_config()
  video = _write_segments(str(tmp_path / 'v.mp4'), 1)
  frames = video_fixtures.write_frames(str(tmp_path / 'frames'), 3)
  cases = [
      (dict(input_path=video, window_s=0), '--window_s=0: must be a positive'),
      (dict(input_path=video, stride_s=-1), '--stride_s=-1: must be a positive'),
      (dict(input_path=video, protocol='test'), '--eval_protocol=test'),
      (dict(input_path=str(tmp_path)), 'is a folder'),
      (dict(input_path=frames), 'folder of JPEG frames'),
      (dict(input_path=str(tmp_path / 'nope.mp4')), 'no such file'),
      (dict(input_path=video, output=str(tmp_path / 'out.csv')), 'the folder the timeline'),
  ]
  for kwargs, words in cases:
    with pytest.raises(timeline.TimelineError, match=words):
      timeline.main(config, str(tmp_path / 'no_weights'), **kwargs)
  assert sorted(os.listdir(tmp_path)) == ['frames', 'v.mp4']


@pytest.fixture(scope='module')
def random_weights(tmp_path_factory):
  """Random tiny STM weights of 3 classes, as `--mode=convert` writes them."""
  config = tiny.get_config()
  config.data.num_classes = len(CLASSES)
  model = models.create(config)
  directory = str(tmp_path_factory.mktemp('weights') / 'tiny')
  weights.save_converted(jax.jit(lambda: models.init_variables(model, config))(), directory)
  return directory


def test_the_command_line_writes_the_three_files(random_weights, tmp_path, tmp_path_factory):
  path = _write_segments(str(tmp_path / 'walk.mp4'), 5, [(0, 3, 0), (3, 5, 2)])
  common = ('--mode=predict', '--config=configs/tiny.py', f'--checkpoint={random_weights}',
            f'--input={path}')
  commands = {
      'timeline': common + ('--timeline', '--annotate', f'--output={tmp_path / "out"}'),
      'bad window': common + ('--timeline', '--window_s=0', f'--output={tmp_path / "bad"}'),
      'no timeline': common + ('--annotate', f'--output={tmp_path / "bad.csv"}'),
  }
  cache = tmp_path_factory.getbasetemp() / 'jax_cache'
  with concurrent.futures.ThreadPoolExecutor(3) as pool:
    futures = {name: pool.submit(jax_subprocess.launch, *args, cache=cache) for name, args in commands.items()}
    results = {name: f.result() for name, f in futures.items()}
  good = results['timeline']
  assert good.returncode == 0, good.stderr[-3000:]
  assert sorted(os.listdir(tmp_path / 'out')) == [
      'walk_annotated.mp4', 'walk_timeline.csv', 'walk_timeline.png']
  with open(tmp_path / 'out' / 'walk_timeline.csv', newline='') as f:
    rows = list(csv.DictReader(f))
  assert len(rows) == 4 and {r['top1'] for r in rows} <= {'class 0', 'class 1', 'class 2'}
  assert 'wrote ' + str(tmp_path / 'out' / 'walk_annotated.mp4') in good.stdout
  for name, words in (('bad window', '--window_s=0.0'), ('no timeline', '--annotate')):
    output = results[name].stdout + results[name].stderr
    errors = [line for line in output.splitlines() if line.startswith('error: ')]
    assert results[name].returncode == 2 and len(errors) == 1, output[-3000:]
    assert words in errors[0] and 'Traceback' not in output, errors
  assert not os.path.exists(tmp_path / 'bad') and not os.path.exists(tmp_path / 'bad.csv')
