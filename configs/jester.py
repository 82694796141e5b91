"""Jester v1: 27 hand-gesture classes, STM-ResNet-50, 8 frames (paper Table 2).

Raw data: JPEG frame folders `20bn-jester-v1/<id>/` and `jester-v1-*.csv`. No horizontal flip:
gestures such as "Swiping Left" / "Swiping Right" are mirror images of each other.
"""

from configs import default


def get_config(num_frames: str = '8'):
  """Returns the Jester recipe (`configs/jester.py:16` for 16 frames)."""
  config = default.get_config()
  config.data.num_frames = int(num_frames)
  config.data.dataset = 'jester'
  config.data.num_classes = 27
  config.data.random_flip = False
  return config
