"""`--mode=predict` on a tiny trained run: probabilities equal the model's softmax on the clip
evaluation builds from the same video once prepared, whatever short side it was prepared at (the
run's differs); rotated videos; folders, CSV and unreadable files."""

import csv
import os

import av
import cv2
import jax
import numpy as np
import pytest
import simplejpeg

from configs import tiny
from input_pipeline import pipeline
from input_pipeline import protocols
from input_pipeline.prepare import converter
from stm_jax.core import run_directory
from stm_jax.core import weights
from stm_jax.tools import predict
from stm_jax.train import loop
from tests import clip_fixtures
from tests import video_fixtures

CLASSES = ['archery', 'bowling', 'cycling', 'diving', 'fencing', 'golf']
# (file, frames, height, width): every container the fixtures write, above and below 256 pixels.
VIDEOS = [('a.mp4', 11, 300, 400), ('b.webm', 9, 32, 48), ('c.avi', 3, 48, 32),
          ('d.mkv', 13, 260, 270)]
# The short sides the videos are prepared at: above and below the run's (tiny: 40).
STORED = (256, 32)


def _config():
  config = tiny.get_config()
  config.data.num_classes = len(CLASSES)
  config.batch_size = 2
  config.optim.epochs = 1
  config.optim.decay_epochs = ()
  config.data.num_clips = 2
  config.data.num_crops = 3
  return config


def _write_rgb_video(path, images):
  """An h264 mp4 of these uint8 RGB frames, no metadata; returns path."""
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with av.open(path, 'w') as container:
    stream = container.add_stream('libx264', rate=12)
    stream.height, stream.width = images[0].shape[:2]
    stream.pix_fmt = 'yuv420p'
    for image in images:
      frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format='rgb24')
      for packet in stream.encode(frame):
        container.mux(packet)
    for packet in stream.encode():
      container.mux(packet)
  return path


def _write_textured(path, num_frames, height, width):
  """A video of smooth random texture drifting right: detail that storage at another size changes
  (the other fixtures are flat grey)."""
  base = np.random.default_rng(0).integers(0, 256, (height // 8, width // 8, 3)).astype(np.uint8)
  return _write_rgb_video(path, [
      cv2.resize(np.roll(base, i, axis=1), (width, height), interpolation=cv2.INTER_CUBIC)
      for i in range(num_frames)])


def _stored_at(config, short_side):
  """The run's config told that its data was prepared at `short_side`."""
  config = config.copy_and_resolve_references()
  config.data.stored_short_side = short_side
  return config


@pytest.fixture(scope='module')
def prepared(tmp_path_factory):
  """A tiny run of 2 steps with class names; the videos (and a phone video, turned by its
  display matrix), prepared by the converter at each of STORED."""
  tmp = tmp_path_factory.mktemp('predict')
  config = _config()
  workdir = str(tmp / 'run')
  source = clip_fixtures.source([5, 6, 7, 8])
  assert loop.train_and_evaluate(config, workdir, train_source=source).step == 2
  run_directory.write(workdir, config, CLASSES)
  folder = tmp / 'videos'
  paths = [video_fixtures.write_video(str(folder / name), n, h, w) for name, n, h, w in VIDEOS]
  paths.append(video_fixtures.write_marked_video(str(folder / 'phone.mp4'), 7, rotation=-90))
  paths.append(_write_textured(str(folder / 'texture.mp4'), 9, 120, 160))
  with open(tmp / 'list.txt', 'w') as f:
    f.write(''.join(f'{p} 0\n' for p in paths))
  records = {}
  for short_side in STORED:
    data = video_fixtures.make_config('custom', tmp / 'list.txt', tmp / f'out{short_side}',
                                      short_side=short_side)
    converter.prepare(data)
    records[short_side] = video_fixtures.read_split(data, 'train')
  return config, workdir, paths, records


@pytest.fixture(scope='module')
def run(prepared):
  """The run loaded as `--mode=predict` loads it, told that its data was prepared at 256 (the
  custom recipe's short side); the videos and their records."""
  config, workdir, paths, records = prepared
  config = _stored_at(config, 256)
  return config, workdir, weights.load(workdir, config), paths, records[256]


def _reference(loaded, records, mode):
  """Per-video mean softmax of `loaded.logits` on the clips the eval pipeline builds."""
  spec = pipeline.ClipSpec.from_config(loaded.config)
  protocol = protocols.from_config(loaded.config, mode)
  batch = protocol.views_per_video
  logits = jax.jit(loaded.logits)  # The same function; jitted, it runs in a second, not ten.
  out = []
  for b in pipeline.eval_dataset(records, spec, protocol, global_batch_size=batch,
                                 shard_index=0, shard_count=1):
    probs = jax.nn.softmax(np.asarray(logits(b['clips']), np.float64), axis=-1)
    out.append(np.asarray(probs).mean(axis=0))
  return out


def _check_top5(prediction, reference):
  probs = [p for _, _, p in prediction['top5']]
  assert probs == sorted(probs, reverse=True) and sum(probs) <= 1 + 1e-6
  assert [name for _, name, _ in prediction['top5']] == [CLASSES[c] for c, _, _ in
                                                         prediction['top5']]
  np.testing.assert_allclose(prediction['scores'], reference, atol=1e-5)
  np.testing.assert_allclose(probs, np.sort(reference)[::-1][:5], atol=1e-5)


def test_a_video_file_gets_the_eval_protocols_scores(run, capsys):
  config, workdir, loaded, paths, records = run
  reference = _reference(loaded, records, 'val')
  [prediction] = predict.main(config, workdir, paths[0])
  assert prediction['num_frames'] == 11 and prediction['views'] == 1
  _check_top5(prediction, reference[0])
  printed = capsys.readouterr().out
  assert paths[0] in printed and prediction['top5'][0][1] in printed


@pytest.mark.parametrize('mode', ['val', 'test'])
@pytest.mark.parametrize('stored', STORED)
def test_predict_equals_eval_whatever_short_side_the_data_was_prepared_at(prepared, mode, stored):
  """The run's short side (40) is neither of the stored ones; every container and the phone video
  score as evaluation scores them from the data prepared at `stored`, within 1e-5."""
  config, workdir, paths, records = prepared
  assert config.data.short_side == 40 and stored != 40
  stored_sizes = [min(simplejpeg.decode_jpeg_header(r['frames'][0])[:2]) for r in records[stored]]
  assert stored_sizes == ([256, 32, 32, 256, 32, 120] if stored == 256 else [32] * 6)
  loaded = weights.load(workdir, _stored_at(config, stored))
  predictor = predict.create_predictor(loaded, mode)
  for path, reference in zip(paths, _reference(loaded, records[stored], mode)):
    prediction = predictor.predict(path)
    assert prediction['views'] == (6 if mode == 'test' else 1)
    _check_top5(prediction, reference)


def test_predict_differs_from_eval_when_not_told_how_the_data_was_stored(prepared):
  """What makes the test above worth having: the two preparations of the textured video give
  other views, and predict storing raw frames at the run's short side (40, the default when
  stored_short_side is not set) instead of the data's 256 gives other scores (the issue's case)."""
  config, workdir, paths, records = prepared
  spec = pipeline.ClipSpec.from_config(config)
  clips = [next(iter(pipeline.eval_dataset(records[s][-1:], spec, protocols.VAL,
                                           global_batch_size=1, shard_index=0,
                                           shard_count=1)))['clips'] for s in STORED]
  assert np.abs(clips[0].astype(int) - clips[1].astype(int)).mean() > 1
  loaded = weights.load(workdir, config)  # stored_short_side 0: frames stored at 40
  prediction = predict.create_predictor(loaded).predict(paths[-1])
  reference = _reference(loaded, records[256][-1:], 'val')[0]
  assert np.abs(prediction['scores'] - reference).max() > 1e-2  # 0.06 measured


def test_a_rotated_video_is_predicted_upright(run, tmp_path):
  """The phone video (landscape frames, displayed turned clockwise) is predicted as the same
  content written upright, not as its sideways frames, and as evaluation scores it."""
  config, workdir, loaded, paths, records = run
  index = [os.path.basename(p) for p in paths].index('phone.mp4')
  predictor = predict.create_predictor(loaded, 'test')
  phone = predictor.predict(paths[index])
  _check_top5(phone, _reference(loaded, records, 'test')[index])
  stored = video_fixtures.marked_frame()
  sideways = predictor.predict(_write_rgb_video(str(tmp_path / 'sideways.mp4'), [stored] * 7))
  upright = predictor.predict(_write_rgb_video(str(tmp_path / 'upright.mp4'),
                                               [np.rot90(stored, -1)] * 7))
  to_upright = np.abs(phone['scores'] - upright['scores']).max()
  to_sideways = np.abs(phone['scores'] - sideways['scores']).max()
  # Measured: 0.006 (the two files went through h264 differently) and 0.06.
  assert to_upright * 4 < to_sideways


def test_a_folder_writes_a_csv_and_skips_unreadable_videos(run, tmp_path, capsys):
  config, workdir, loaded, paths, _ = run
  folder = tmp_path / 'in'
  for p in paths[:2]:
    os.makedirs(folder / 'sub', exist_ok=True)
    os.link(p, folder / 'sub' / os.path.basename(p))
  video_fixtures.write_frames(str(folder / 'frames'), 7, 40, 56)
  video_fixtures.write_not_a_video(str(folder / 'text.mp4'))
  video_fixtures.write_zero_bytes(str(folder / 'zero.avi'))
  video_fixtures.write_truncated(str(folder / 'cut.webm'), 12, keep=0.6)
  video_fixtures.write_not_a_video(str(folder / 'notes.txt'))  # not a video extension: passed over
  predictions = predict.main(config, workdir, str(folder))
  printed = capsys.readouterr().out
  assert len(predictions) == 3
  with open(folder / 'predictions.csv', newline='') as f:
    rows = list(csv.DictReader(f))
  assert [r['path'] for r in rows] == ['frames', 'sub/a.mp4', 'sub/b.webm']
  assert rows[0]['num_frames'] == '7' and rows[0]['top1'] in CLASSES
  for row, p in zip(rows, predictions):
    scores = [float(row[f'score_{c}']) for c in range(len(CLASSES))]
    np.testing.assert_allclose(scores, p['scores'], rtol=1e-6)
    assert float(row['top1_probability']) == pytest.approx(p['top5'][0][2], rel=1e-6)
  assert '3 of 6 video(s) could not be read' in printed
  for name, word in [('text.mp4', 'not a readable video'), ('zero.avi', 'empty'),
                     ('cut.webm', 'truncated')]:
    assert any(name in line and word in line for line in printed.splitlines()), name
  assert '[1/6] cut.webm: skipped' in printed and 'passed over' in printed

  out = tmp_path / 'elsewhere.csv'
  predict.main(config, workdir, str(folder / 'sub'), output=str(out))
  with open(out, newline='') as f:
    assert [r['path'] for r in csv.DictReader(f)] == ['a.mp4', 'b.webm']
  assert not [n for n in os.listdir(tmp_path) if '.tmp' in n]


def test_a_frame_folder_is_one_video(run, tmp_path):
  config, workdir, _, _, _ = run
  folder = video_fixtures.write_frames(str(tmp_path / 'frames'), 5)
  [prediction] = predict.main(config, workdir, folder, output=str(tmp_path / 'p.csv'))
  assert prediction['num_frames'] == 5
  with open(tmp_path / 'p.csv', newline='') as f:
    assert [r['path'] for r in csv.DictReader(f)] == [folder]


@pytest.mark.parametrize('write,word', [
    (video_fixtures.write_not_a_video, 'not a readable video'),
    (video_fixtures.write_zero_bytes, 'empty file'),
])
def test_a_file_that_is_not_a_video_is_an_error_naming_it(run, tmp_path, write, word):
  config, _, loaded, _, _ = run
  path = write(str(tmp_path / 'clip.mp4'))
  predictor = predict.create_predictor(loaded)
  with pytest.raises(predict.PredictError, match=f'{path}: {word}'):
    predict.predict_file(predictor, path)


def test_missing_input_and_empty_folder(run, tmp_path):
  config, workdir, _, _, _ = run
  with pytest.raises(predict.PredictError, match='no such file or folder'):
    predict.main(config, workdir, str(tmp_path / 'nope.mp4'))
  video_fixtures.write_not_a_video(str(tmp_path / 'empty' / 'readme.txt'))
  with pytest.raises(predict.PredictError, match='no video files'):
    predict.main(config, workdir, str(tmp_path / 'empty'))
  video_fixtures.write_zero_bytes(str(tmp_path / 'bad' / 'zero.mp4'))
  with pytest.raises(predict.PredictError, match='none of its 1 video'):
    predict.main(config, workdir, str(tmp_path / 'bad'))
  assert not os.path.exists(tmp_path / 'bad' / 'predictions.csv')
