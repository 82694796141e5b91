"""A tiny STM network for tests and smoke runs on CPU: width 16, one block a stage, 4 frames at 32x32.

Trains in seconds on any prepared dataset: pass `--config.data.dataset`, `--config.data.data_dir`
and `--config.data.num_classes` of it.
"""

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
  config.batch_size = 4
  config.optim.epochs = 4
  config.optim.decay_epochs = (3,)
  config.checkpoint_every_steps = 4
  config.log_every_steps = 1
  return config
