"""A tiny STM network for tests and smoke runs on CPU: width 16, one block a stage, 4 frames at 32x32."""

from configs import default


def get_config():
  """Returns the tiny recipe."""
  config = default.get_config()
  config.data.dataset = 'tiny'
  config.model.width = 16
  config.model.blocks = (1, 1, 1, 1)
  config.model.dropout_rate = 0.0
  config.data.num_classes = 5
  config.data.num_frames = 4
  config.data.crop_size = 32
  return config
