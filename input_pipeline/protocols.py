"""The evaluation protocols: which views of a video are scored, the one definition of them.

  val   1 view: the segment centres (TSN's validation clip), frames at `short_side`, a centre
        `crop_size` square. What training evaluates with.
  test  `config.data.num_clips x config.data.num_crops` views (paper 4.2: 10 x 3): clips evenly
        spread inside the segments (sampling.test_indices), each cut into 1 or 3 squares of the
        full short side (centre; or both ends and the centre of the long side) resized to
        `crop_size`.

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
  (`num_crops` squares as tall as the frame, resized to `crop_size`).
  """
  name: str
  num_clips: int
  num_crops: int
  crop: str

  @property
  def views_per_video(self) -> int:
    """How many clips x crops one video gives."""
    return self.num_clips * self.num_crops

  def clip_indices(self, num_frames: int, clip_frames: int) -> np.ndarray:
    """The frames of each clip of a video of `num_frames` frames: `(num_clips, clip_frames)`."""
    return sampling.test_indices(num_frames, clip_frames, self.num_clips)

  def box(self, height: int, width: int, crop: int, *, short_side: int,
          crop_size: int) -> transforms.Box:
    """Crop `crop` (0 .. num_crops-1) of a stored frame of `height` x `width`."""
    if self.crop == 'centre':
      return transforms.center_box(height, width, short_side=short_side, crop_size=crop_size)
    return transforms.test_boxes(height, width, num_crops=self.num_crops)[crop]


VAL = Protocol('val', num_clips=1, num_crops=1, crop='centre')


def test_protocol(num_clips: int, num_crops: int) -> Protocol:
  """The multi-view test protocol with `num_clips` clips and `num_crops` (1 or 3) crops."""
  return Protocol('test', num_clips=int(num_clips), num_crops=int(num_crops),
                  crop='full_short_side')


def check_name(name: str) -> None:
  """Raises a UserError unless `name` is a protocol."""
  if name not in NAMES:
    raise errors.UserError(f'eval protocol {name!r}: must be one of {", ".join(NAMES)}')


def from_config(config, name: str) -> Protocol:
  """The protocol `name` with the view counts of `config.data`."""
  check_name(name)
  if name == 'val':
    return VAL
  return test_protocol(config.data.num_clips, config.data.num_crops)
