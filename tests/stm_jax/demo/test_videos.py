"""The demo's synthetic dataset: real webm files in the sthv2 layout, balanced, deterministic, and
every class the exact time reversal of its partner (checked on pixels)."""

import collections
import dataclasses
import json
import os

import av
import numpy as np
import pytest

from configs import demo as demo_config
from input_pipeline import sampling
from input_pipeline.prepare.layouts import sthv2
from stm_jax.demo import videos


def _config(**demo):
  config = demo_config.get_config()
  config.demo.videos_per_class = 2
  config.demo.val_videos_per_class = 1
  config.demo.num_frames = 8
  config.demo.frame_size = 32
  for k, v in demo.items():
    config.demo[k] = v
  return config


def _decode(path):
  with av.open(path) as container:
    return np.stack([f.to_ndarray(format='rgb24') for f in container.decode(video=0)])


def _spec(config, pair, reverse=False, **fields):
  """A spec of `pair` drawn as the generator draws it, with `fields` replaced."""
  label = 2 * list(config.demo.pairs).index(pair) + int(reverse)
  spec = videos.sample_spec(np.random.default_rng(7), label, config)
  return dataclasses.replace(spec, **fields)


@pytest.fixture(scope='module')
def written(tmp_path_factory):
  config = _config()
  raw = str(tmp_path_factory.mktemp('demo_raw'))
  manifest = videos.write_dataset(raw, config)
  return config, raw, manifest


def test_layout_is_accepted_by_the_sthv2_reader_with_balanced_classes(written):
  config, raw, manifest = written
  layout = sthv2.read(raw)
  assert layout.class_names == videos.class_names(config)
  assert len(layout.class_names) == 8 and not manifest['skipped']
  assert layout.class_names[0] == 'Moving something from left to right'
  for split, per_class in (('train', 2), ('validation', 1)):
    counts = collections.Counter(e.label for e in layout.splits[split])
    assert counts == {c: per_class for c in range(8)}, split
  ids = [e.video_id for entries in layout.splits.values() for e in entries]
  assert len(ids) == len(set(ids)) == manifest['counts']['train'] + manifest['counts']['validation']
  with open(os.path.join(raw, 'labels', 'train.json')) as f:
    item = json.load(f)[0]
  assert item['template'] == 'Moving [something] from left to right'
  assert item['label'] == item['template'].replace('[something]', item['placeholders'][0])


def test_files_are_real_vp9_webm_videos(written):
  config, raw, _ = written
  entries = sthv2.read(raw).splits['validation']
  assert len(entries) == 8
  for e in entries:
    with av.open(e.path) as container:
      assert container.streams.video[0].codec_context.name == 'vp9'
    frames = _decode(e.path)
    assert frames.shape == (config.demo.num_frames, 32, 32, 3)
    assert frames.std() > 5  # not blank


def test_decoded_files_match_the_rendering(written):
  config, raw, _ = written
  vid, label = videos.dataset_plan(config)['validation'][3]
  spec = videos.video_spec(config, 'validation', 3, label)
  rendered = videos.render(spec, config.demo.num_frames, config.demo.frame_size)
  decoded = _decode(os.path.join(raw, videos.VIDEO_DIR, f'{vid}.webm'))
  assert np.abs(decoded.astype(int) - rendered).mean() < 8  # VP9's 4:2:0 chroma


def test_rerun_skips_and_other_settings_are_refused(written):
  config, raw, manifest = written
  again = videos.write_dataset(raw, config)
  assert again['skipped'] and again['fingerprint'] == manifest['fingerprint']
  with pytest.raises(FileExistsError, match='other settings'):
    videos.write_dataset(raw, _config(seed=1))


def test_the_same_seed_gives_the_same_dataset_and_another_seed_another(written, tmp_path):
  config, raw, _ = written
  videos.write_dataset(str(tmp_path), _config())
  for name in ('train.json', 'validation.json', 'labels.json'):
    with open(os.path.join(raw, 'labels', name)) as a, open(tmp_path / 'labels' / name) as b:
      assert json.load(a) == json.load(b)
  vid = videos.dataset_plan(config)['train'][5][0]
  np.testing.assert_array_equal(_decode(os.path.join(raw, videos.VIDEO_DIR, f'{vid}.webm')),
                                _decode(str(tmp_path / videos.VIDEO_DIR / f'{vid}.webm')))
  other = videos.video_spec(_config(seed=1), 'train', 5, 5)
  assert other != videos.video_spec(config, 'train', 5, 5)


@pytest.mark.parametrize('pair', list(videos.PAIRS))
def test_each_class_is_its_partner_played_backwards(written, pair):
  config, raw, _ = written
  n, size = config.demo.num_frames, config.demo.frame_size
  forward = _spec(config, pair)
  backward = dataclasses.replace(forward, reverse=True)
  np.testing.assert_array_equal(videos.render(backward, n, size),
                                videos.render(forward, n, size)[::-1])
  # On the written files: a video of the reversed class, played backwards, is the forward
  # class's clip of the same parameters.
  label = 2 * list(config.demo.pairs).index(pair) + 1
  index, vid = next((i, v) for i, (v, l) in enumerate(videos.dataset_plan(config)['train'])
                    if l == label)
  spec = videos.video_spec(config, 'train', index, label)
  assert spec.reverse and videos.partner(label) == label - 1
  played_backwards = _decode(os.path.join(raw, videos.VIDEO_DIR, f'{vid}.webm'))[::-1]
  as_forward = videos.render(dataclasses.replace(spec, reverse=False), n, size)
  error = np.abs(played_backwards.astype(int) - as_forward).mean()
  assert error < 8  # VP9's 4:2:0 chroma and quantisation
  assert error < np.abs(played_backwards.astype(int) - as_forward[::-1]).mean()


def _moments(mask):
  ys, xs = np.mgrid[0:mask.shape[0], 0:mask.shape[1]]
  total = mask.sum()
  cx, cy = (mask * xs).sum() / total, (mask * ys).sum() / total
  mu20 = (mask * (xs - cx) ** 2).sum()
  mu02 = (mask * (ys - cy) ** 2).sum()
  mu11 = (mask * (xs - cx) * (ys - cy)).sum()
  return cx, total, 0.5 * np.arctan2(2 * mu11, mu20 - mu02)


@pytest.mark.parametrize('pair', list(videos.PAIRS))
def test_forward_classes_do_what_their_names_say(pair):
  """Left to right: the object's centre moves right; closer: it grows; clockwise: its axis turns
  clockwise on screen (y down); appear: its opacity-weighted area grows. Reversed: the opposite."""
  config = _config(num_frames=12, frame_size=48)
  spec = _spec(config, pair, shape='bar', window=(-1.0, 11.0), centre=(24.0, 24.0),
               background='solid')
  if pair == 'appear':
    spec = dataclasses.replace(spec, amount=1.0)
  for reverse, sign in ((False, 1), (True, -1)):
    _, masks = videos.render(dataclasses.replace(spec, reverse=reverse), 12, 48,
                                with_masks=True)
    x, area, angle = zip(*[_moments(m) for m in masks])
    measure = {'left_right': x, 'approach': area, 'appear': area,
               'rotate': np.unwrap(angle, period=np.pi)}[pair]
    steps = sign * np.diff(measure)
    assert np.all(steps > 0), (pair, reverse, measure)


def test_rotating_objects_are_never_round():
  config = _config()
  label = 2 * list(config.demo.pairs).index('rotate')
  shapes = {videos.sample_spec(np.random.default_rng(i), label, config).shape
            for i in range(200)}
  assert 'circle' not in shapes and len(shapes) == len(videos.SHAPES) - 1


@pytest.mark.parametrize('variant', ['full', 'quick'])
def test_the_demo_configs_sample_a_video_and_its_reversal_alike(variant):
  """With frames per video an odd multiple of T, TSN's training segments and validation centres
  are mirror images in time, so a video and its reversal reach TSN through the same frames."""
  config = demo_config.get_config(variant)
  n, t = config.demo.num_frames, config.data.num_frames
  val = sampling.val_indices(n, t)
  np.testing.assert_array_equal(val, (n - 1 - val)[::-1])
  bounds = np.arange(t + 1) * n // t
  np.testing.assert_array_equal(bounds, (n - bounds)[::-1])
  assert not config.data.random_flip  # left/right is in the labels
  assert config.data.short_side == config.demo.frame_size  # stored as generated
  assert config.data.num_classes == 2 * len(config.demo.pairs)


def test_an_interrupted_run_resumes_and_keeps_its_videos(tmp_path):
  config = _config()
  first = videos.write_dataset(str(tmp_path), config)
  os.remove(tmp_path / videos.MANIFEST)  # as if killed before the end...
  (tmp_path / videos.PARTIAL).write_text(json.dumps({'fingerprint': first['fingerprint']}))
  vid = videos.dataset_plan(config)['train'][0][0]
  path = tmp_path / videos.VIDEO_DIR / f'{vid}.webm'
  os.remove(path)  # ...with one video not written yet
  kept = tmp_path / videos.VIDEO_DIR / f'{int(vid) + 1}.webm'
  mtime = os.path.getmtime(kept)
  again = videos.write_dataset(str(tmp_path), config)
  assert not again['skipped'] and path.exists() and os.path.getmtime(kept) == mtime
  assert not (tmp_path / videos.PARTIAL).exists()
  os.remove(tmp_path / videos.MANIFEST)
  (tmp_path / videos.PARTIAL).write_text(json.dumps({'fingerprint': 'other'}))
  with pytest.raises(FileExistsError, match='unfinished'):
    videos.write_dataset(str(tmp_path), config)
