"""Your own videos: list files of `path label` lines, or a folder per class (layouts/custom.py).

`num_classes = 0` takes the class count from the data when preparing; the prepare summary prints it,
and training needs it set (`--config.data.num_classes=N`). Horizontal flip is on: turn it off with
`--config.data.random_flip=False` if left/right matters in your labels.
"""

from configs import default


def get_config(num_frames: str = '8'):
  """Returns the custom-data recipe (`configs/custom.py:16` for 16 frames)."""
  config = default.get_config()
  config.data.num_frames = int(num_frames)
  config.data.dataset = 'custom'
  config.data.num_classes = 0
  config.data.random_flip = True
  return config
