"""Crop geometry, resizing, flips (with the label swap), val centre crop and the test crops."""

import logging

import numpy as np
import pytest
import simplejpeg

from input_pipeline import pipeline
from input_pipeline import protocols
from input_pipeline import sampling
from input_pipeline import transforms
from tests import clip_fixtures

Box = transforms.Box


def coordinate_image(height, width):
  """uint8 RGB image whose red channel is x and green channel is y (sizes up to 256)."""
  a = np.zeros((height, width, 3), np.uint8)
  a[..., 0] = np.arange(width)[None, :]
  a[..., 1] = np.arange(height)[:, None]
  return a


# --- geometry ---------------------------------------------------------------------------------

def test_crop_sizes_tsm_scales():
  # int(256 * s) for s in (1, .875, .75, .66) = 256, 224, 192, 168; one scale step of distortion.
  assert transforms.crop_sizes(256, 224) == [
      (256, 256), (224, 256),
      (256, 224), (224, 224), (192, 224),
      (224, 192), (192, 192), (168, 192),
      (192, 168), (168, 168)]
  assert transforms.crop_sizes(256, 224, max_distort=0) == [
      (256, 256), (224, 224), (192, 192), (168, 168)]
  # A size within 3 pixels of the output snaps to it (TSM): int(40 * .75) = 30 -> 32.
  assert {w for w, _ in transforms.crop_sizes(40, 32)} == {40, 35, 32, 26}


def test_crop_offsets_corners_and_centre():
  # 340x256 frame, 224x192 crop: quarter steps of the free space are 29 and 16 pixels.
  assert transforms.crop_offsets(340, 256, 224, 192) == [
      (0, 0), (116, 0), (0, 64), (116, 64), (58, 32)]
  assert len(transforms.crop_offsets(340, 256, 224, 192, more_fix_crop=True)) == 13


def test_train_box_at_short_side_is_exact():
  sizes = transforms.crop_sizes(256, 224)
  crop = transforms.TrainCrop(size_index=sizes.index((224, 192)), offset_index=3, flip=False)
  assert transforms.train_box(256, 340, crop, short_side=256, crop_size=224) == Box(116, 64, 224,
                                                                                    192)
  # Portrait frame: the long side is vertical.
  crop = transforms.TrainCrop(size_index=sizes.index((168, 168)), offset_index=4, flip=False)
  assert transforms.train_box(340, 256, crop, short_side=256, crop_size=224) == Box(44, 86, 168,
                                                                                    168)


def test_train_box_scales_with_stored_size():
  # A frame stored at half the short side gets the same box, halved.
  sizes = transforms.crop_sizes(256, 224)
  for size_index in range(len(sizes)):
    for offset_index in range(5):
      crop = transforms.TrainCrop(size_index, offset_index, False)
      full = transforms.train_box(256, 340, crop, short_side=256, crop_size=224)
      half = transforms.train_box(128, 170, crop, short_side=256, crop_size=224)
      for a, b in zip(dataclasses_astuple(full), dataclasses_astuple(half)):
        assert abs(a / 2 - b) <= 0.5


def dataclasses_astuple(box):
  return (box.x, box.y, box.w, box.h)


def test_every_box_and_position_is_reachable():
  sizes = transforms.crop_sizes(256, 224)
  rng = np.random.default_rng(0)
  drawn = {(c.size_index, c.offset_index, c.flip) for c in (
      transforms.sample_train_crop(rng, num_sizes=len(sizes), more_fix_crop=False,
                                   random_flip=True) for _ in range(2000))}
  assert drawn == {(s, o, f) for s in range(10) for o in range(5) for f in (False, True)}
  no_flip = {transforms.sample_train_crop(rng, num_sizes=10, more_fix_crop=False,
                                          random_flip=False).flip for _ in range(100)}
  assert no_flip == {False}


def test_center_box():
  assert transforms.center_box(256, 340, short_side=256, crop_size=224) == Box(58, 16, 224, 224)
  assert transforms.center_box(340, 256, short_side=256, crop_size=224) == Box(16, 58, 224, 224)
  # Something-Something v1 frames (100 high): the virtual 224 square at the stored scale.
  assert transforms.center_box(100, 176, short_side=256, crop_size=224) == Box(45, 6, 88, 88)


def test_test_boxes():
  assert transforms.test_boxes(256, 340, num_crops=3) == [
      Box(0, 0, 256, 256), Box(42, 0, 256, 256), Box(84, 0, 256, 256)]
  assert transforms.test_boxes(340, 256, num_crops=3) == [
      Box(0, 0, 256, 256), Box(0, 42, 256, 256), Box(0, 84, 256, 256)]
  assert transforms.test_boxes(256, 340, num_crops=1) == [Box(42, 0, 256, 256)]
  with pytest.raises(ValueError):
    transforms.test_boxes(256, 340, num_crops=2)


# --- pixels -----------------------------------------------------------------------------------

def test_crop_resize_exact_crop_and_flip():
  image = coordinate_image(60, 80)
  box = Box(10, 5, 32, 32)
  clip = transforms.crop_resize([image, image], [box, box], 32)
  assert clip.shape == (2, 32, 32, 3) and clip.dtype == np.uint8
  np.testing.assert_array_equal(clip[0], image[5:37, 10:42])
  flipped = transforms.crop_resize([image], [box], 32, flip=True)
  np.testing.assert_array_equal(flipped[0], image[5:37, 10:42][:, ::-1])


def test_crop_resize_maps_the_box_onto_the_output():
  image = coordinate_image(200, 250)
  box = Box(40, 20, 160, 120)
  out = transforms.crop_resize([image], [box], 64)[0].astype(np.float64)
  # Bilinear with half-pixel centres: output pixel j samples x = 40 + (j + 0.5) * 160/64 - 0.5.
  x = 40 + (np.arange(64) + 0.5) * 160 / 64 - 0.5
  y = 20 + (np.arange(64) + 0.5) * 120 / 64 - 0.5
  np.testing.assert_allclose(out[0, :, 0], x, atol=1.0)
  np.testing.assert_allclose(out[:, 0, 1], y, atol=1.0)


def test_decode_reads_each_frame_once_and_returns_rgb():
  rec = clip_fixtures.record(0, 6, height=24, width=32)
  images = transforms.decode(rec['frames'], [5, 5, 0, 2])
  assert [clip_fixtures.frame_index(i) for i in images] == [5, 5, 0, 2]
  assert images[0] is images[1]
  assert images[0].shape == (24, 32, 3) and images[0].dtype == np.uint8


# --- the clips the pipeline makes -------------------------------------------------------------

SPEC = pipeline.ClipSpec(num_frames=4, crop_size=32, short_side=40)


def decoded(rec, i):
  """Frame i of a record, decoded whole (the reference the crops are cut from)."""
  return transforms.decode(rec['frames'], [i])[0]


def blue_profile(image):
  """The blue ramp along x, averaged over rows."""
  return image[..., 2].astype(np.float64).mean(axis=0)


def test_train_flip_and_label_map():
  rec = clip_fixtures.record(0, 8, label=3)
  spec = pipeline.ClipSpec(num_frames=4, crop_size=32, short_side=40,
                           flip_label_map=pipeline.normalize_label_map({3: 4, 4: 3}))
  seen = set()
  for seed in range(40):
    out = pipeline.TrainClip(spec).random_map(rec, np.random.default_rng(seed))
    directions = {clip_fixtures.ramp_direction(f) for f in out['clips']}
    assert len(directions) == 1  # the whole clip is flipped or not
    flipped = directions == {-1}
    assert int(out['label']) == (4 if flipped else 3)
    seen.add(flipped)
  assert seen == {False, True}


def test_train_no_flip_when_disabled():
  rec = clip_fixtures.record(0, 8, label=3)
  spec = pipeline.ClipSpec(num_frames=4, crop_size=32, short_side=40, random_flip=False,
                           flip_label_map=((3, 4),))
  for seed in range(20):
    out = pipeline.TrainClip(spec).random_map(rec, np.random.default_rng(seed))
    assert {clip_fixtures.ramp_direction(f) for f in out['clips']} == {1}
    assert int(out['label']) == 3


def test_train_crop_position_matches_box():
  rec = clip_fixtures.record(0, 4)
  spec = pipeline.ClipSpec(num_frames=4, crop_size=32, short_side=40, random_flip=False)
  sizes = transforms.crop_sizes(40, 32)
  for seed in range(10):
    rng = np.random.default_rng(seed)
    out = pipeline.TrainClip(spec).random_map(rec, rng)
    rng = np.random.default_rng(seed)
    sampling.train_indices(4, 4, rng)  # drawn before the crop
    crop = transforms.sample_train_crop(rng, num_sizes=len(sizes), more_fix_crop=False,
                                        random_flip=False)
    box = transforms.train_box(40, 56, crop, short_side=40, crop_size=32)
    first = clip_fixtures.frame_index(out['clips'][0])
    ramp = blue_profile(decoded(rec, first))
    # Bilinear with half-pixel centres: output column j samples x = box.x + (j + .5) w / 32 - .5.
    x = box.x + (np.arange(32) + 0.5) * box.w / 32 - 0.5
    np.testing.assert_allclose(blue_profile(out['clips'][0]), np.interp(x, np.arange(56), ramp),
                               atol=1.5)


def test_val_centre_crop():
  source = [clip_fixtures.record(0, 8)]
  view = pipeline.EvalView(source, SPEC, protocols.VAL, global_batch_size=1, shard_index=0,
                          shard_count=1)
  clips = view.map(0)['clips']
  assert clips.shape == (4, 32, 32, 3)
  # Short side 40 = stored size: the exact 32x32 square at x = (56 - 32) / 2 = 12, y = 4.
  for t, i in enumerate(sampling.val_indices(8, 4)):
    np.testing.assert_array_equal(clips[t], decoded(source[0], i)[4:36, 12:44])


def test_test_three_crops_cover_left_centre_right():
  source = [clip_fixtures.record(0, 8)]
  spec = pipeline.ClipSpec(num_frames=4, crop_size=32, short_side=40)
  view = pipeline.EvalView(source, spec, protocols.test_protocol(1, 3), global_batch_size=1,
                          shard_index=0,
                           shard_count=1)
  ramp = blue_profile(decoded(source[0], sampling.test_indices(8, 4, 1)[0, 0]))
  crops = [blue_profile(view.map(i)['clips'][0]) for i in range(3)]
  # 40x40 squares at x = 0, 8, 16 of the 56-wide frame, resized to 32.
  for crop, x0 in zip(crops, (0, 8, 16)):
    x = x0 + (np.arange(32) + 0.5) * 40 / 32 - 0.5
    np.testing.assert_allclose(crop, np.interp(x, np.arange(56), ramp), atol=1.5)
  assert crops[0][0] < 6 and crops[2][-1] > 249


# --- views whatever size the frames were stored at ---------------------------------------------

def test_output_size():
  assert transforms.output_size(300, 400, 256) == (256, 341)
  assert transforms.output_size(400, 300, 256) == (341, 256)
  assert transforms.output_size(100, 176, 256) == (100, 176)  # never upscaled
  assert transforms.output_size(100, 176, 0) == (100, 176)


def test_frames_stored_larger_are_area_resized_to_the_short_side():
  small = clip_fixtures.frame(3, 40, 56)
  large = np.repeat(np.repeat(small, 3, axis=0), 3, axis=1)  # the same frame stored at 120
  [out] = transforms.to_short_side([large], 40)
  np.testing.assert_array_equal(out, small)  # area averaging of 3x3 blocks: exact
  images = transforms.to_short_side([large, large, small], 40)
  assert images[0] is images[1]  # one resize per distinct frame
  assert images[2] is small  # already at the short side: untouched


def test_frames_stored_smaller_are_kept_and_warned_about_once(monkeypatch, caplog):
  monkeypatch.setattr(transforms, '_warned_small', False)
  small = clip_fixtures.frame(0, 32, 48)
  with caplog.at_level(logging.WARNING):
    assert transforms.to_short_side([small], 40)[0] is small
    transforms.to_short_side([small], 40)
  warnings = [r.getMessage() for r in caplog.records if 'smaller than' in r.getMessage()]
  assert len(warnings) == 1
  assert '32x48' in warnings[0] and 'config.data.short_side=40' in warnings[0]


def test_a_view_is_the_same_whatever_size_the_frames_were_stored_at():
  """The val and test views of a video stored at 3x the run's short side equal those of the same
  video stored at the short side (area averaging of 3x3 blocks is exact), as does training."""
  at_short_side = [clip_fixtures.frame(i, 40, 56) for i in range(8)]
  larger = [np.repeat(np.repeat(f, 3, axis=0), 3, axis=1) for f in at_short_side]

  def record(frames):
    return {'frames': [simplejpeg.encode_jpeg(f, quality=100, colorsubsampling='444')
                       for f in frames], 'label': 0}

  def all_views(frames, protocol):
    view = pipeline.EvalView([record(frames)], SPEC, protocol,
                             global_batch_size=protocol.views_per_video, shard_index=0,
                             shard_count=1)
    return np.stack([view.map(i)['clips'] for i in range(protocol.views_per_video)])

  for protocol in (protocols.VAL, protocols.test_protocol(2, 3)):
    a, b = all_views(at_short_side, protocol), all_views(larger, protocol)
    diff = np.abs(a.astype(int) - b.astype(int))
    assert diff.max() <= 4 and diff.mean() < 1, protocol  # JPEG at quality 100
  for seed in range(5):
    a, b = (pipeline.TrainClip(SPEC).random_map(record(f), np.random.default_rng(seed))['clips']
            for f in (at_short_side, larger))
    diff = np.abs(a.astype(int) - b.astype(int))
    assert diff.max() <= 4 and diff.mean() < 1


def test_a_bilinear_resize_of_the_crop_alone_would_alias():
  """Why frames are area-resized first: a centre crop of a frame stored at 4x, bilinearly resized
  in one step, samples 2 of every 4 pixels of a fine stripe pattern instead of averaging them."""
  stripes = np.zeros((160, 224, 3), np.uint8)
  stripes[:, (np.arange(224) % 4 == 1) | (np.arange(224) % 4 == 2)] = 255  # grey at short side 40
  images = transforms.to_short_side([stripes], 40)
  box = transforms.center_box(*images[0].shape[:2], short_side=40, crop_size=32)
  view = transforms.crop_resize(images, [box], 32)[0]
  assert abs(float(view.mean()) - 127.5) < 2 and view.std() < 2
  direct = transforms.crop_resize([stripes],
                                  [transforms.center_box(160, 224, short_side=40, crop_size=32)],
                                  32)[0]
  assert direct.mean() > 250  # what the views were before: the bright half of the stripes only
