"""A tiny STM network for tests and smoke runs on CPU: width 16, one block a stage, 4 frames at 32x32.

Meant for small frames such as the demo's 40x40 videos (stm_jax/demo/videos.py): a 32-pixel crop of
frames at short side 40, as the demo (the val view is 80% of the short side, the paper's 224/256 is
87.5%; training crops 66-100% of it), not a 32/256 patch. Trains in about a minute on 2 CPU cores;
pass `--config.data.dataset`, `--config.data.data_dir` and `--config.data.num_classes` of a
prepared dataset (and `--config.data.random_flip=False` where left/right is in the labels).

Measured on the demo's quick data (configs/demo.py:quick, 4 classes, 384 training and 128
validation videos of 24 frames at 40x40; `--config.data.dataset=sthv2 --config.data.num_classes=4
--config.data.random_flip=False`), val top-1 of the last checkpoint (chance 25%):
  these defaults (batch 16, base_lr 0.1, 8 epochs, lr x0.1 at epoch 6):  98.4%, 80.5%, 88.3% for
      seeds 0, 1, 2 (192 steps, 55-125 s on a shared 2-core machine);
  the earlier defaults (short side 256, batch 4, base_lr 0.01, 4 epochs): 35.2% (seed 0); with
      short side 40 alone: 32.8%; 4 epochs at batch 16 and base_lr 0.1: 62.5% (0.4: 32.8%).
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
  config.data.short_side = 40
  config.data.crop_size = 32
  config.batch_size = 16
  config.optim.base_lr = 0.1  # x 16 / 64: 0.025 per step
  config.optim.epochs = 8
  config.optim.decay_epochs = (6,)
  config.checkpoint_every_steps = 50
  config.log_every_steps = 1
  return config
