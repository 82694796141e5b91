"""Views of unprepared videos equal, pixel for pixel, the views evaluation reads from the same
videos once prepared by the converter; which files of a folder count as videos."""

import fractions
import logging
import os

import numpy as np
import pytest
import simplejpeg

from configs import custom
from input_pipeline import datasets
from input_pipeline import pipeline
from input_pipeline import protocols
from input_pipeline import sampling
from input_pipeline import video
from input_pipeline import video_clips
from input_pipeline.prepare import converter
from tests import video_fixtures

# (file, frames, height, width): containers of every codec the fixtures write; sizes above and
# below the short side (256); fewer frames than T (4); and a frame folder.
VIDEOS = [('a.mp4', 11, 300, 400), ('b.webm', 9, 32, 48), ('c.avi', 3, 48, 32),
          ('d.mkv', 13, 260, 270), ('e', 6, 32, 48)]


def write_videos(folder: str) -> list[str]:
  """Writes VIDEOS under `folder`; returns their paths."""
  paths = []
  for name, n, h, w in VIDEOS:
    path = os.path.join(folder, name)
    if os.path.splitext(name)[1]:
      video_fixtures.write_video(path, n, h, w)
    else:
      video_fixtures.write_frames(path, n, h, w)
    paths.append(path)
  return paths


@pytest.fixture(scope='module')
def prepared(tmp_path_factory):
  """The VIDEOS, and their records as `launch.py --mode=prepare` stores them (custom list)."""
  tmp = tmp_path_factory.mktemp('clips')
  paths = write_videos(str(tmp / 'videos'))
  with open(tmp / 'train.txt', 'w') as f:
    f.write(''.join(f'{p} {i % 2}\n' for i, p in enumerate(paths)))
  config = video_fixtures.make_config('custom', tmp / 'train.txt', tmp / 'out')
  config.data.num_frames = 4
  config.data.crop_size = 32
  config.data.num_clips = 2
  config.data.num_crops = 3
  converter.prepare(config)
  records = video_fixtures.read_split(config, 'train')
  assert [r['num_frames'] for r in records] == [n for _, n, _, _ in VIDEOS]
  return config, paths, records


@pytest.mark.parametrize('mode', ['val', 'test'])
@pytest.mark.parametrize('run_short_side', [256, 40, 300])
def test_views_equal_the_prepared_datasets(prepared, mode, run_short_side):
  """Whatever the run's short side (the data was prepared at 256): the views are cut from frames
  at the run's short side, and a raw video's frames are stored as the dataset's were."""
  config, paths, records = prepared
  config = config.copy_and_resolve_references()
  config.data.stored_short_side = 256 if run_short_side != 256 else 0
  config.data.short_side = run_short_side
  spec = pipeline.ClipSpec.from_config(config)
  assert spec.storage_short_side == 256
  protocol = protocols.from_config(config, mode)
  batch = protocol.views_per_video
  expected = list(pipeline.eval_dataset(records, spec, protocol, global_batch_size=batch,
                                        shard_index=0, shard_count=1))
  assert len(expected) == len(paths)
  for path, record, want in zip(paths, records, expected):
    frames = video_clips.read_frames(path, spec, protocol, config.data.jpeg_quality)
    assert len(frames) == record['num_frames']
    got = video_clips.views(frames, spec, protocol)
    assert got.shape == (batch, 4, 32, 32, 3) and got.dtype == np.uint8
    np.testing.assert_array_equal(got, want['clips'], err_msg=path)


def test_val_views_take_the_segment_centres(prepared):
  """Independent of the pipeline: the gray level of each frame of the clip names the frame."""
  config, paths, _ = prepared
  spec = pipeline.ClipSpec.from_config(config)
  for path, (_, n, _, _) in zip(paths, VIDEOS):
    clip = video_clips.views(video_clips.read_frames(path, spec, protocols.VAL, 90), spec,
                             protocols.VAL)[0]
    want = [video_fixtures.level(i) for i in sampling.val_indices(n, 4)]
    got = [float(np.median(frame)) for frame in clip]  # centre crop: the gray, not the white bar
    np.testing.assert_allclose(got, want, atol=4, err_msg=path)


def test_only_the_clips_frames_are_decoded(prepared):
  config, paths, _ = prepared
  spec = pipeline.ClipSpec.from_config(config)
  frames = video_clips.read_frames(paths[0], spec, protocols.VAL, 90)
  assert isinstance(frames, video.SampledFrames) and len(frames) == 11
  with pytest.raises(KeyError, match='not decoded'):
    frames[0]  # pylint: disable=pointless-statement  (val of 11 frames in 4 segments: 1 4 6 9)


def test_find_videos(tmp_path):
  root = tmp_path / 'in'
  video_fixtures.write_video(str(root / 'z.mp4'), 4)
  os.rename(video_fixtures.write_video(str(root / 'sub' / 'a.webm'), 4), root / 'sub' / 'a.WEBM')
  video_fixtures.write_frames(str(root / 'sub' / 'frames'), 4)
  video_fixtures.write_frames(str(root / 'sub' / 'frames' / 'nested'), 4)  # inside a frame folder
  video_fixtures.write_not_a_video(str(root / 'notes.txt'))
  video_fixtures.write_video(str(root / '.hidden' / 'h.mp4'), 4)
  found, other = video_clips.find_videos(str(root))
  assert [os.path.relpath(p, root) for p in found] == ['sub/a.WEBM', 'sub/frames', 'z.mp4']
  assert other == 1
  assert video_clips.is_frame_folder(str(root / 'sub' / 'frames'))
  assert not video_clips.is_frame_folder(str(root / 'sub'))
  assert not video_clips.is_frame_folder(str(root / 'z.mp4'))


def test_a_folder_without_frames_is_not_a_video(tmp_path):
  spec = pipeline.ClipSpec.from_config(custom.get_config())
  with pytest.raises(video.VideoError, match='without JPEG frames'):
    video_clips.read_frames(str(tmp_path), spec, protocols.VAL, 90)


def test_upright_square_pixel_videos_are_prepared_and_predicted_alike(tmp_path):
  """Rotation metadata and pixel aspect are applied by prepare and by predict's views alike."""
  paths = [
      video_fixtures.write_marked_video(str(tmp_path / 'v' / 'phone.mp4'), 6, rotation=-90),
      video_fixtures.write_marked_video(str(tmp_path / 'v' / 'tagged.mkv'), 6, rotate_tag='270'),
      video_fixtures.write_marked_video(str(tmp_path / 'v' / 'dv.mp4'), 6,
                                        sar=fractions.Fraction(128, 117)),
  ]
  with open(tmp_path / 'train.txt', 'w') as f:
    f.write(''.join(f'{p} 0\n' for p in paths))
  config = video_fixtures.make_config('custom', tmp_path / 'train.txt', tmp_path / 'out')
  config.data.num_frames, config.data.crop_size, config.data.short_side = 4, 32, 32
  converter.prepare(config)
  records = video_fixtures.read_split(config, 'train')
  stored = [simplejpeg.decode_jpeg(r['frames'][0], colorspace='RGB') for r in records]
  # Turned clockwise, counter-clockwise; square pixels (48 x 128/117 = 52.5 wide).
  assert [s.shape[:2] for s in stored] == [(48, 32), (48, 32), (32, 53)]
  assert [video_fixtures.marker_corners(s) for s in stored] == [
      {'red': 'tr', 'blue': 'tl'}, {'red': 'bl', 'blue': 'br'}, {'red': 'tl', 'blue': 'bl'}]
  spec = pipeline.ClipSpec.from_config(config)
  want = list(pipeline.eval_dataset(records, spec, protocols.VAL, global_batch_size=1,
                                    shard_index=0, shard_count=1))
  for path, batch in zip(paths, want):
    got = video_clips.views(video_clips.read_frames(path, spec, protocols.VAL, 90), spec,
                            protocols.VAL)
    np.testing.assert_array_equal(got, batch['clips'], err_msg=path)


def test_a_dataset_stored_otherwise_than_the_config_says_is_warned_about(prepared, caplog):
  config, _, _ = prepared
  source = datasets.open_source(config, 'train')
  spec = pipeline.ClipSpec.from_config(config)
  run = config.copy_and_resolve_references()
  run.data.short_side = 40  # a run at another short side, not saying how the data was stored
  with caplog.at_level(logging.WARNING):
    pipeline.check_storage(source, spec, 90)  # as prepared: nothing to say
    assert not caplog.records
    pipeline.check_storage(source, pipeline.ClipSpec.from_config(run), 90)
    pipeline.check_storage(source, pipeline.ClipSpec.from_config(run), 90)  # once
    run.data.stored_short_side = 256  # says it: nothing to say
    pipeline.check_storage(source, pipeline.ClipSpec.from_config(run), 90)
  [warning] = [r.getMessage() for r in caplog.records]
  assert 'stored at short side 256, JPEG quality 90; the config says 40, 90' in warning
  assert '--config.data.stored_short_side=256' in warning
