"""Something-Something v1: 174 classes, STM-ResNet-50, 8 frames (paper Tables 1, 5-9)."""

from configs import default


def get_config():
  """Returns the Something-Something v1 recipe."""
  config = default.get_config()
  config.data.dataset = 'sthv1'
  config.data.num_classes = 174
  return config
