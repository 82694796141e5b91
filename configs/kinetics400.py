"""Kinetics-400: 400 classes, STM-ResNet-50, 8 frames (paper Table 3).

Raw data: the annotation csvs (`train.csv`, `validate.csv`, `test.csv`) and the clips
`<youtube_id>_<start>_<end>.mp4` as your mirror unpacks them. Horizontal flip on. Every frame is
stored (`data.max_fps` stays 0): docs/data.md, "Capping the stored frame rate", says why, and when
`--config.data.max_fps=16` is a fair way to save disk.
"""

from configs import default


def get_config(num_frames: str = '8'):
  """Returns the Kinetics-400 recipe (`configs/kinetics400.py:16` for 16 frames)."""
  config = default.get_config()
  config.data.num_frames = int(num_frames)
  config.data.dataset = 'kinetics400'
  config.data.num_classes = 400
  config.data.random_flip = True
  return config
