"""Something-Something v1: 174 classes, STM-ResNet-50, 8 frames (paper Tables 1, 5-9).

Raw data: the 20BN release (JPEG frame folders `20bn-something-something-v1/<id>/` and the
`something-something-v1-*.csv` annotations). No horizontal flip: left/right is part of the label.
"""

from configs import default


def get_config(num_frames: str = '8'):
  """Returns the Something-Something v1 recipe (`configs/sthv1.py:16` for 16 frames)."""
  config = default.get_config()
  config.data.num_frames = int(num_frames)
  config.data.dataset = 'sthv1'
  config.data.num_classes = 174
  config.data.random_flip = False
  return config
