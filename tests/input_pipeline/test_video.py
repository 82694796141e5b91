"""`video.sampled_video_to_jpegs`: the kept frames, the count and the errors are those of the
converter's `video_to_jpegs`, in every container the fixtures write."""

import numpy as np
import pytest

from input_pipeline import video
from tests import video_fixtures


def _every_other(n):
  return range(0, n, 2)


@pytest.mark.parametrize('ext,num_frames,size', [
    ('.mp4', 11, (300, 400)),  # larger than the short side: resized as the converter does
    ('.webm', 9, (32, 48)),   # metadata announces 0 frames: counted by decoding
    ('.avi', 7, (32, 48)),
    ('.mkv', 13, (32, 48)),
])
def test_sampled_frames_equal_the_converters(tmp_path, ext, num_frames, size):
  path = video_fixtures.write_video(str(tmp_path / f'v{ext}'), num_frames, *size)
  full, fps = video.video_to_jpegs(path, 256, 90)
  asked = []
  sampled, sampled_fps = video.sampled_video_to_jpegs(
      path, 256, 90, lambda n: asked.append(n) or _every_other(n))
  assert asked == [num_frames] and len(sampled) == len(full) == num_frames
  assert sampled_fps == fps == video_fixtures.FPS
  for i in _every_other(num_frames):
    assert sampled[i] == full[i]
  with pytest.raises(KeyError, match=f'frame 1 of {num_frames} was not decoded'):
    sampled[1]  # pylint: disable=pointless-statement


def test_a_wrong_packet_count_is_corrected_by_decoding(tmp_path, monkeypatch):
  path = video_fixtures.write_video(str(tmp_path / 'v.mp4'), 10)
  monkeypatch.setattr(video, '_count_packets', lambda p: 7)
  asked = []
  sampled, _ = video.sampled_video_to_jpegs(path, 256, 90,
                                            lambda n: asked.append(n) or [n - 1])
  full, _ = video.video_to_jpegs(path, 256, 90)
  assert asked == [7, 10] and len(sampled) == 10 and sampled[9] == full[9]


@pytest.mark.parametrize('write,name,word', [
    (video_fixtures.write_zero_bytes, 'bad.mp4', 'empty'),
    (video_fixtures.write_not_a_video, 'bad.mp4', 'not a readable video'),
    (lambda p: video_fixtures.write_truncated(p, 12, keep=0.6), 'bad.webm', 'truncated'),
    (video_fixtures.write_truncated, 'bad.mp4', 'not a readable video'),  # index at the end
    (video_fixtures.write_no_frames, 'bad.avi', 'no frames'),
])
def test_unusable_files_raise_the_converters_error(tmp_path, write, name, word):
  path = write(str(tmp_path / name))
  with pytest.raises(video.VideoError) as converter:
    video.video_to_jpegs(path, 256, 90)
  with pytest.raises(video.VideoError) as sampled:
    video.sampled_video_to_jpegs(path, 256, 90, _every_other)
  assert str(sampled.value) == str(converter.value) and word in str(sampled.value)


def test_frames_keep_their_gray_levels(tmp_path):
  path = video_fixtures.write_video(str(tmp_path / 'v.webm'), 12)
  sampled, _ = video.sampled_video_to_jpegs(path, 256, 90, lambda n: [3, 8])
  import simplejpeg  # pylint: disable=g-import-not-at-top
  for i in (3, 8):
    rgb = simplejpeg.decode_jpeg(sampled[i], colorspace='RGB')
    assert abs(float(np.median(rgb[:, 8:])) - video_fixtures.level(i)) < 4
