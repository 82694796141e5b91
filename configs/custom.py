"""Your own videos: list files of `path label` lines, or a folder per class (layouts/custom.py).

`num_classes = 0` takes the class count from the data when preparing; the prepare summary prints it,
and training needs it set (`--config.data.num_classes=N`). Horizontal flip is on: turn it off with
`--config.data.random_flip=False` if left/right matters in your labels.
"""

from configs import default


def get_config():
  """Returns the custom-data recipe."""
  config = default.get_config()
  config.data.dataset = 'custom'
  config.data.num_classes = 0
  config.data.random_flip = True
  return config
