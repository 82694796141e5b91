"""The evaluation protocols: which views of a video are scored, the one definition of them.

  val   1 view: the segment centres (TSN's validation clip), frames at `short_side`, a centre
        `crop_size` square. What training evaluates with.
  test  `config.data.num_clips x config.data.num_crops` views (paper 4.2: 10 x 3): clips at
        the offsets `config.data.test_clip_offsets` names inside the segments (`even`: evenly
        spread; `tsm_twice`: TSM's two clips at 1/2 and 0; sampling.test_indices), each cut into
        1 or 3 squares of the full short side (centre; or both ends and the centre of the long
        side) resized to `crop_size`.

A video's score is the mean of its views' softmax scores. Views are numbered clip-major, then
crop. The pipeline (`pipeline.eval_dataset`), evaluation and prediction all take a `Protocol`
from `from_config`, so a new protocol is one more entry here.
"""

import dataclasses

import numpy as np

from input_pipeline import errors
from input_pipeline import sampling
from input_pipeline import transforms

NAMES = ('val', 'test')
_CROPS = ('centre', 'full_short_side')


@dataclasses.dataclass(frozen=True)
class Protocol:
  """A protocol's views: `num_clips` clips x `num_crops` crops per video.

  `crop`: 'centre' (one `crop_size` square from frames at `short_side`) or 'full_short_side'
  (`num_crops` squares as tall as the frame, resized to `crop_size`). `clip_offsets`: where the
  clips sit inside the segments (a name of `sampling.TEST_CLIP_OFFSETS`).
  """
  name: str
  num_clips: int
  num_crops: int
  crop: str
  clip_offsets: str = 'even'

  @property
  def views_per_video(self) -> int:
    """How many clips x crops one video gives."""
    return self.num_clips * self.num_crops

  def clip_indices(self, num_frames: int, clip_frames: int) -> np.ndarray:
    """The frames of each clip of a video of `num_frames` frames: `(num_clips, clip_frames)`."""
    return sampling.test_indices(num_frames, clip_frames, self.num_clips, self.clip_offsets)

  def box(self, height: int, width: int, crop: int, *, short_side: int,
          crop_size: int) -> transforms.Box:
    """Crop `crop` (0 .. num_crops-1) of a stored frame of `height` x `width`."""
    if self.crop == 'centre':
      return transforms.center_box(height, width, short_side=short_side, crop_size=crop_size)
    return transforms.test_boxes(height, width, num_crops=self.num_crops)[crop]


VAL = Protocol('val', num_clips=1, num_crops=1, crop='centre')


def test_protocol(num_clips: int, num_crops: int, clip_offsets: str = 'even') -> Protocol:
  """The multi-view test protocol with `num_clips` clips at `clip_offsets` (see
  `sampling.TEST_CLIP_OFFSETS`) and `num_crops` (1 or 3) crops.

  Raises a ConfigError naming `data.test_clip_offsets` when it is unknown or does not fit
  `num_clips` (`tsm_twice` takes 2 clips).
  """
  if clip_offsets not in sampling.TEST_CLIP_OFFSETS:
    raise errors.bad_field('data.test_clip_offsets', clip_offsets,
                           f'must be one of {tuple(sampling.TEST_CLIP_OFFSETS)}')
  fixed = sampling.TEST_CLIP_OFFSETS[clip_offsets]
  if fixed is not None and int(num_clips) != len(fixed):
    raise errors.bad_field('data.test_clip_offsets', clip_offsets,
                           f'takes {len(fixed)} clips per video, config.data.num_clips is '
                           f'{num_clips}: add --config.data.num_clips={len(fixed)}')
  return Protocol('test', num_clips=int(num_clips), num_crops=int(num_crops),
                  crop='full_short_side', clip_offsets=clip_offsets)


def check_name(name: str) -> None:
  """Raises a UserError unless `name` is a protocol."""
  if name not in NAMES:
    raise errors.UserError(f'eval protocol {name!r}: must be one of {", ".join(NAMES)}')


def from_config(config, name: str) -> Protocol:
  """The protocol `name` with the view counts and clip offsets of `config.data`."""
  check_name(name)
  if name == 'val':
    return VAL
  return test_protocol(config.data.num_clips, config.data.num_crops,
                       config.data.test_clip_offsets)


def check_config(config) -> None:
  """Raises a ConfigError naming the field when the test views of `config.data` do not fit
  together, so that a whole-config check can stop before any compute."""
  from_config(config, 'test')
