"""HMDB-51: 51 classes, splits 1-3, STM-ResNet-50 at 8 frames from Kinetics weights (paper Table 4).

Raw data: the unpacked per-class folders `<class>/*.avi` and `testTrainMulti_7030_splits/`. Choose
the split with `--config.data.split=2`; each split is prepared as its own dataset
(stm_hmdb51/split<k>).
"""

from configs import default


def get_config(num_frames: str = '8'):
  """Returns the HMDB-51 recipe (split 1 by default) (`configs/hmdb51.py:16` for 16 frames)."""
  config = default.get_config()
  config.data.num_frames = int(num_frames)
  config.data.dataset = 'hmdb51'
  config.data.num_classes = 51
  config.data.split = 1
  config.data.random_flip = True
  default.use_fine_tune_schedule(config)
  return config
