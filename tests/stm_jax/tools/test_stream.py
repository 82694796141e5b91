"""`--mode=stream`: frames taken at T / window_s per second, each cut as the val protocol cuts a
clip's frames and scored by the streaming step; real time paced by the video; the streaming step
exported and reloaded; the command line, and its refusals, with a random tiny causal model."""

import concurrent.futures
import os

import jax
import numpy as np
import pytest

from configs import tiny
from input_pipeline import errors
from input_pipeline import pipeline
from input_pipeline import protocols
from input_pipeline import video
from input_pipeline import video_clips
from stm_jax import models
from stm_jax.core import weights
from stm_jax.models import streaming
from stm_jax.tools import export
from stm_jax.tools import stream
from tests import jax_subprocess
from tests import video_fixtures

FPS = 12
QUALITY = 90


def _causal_config():
  config = tiny.get_config()
  config.data.num_classes = 3
  config.model.causal = True
  return config


@pytest.fixture(scope='module')
def causal_weights(tmp_path_factory):
  """Random tiny causal STM weights of 3 classes, as `--mode=convert` writes them."""
  config = _causal_config()
  model = models.create(config)
  directory = str(tmp_path_factory.mktemp('weights') / 'causal')
  weights.save_converted(jax.jit(lambda: models.init_variables(model, config))(), directory)
  return directory


def _frame_index_fn():
  """A step that returns the frame's mean grey level as its 'logits' (video_fixtures fills frame i
  with level(i)), so a test can read which frames were taken from the outputs."""
  def step(state, frame):
    mean = np.asarray(frame, np.float32).mean()
    return np.array([[mean, 0.0]]), np.array([[0.0, mean]]), state
  return step


def test_frames_are_taken_at_the_rate_and_cut_as_the_val_protocol_cuts_them(tmp_path):
  path = video_fixtures.write_video(str(tmp_path / 'v.mp4'), 36, fps=FPS)  # 3 s.
  spec = pipeline.ClipSpec.from_config(tiny.get_config())
  preprocess = stream.frame_preprocessor(spec, QUALITY)
  inputs = []
  report = stream.stream_frames(path, lambda s, f: (inputs.append(f), _frame_index_fn()(s, f))[1],
                                None, preprocess, rate=2.0)
  assert [f.index for f in report.frames] == list(range(0, 36, 6))  # 2 a second of 12.
  np.testing.assert_allclose([f.time_s for f in report.frames], np.arange(6) / 2, atol=1e-6)
  assert report.decoded == 36 and all(x.shape == (1, 32, 32, 3) for x in inputs)
  # The val clip of the whole video (4 segment centres: frames 4, 13, 22, 31) holds the same
  # pixels the stream gives those frames.
  jpegs = video_clips.read_frames(path, spec, protocols.VAL, QUALITY)
  clip = video_clips.views(jpegs, spec, protocols.VAL)[0]
  rgb = [preprocess(f, s) for f, s in video.decoded_frames(path, lambda f, s: (f, s))]
  for j, index in enumerate(protocols.VAL.clip_indices(36, 4).ravel()):
    np.testing.assert_array_equal(rgb[index][0], clip[j])


def test_realtime_waits_for_each_frames_time(tmp_path):
  path = video_fixtures.write_video(str(tmp_path / 'v.mp4'), 24, fps=FPS)  # 2 s.
  spec = pipeline.ClipSpec.from_config(tiny.get_config())
  report = stream.stream_frames(path, _frame_index_fn(), None,
                                stream.frame_preprocessor(spec, QUALITY), rate=4.0, realtime=True)
  assert len(report.frames) == 8
  assert report.wall_s >= report.frames[-1].time_s  # Never ahead of the video's clock.
  assert 'frames/s' in stream.summary_line(report)


def test_the_exported_streaming_step_gives_the_steps_outputs(causal_weights, tmp_path):
  config = _causal_config()
  loaded = weights.load(causal_weights, config)
  output = str(tmp_path / 'stream_export')
  sig = export.write(loaded, output, platforms=('cpu',), streaming_step=True)
  assert sig['kind'] == export.STREAMING_STEP and sig['input']['frames']['shape'] == [
      'b', 32, 32, 3]
  exported = export.load(output)
  assert isinstance(exported, export.ExportedStream)
  step = streaming.create_step(loaded.config)
  frames = np.random.default_rng(0).integers(0, 256, (6, 2, 32, 32, 3), dtype=np.uint8)
  ours = step.initial_state(loaded.variables, 2, 32)
  theirs = exported.initial_state(2)
  for frame in frames:
    want = jax.jit(step)(loaded.variables, ours, frame)
    got = exported(theirs, frame)
    np.testing.assert_allclose(got[0], want[0], atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(got[1], want[1], atol=1e-5, rtol=1e-5)
    ours, theirs = want[2], got[2]
  with pytest.raises(errors.UserError, match='expects uint8 frames'):
    exported(theirs, frames[0, :, :16])


def test_the_command_line_streams_a_video_and_refuses_the_offline_model(
    causal_weights, tmp_path, tmp_path_factory):
  path = video_fixtures.write_video(str(tmp_path / 'v.mp4'), 30, fps=FPS)  # 2.5 s.
  common = ('--mode=stream', '--config=configs/tiny.py', '--config.data.num_classes=3',
            f'--checkpoint={causal_weights}')
  commands = {
      'stream': common + ('--config.model.causal=True', f'--input={path}'),
      'offline': common + (f'--input={path}',),
      'no input': common + ('--config.model.causal=True', f'--input={tmp_path / "nope.mp4"}'),
      'export': ('--mode=export', '--config=configs/tiny.py', '--config.data.num_classes=3',
                 f'--checkpoint={causal_weights}', '--streaming',
                 f'--output={tmp_path / "offline_export"}'),
  }
  cache = tmp_path_factory.getbasetemp() / 'jax_cache'
  with concurrent.futures.ThreadPoolExecutor(4) as pool:
    futures = {name: pool.submit(jax_subprocess.launch, *args, cache=cache) for name, args in commands.items()}
    results = {name: f.result() for name, f in futures.items()}
  good = results['stream']
  assert good.returncode == 0, good.stderr[-3000:]
  lines = [line for line in good.stdout.splitlines() if ' s  frame ' in line]
  assert len(lines) == 5, good.stdout  # 2 frames a second (4 frames per 2 s) of 2.5 s.
  assert all('step ' in line and 'class ' in line for line in lines)
  assert '5 frames taken of 30 decoded' in good.stdout and 'latency per frame' in good.stdout
  for name, words in (('offline', 'model.causal'), ('no input', 'no such file'),
                      ('export', 'model.causal')):
    output = results[name].stdout + results[name].stderr
    errors_ = [line for line in output.splitlines() if line.startswith('error: ')]
    assert results[name].returncode == 2 and len(errors_) == 1, output[-3000:]
    assert words in errors_[0] and 'Traceback' not in output, errors_
  assert not os.path.exists(tmp_path / 'offline_export')
