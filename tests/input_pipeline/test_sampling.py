"""Golden tests of the sampled frame indices, pure and read back from decoded clips."""

import numpy as np
import pytest

from configs import default
from input_pipeline import errors
from input_pipeline import pipeline
from input_pipeline import protocols
from input_pipeline import sampling
from tests import clip_fixtures

T = 8


# --- pure indices -----------------------------------------------------------------------------

@pytest.mark.parametrize('n, expected', [
    (1, [0, 0, 0, 0, 0, 0, 0, 0]),
    (3, [0, 0, 0, 1, 1, 1, 2, 2]),
    (5, [0, 0, 1, 1, 2, 3, 3, 4]),
    (8, [0, 1, 2, 3, 4, 5, 6, 7]),
    (16, [1, 3, 5, 7, 9, 11, 13, 15]),
    (20, [1, 3, 6, 8, 11, 13, 16, 18]),
])
def test_val_golden(n, expected):
  np.testing.assert_array_equal(sampling.val_indices(n, T), expected)


def test_test_golden():
  np.testing.assert_array_equal(sampling.test_indices(20, T, 2), [
      [0, 3, 5, 8, 10, 13, 15, 18],
      [1, 4, 6, 9, 11, 14, 16, 19],
  ])
  # 10 clips at 1/20, 3/20, ... of 10-frame segments: frames 0, 1, ..., 9 of each segment.
  np.testing.assert_array_equal(sampling.test_indices(80, T, 10),
                                np.arange(10)[:, None] + 10 * np.arange(T)[None, :])
  np.testing.assert_array_equal(sampling.test_indices(8, T, 3), np.tile(np.arange(8), (3, 1)))
  np.testing.assert_array_equal(sampling.test_indices(3, T, 2),
                                [[0, 0, 0, 1, 1, 1, 2, 2]] * 2)
  np.testing.assert_array_equal(sampling.test_indices(20, T, 1)[0], sampling.val_indices(20, T))


def test_train_golden_seeded():
  # numpy is pinned; this is the stream of np.random.default_rng(0).integers(starts, stops).
  rng = np.random.default_rng(0)
  np.testing.assert_array_equal(sampling.train_indices(20, T, rng), [1, 3, 6, 7, 10, 12, 15, 17])
  np.testing.assert_array_equal(sampling.train_indices(8, T, rng), np.arange(8))
  np.testing.assert_array_equal(sampling.train_indices(3, T, rng), [0, 0, 0, 1, 1, 1, 2, 2])


@pytest.mark.parametrize('n', [8, 9, 15, 20, 101])
def test_train_one_frame_per_segment_covering_all(n):
  rng = np.random.default_rng(1)
  bounds = np.arange(T + 1) * n // T
  seen = [set() for _ in range(T)]
  for _ in range(400):
    idx = sampling.train_indices(n, T, rng)
    assert ((idx >= bounds[:-1]) & (idx < bounds[1:])).all()
    for k, i in enumerate(idx):
      seen[k].add(int(i))
  # Every frame of every segment is reachable (the tail of the video included).
  assert [sorted(s) for s in seen] == [list(range(bounds[k], bounds[k + 1])) for k in range(T)]


def test_train_deterministic_for_a_seed():
  a = sampling.train_indices(50, T, np.random.default_rng(7))
  b = sampling.train_indices(50, T, np.random.default_rng(7))
  np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize('n', [1, 2, 7, 8, 9, 33, 1000])
def test_indices_in_range_sorted(n):
  for idx in [sampling.val_indices(n, T), sampling.train_indices(n, T, np.random.default_rng(0)),
              *sampling.test_indices(n, T, 10)]:
    assert idx.shape == (T,) and idx.dtype == np.int64
    assert idx.min() >= 0 and idx.max() < n
    assert (np.diff(idx) >= 0).all()


def test_empty_video_is_an_error():
  with pytest.raises(ValueError, match='0 frames'):
    sampling.val_indices(0, T)
  with pytest.raises(ValueError, match='0 frames'):
    sampling.train_indices(0, T, np.random.default_rng(0))
  with pytest.raises(ValueError, match='0 frames'):
    sampling.test_indices(0, T, 2)


# --- against the peers' code (their published index formulas, written out here) ---------------

def _tsm_val(n, t):
  """TSM's `TSNDataSet._get_val_indices` (RGB, 0-based): segment centres when n > T, else 0s."""
  if n > t:
    tick = n / float(t)
    return [int(tick / 2.0 + tick * x) for x in range(t)]
  return [0] * t


def _tsm_twice(n, t):
  """TSM's `_get_test_indices` with `twice_sample`: the centres, then the segment starts."""
  tick = n / float(t)
  return [[int(tick / 2.0 + tick * x) for x in range(t)], [int(tick * x) for x in range(t)]]


def _mmaction2_test(n, t):
  """mmaction2's `SampleFrames._get_test_clips` for clip_len=1 (TSN/TSM), one clip."""
  interval = n / float(t)
  return [int(k * interval + interval / 2.0) for k in range(t)]


@pytest.mark.parametrize('t', [8, 16])
def test_val_is_tsms_and_mmaction2s_for_videos_longer_than_t(t):
  for n in range(t + 1, 301):
    assert sampling.val_indices(n, t).tolist() == _tsm_val(n, t) == _mmaction2_test(n, t), n
  # The documented differences: at n == T TSM takes frame 0 T times (its test is n > T), we and
  # mmaction2 every frame; below T we repeat every frame in order, TSM takes frame 0.
  assert _tsm_val(t, t) == [0] * t
  assert sampling.val_indices(t, t).tolist() == _mmaction2_test(t, t) == list(range(t))
  assert sampling.val_indices(3, t).tolist() == (np.arange(t) * 3 // t).tolist() != _tsm_val(3, t)


@pytest.mark.parametrize('t', [8, 16])
def test_tsm_twice_is_tsms_twice_sample(t):
  for n in range(t, 301):
    assert sampling.test_indices(n, t, 2, 'tsm_twice').tolist() == _tsm_twice(n, t), n
  np.testing.assert_array_equal(sampling.test_indices(20, T, 2, 'tsm_twice'), [
      [1, 3, 6, 8, 11, 13, 16, 18],  # floor((k + 1/2) * 2.5)
      [0, 2, 5, 7, 10, 12, 15, 17],  # floor(k * 2.5)
  ])
  # Short videos keep the short-video rule in every clip.
  np.testing.assert_array_equal(sampling.test_indices(3, T, 2, 'tsm_twice'),
                                [[0, 0, 0, 1, 1, 1, 2, 2]] * 2)


def test_test_clip_offsets_are_checked_naming_the_field():
  with pytest.raises(ValueError, match="'tsm_twice' take 2 clips, not 10"):
    sampling.test_indices(50, T, 10, 'tsm_twice')
  with pytest.raises(ValueError, match="'random'"):
    sampling.test_indices(50, T, 2, 'random')
  config = default.get_config()
  config.data.test_clip_offsets = 'tsm_twice'
  with pytest.raises(errors.ConfigError, match=r"config\.data\.test_clip_offsets='tsm_twice'.*"
                     r'--config\.data\.num_clips=2'):
    protocols.from_config(config, 'test')
  config.data.num_clips = 2
  protocol = protocols.from_config(config, 'test')
  assert protocol.views_per_video == 2 * config.data.num_crops
  np.testing.assert_array_equal(protocol.clip_indices(20, T), sampling.test_indices(20, T, 2,
                                                                                    'tsm_twice'))
  config.data.test_clip_offsets = 'random'
  with pytest.raises(errors.ConfigError, match=r"config\.data\.test_clip_offsets='random'"):
    protocols.check_config(config)


# --- end to end: what the decoded clip shows --------------------------------------------------

SPEC = pipeline.ClipSpec(num_frames=T, crop_size=32, short_side=40)


@pytest.mark.parametrize('n', [3, 8, 20])
def test_train_clip_shows_sampled_frames(n):
  rec = clip_fixtures.record(0, n)
  for seed in range(3):
    clip = pipeline.TrainClip(SPEC).random_map(rec, np.random.default_rng(seed))
    expected = sampling.train_indices(n, T, np.random.default_rng(seed))  # drawn first
    assert clip['clips'].shape == (T, 32, 32, 3) and clip['clips'].dtype == np.uint8
    assert clip_fixtures.clip_indices(clip['clips']) == expected.tolist()


@pytest.mark.parametrize('n', [3, 8, 20])
def test_val_and_test_clips_show_sampled_frames(n):
  source = [clip_fixtures.record(0, n)]
  val = pipeline.EvalView(source, SPEC, protocols.VAL, global_batch_size=1, shard_index=0,
                         shard_count=1)
  assert clip_fixtures.clip_indices(val.map(0)['clips']) == sampling.val_indices(n, T).tolist()
  spec = pipeline.ClipSpec(num_frames=T, crop_size=32, short_side=40)
  test = pipeline.EvalView(source, spec, protocols.test_protocol(2, 3), global_batch_size=1,
                           shard_index=0,
                           shard_count=1)
  expected = sampling.test_indices(n, T, 2)
  for view in range(6):
    clip, _ = divmod(view, 3)
    assert clip_fixtures.clip_indices(test.map(view)['clips']) == expected[clip].tolist()


def test_tsm_twice_clips_show_tsms_frames():
  source = [clip_fixtures.record(0, 20)]
  test = pipeline.EvalView(source, SPEC, protocols.test_protocol(2, 1, 'tsm_twice'),
                           global_batch_size=1, shard_index=0, shard_count=1)
  assert [clip_fixtures.clip_indices(test.map(v)['clips']) for v in range(2)] == _tsm_twice(20, T)
