"""`video.sampled_video_to_jpegs`: the kept frames, the count and the errors are those of the
converter's `video_to_jpegs`, in every container the fixtures write."""

import fractions

import av
from av.sidedata import sidedata
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


# --- upright frames, square pixels ---------------------------------------------------------------

def _first_frame(path, short_side=256):
  """Frame 0 as the converter stores it and as predict keeps it (they must agree), decoded."""
  import simplejpeg  # pylint: disable=g-import-not-at-top
  full, _ = video.video_to_jpegs(path, short_side, 95)
  sampled, _ = video.sampled_video_to_jpegs(path, short_side, 95, lambda n: [0])
  assert sampled[0] == full[0]
  return simplejpeg.decode_jpeg(full[0], colorspace='RGB')


def _read_back(path):
  """(whether frame 0 carries a display matrix, the stream's tags, its sample aspect ratio)."""
  with av.open(path) as container:
    stream = container.streams.video[0]
    frame = next(container.decode(stream))
    matrix = frame.side_data.get(sidedata.Type.DISPLAYMATRIX) is not None
    return matrix, {k.lower(): v for k, v in stream.metadata.items()}, stream.sample_aspect_ratio


def _red_width(rgb):
  """The width of the red marker in pixels, from its red mass in the top rows."""
  top = rgb[:6].astype(float)
  return ((top[..., 0] - top[..., 1]) / 255).sum(axis=1).mean()


# Stored 32 high x 48 wide, red marker top-left, blue bottom-left. (file, how it is marked,
# displayed height x width, corners of red and blue once shown).
ORIENTED = [
    # A phone held upright: landscape frames, displayed turned 90 degrees clockwise.
    ('phone.mp4', dict(rotation=-90), (48, 32), {'red': 'tr', 'blue': 'tl'}),
    ('ccw.mp4', dict(rotation=90), (48, 32), {'red': 'bl', 'blue': 'br'}),
    ('upside_down.mp4', dict(rotation=180), (32, 48), {'red': 'br', 'blue': 'tr'}),
    ('mirror.mp4', dict(hflip=True), (32, 48), {'red': 'tr', 'blue': 'br'}),
    ('mirror_turned.mkv', dict(rotation=90, hflip=True), (48, 32), {'red': 'br', 'blue': 'bl'}),
    # Without a display matrix, the legacy tag (degrees clockwise) of older muxers is read.
    ('tagged.mkv', dict(rotate_tag='90'), (48, 32), {'red': 'tr', 'blue': 'tl'}),
]


@pytest.mark.parametrize('name,how,shape,corners', ORIENTED)
def test_rotation_metadata_is_applied(tmp_path, name, how, shape, corners):
  path = video_fixtures.write_marked_video(str(tmp_path / name), **how)
  matrix, tags, _ = _read_back(path)  # The file really carries what the test says.
  assert matrix == ('rotate_tag' not in how)
  assert tags.get('rotate') == how.get('rotate_tag')
  rgb = _first_frame(path)
  assert rgb.shape[:2] == shape
  assert video_fixtures.marker_corners(rgb) == corners


def test_an_unmarked_video_is_kept_as_stored(tmp_path):
  rgb = _first_frame(video_fixtures.write_marked_video(str(tmp_path / 'plain.mp4')))
  assert rgb.shape[:2] == (32, 48)
  assert video_fixtures.marker_corners(rgb) == {'red': 'tl', 'blue': 'bl'}


@pytest.mark.parametrize('name,sar,width', [
    ('sar.mp4', fractions.Fraction(128, 117), 53),  # 48 x 128/117 = 52.5
    ('sar.mkv', fractions.Fraction(128, 117), 53),
    ('sar.avi', fractions.Fraction(128, 117), 53),
    ('wide.mp4', fractions.Fraction(2), 96),
    ('narrow.mkv', fractions.Fraction(1, 2), 24),
])
def test_non_square_pixels_are_made_square(tmp_path, name, sar, width):
  path = video_fixtures.write_marked_video(str(tmp_path / name), sar=sar)
  assert _read_back(path)[2] == sar
  rgb = _first_frame(path)
  assert rgb.shape[:2] == (32, width)
  assert video_fixtures.marker_corners(rgb) == {'red': 'tl', 'blue': 'bl'}
  # The marker is as much wider than in a video of square pixels as the pixels are.
  plain = _first_frame(video_fixtures.write_marked_video(str(tmp_path / f'plain{name[-4:]}')))
  assert _red_width(rgb) / _red_width(plain) == pytest.approx(float(sar), rel=0.1)


def test_pixel_aspect_then_rotation_then_short_side(tmp_path):
  # 300 x 400 stored pixels of 3:2 shown 600 wide, turned upright: 600 x 300, short side to 256.
  path = video_fixtures.write_marked_video(str(tmp_path / 'v.mp4'), 3, 300, 400, rotation=-90,
                                           sar=fractions.Fraction(3, 2))
  rgb = _first_frame(path)
  assert rgb.shape[:2] == (512, 256)
  assert video_fixtures.marker_corners(rgb) == {'red': 'tr', 'blue': 'tl'}


def _matrix(degrees, hflip=False):
  """FFmpeg's display matrix for a counter-clockwise rotation (then a mirror), as PyAV writes."""
  radians = np.radians(degrees)
  c, s = np.cos(radians), np.sin(radians)
  m = [c, -s, 0, s, c, 0, 0, 0, 1]
  if hflip:
    m = [-m[0], m[1], m[2], -m[3], m[4], m[5], m[6], m[7], m[8]]
  return [int(round(v * 65536)) for v in m[:8]] + [1 << 30]


@pytest.mark.parametrize('degrees,hflip,expected', [
    (0, False, lambda a: a),
    (90, False, lambda a: np.rot90(a, 1)),    # counter-clockwise
    (-90, False, lambda a: np.rot90(a, -1)),  # clockwise
    (180, False, lambda a: np.rot90(a, 2)),
    (0, True, lambda a: a[:, ::-1]),
    (90, True, lambda a: np.rot90(a, 1)[:, ::-1]),
    (80, False, lambda a: np.rot90(a, 1)),    # any angle snaps to the nearest quarter turn
])
def test_display_from_matrix(degrees, hflip, expected):
  a = np.arange(24).reshape(4, 6, 1)
  display = video.display_from_matrix(_matrix(degrees, hflip))
  np.testing.assert_array_equal(display.orient(a), expected(a))
