"""Something-Something v2: 174 classes, STM-ResNet-50, 8 frames (paper Table 1).

Raw data: `20bn-something-something-v2/<id>.webm` and `labels/{labels,train,validation,test}.json`.
No horizontal flip: left/right is part of the label.
"""

from configs import default


def get_config(num_frames: str = '8'):
  """Returns the Something-Something v2 recipe (`configs/sthv2.py:16` for 16 frames)."""
  config = default.get_config()
  config.data.num_frames = int(num_frames)
  config.data.dataset = 'sthv2'
  config.data.num_classes = 174
  config.data.random_flip = False
  return config
