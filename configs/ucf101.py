"""UCF-101: 101 classes, splits 1-3, STM-ResNet-50, 8 frames, from Kinetics weights (paper Table 4).

Raw data: `UCF-101/<Class>/*.avi` and `ucfTrainTestlist/`. Choose the split with
`--config.data.split=2`; each split is prepared as its own dataset (stm_ucf101/split<k>).
"""

from configs import default


def get_config(num_frames: str = '8'):
  """Returns the UCF-101 recipe (split 1 by default) (`configs/ucf101.py:16` for 16 frames)."""
  config = default.get_config()
  config.data.num_frames = int(num_frames)
  config.data.dataset = 'ucf101'
  config.data.num_classes = 101
  config.data.split = 1
  config.data.random_flip = True
  default.use_fine_tune_schedule(config)
  return config
