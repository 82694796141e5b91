"""The plain layers every block uses, with ResNet's (torchvision's) conventions."""

import flax.linen as nn


def conv(dtype):
  """Returns a factory of bias-free convs with kaiming fan-out init, computing in `dtype`."""
  def make(features, kernel_size, strides=(1, 1), padding='VALID', name=None):
    return nn.Conv(features, kernel_size, strides=strides, padding=padding, use_bias=False,
                   dtype=dtype, kernel_init=nn.initializers.variance_scaling(2.0, 'fan_out', 'normal'),
                   name=name)
  return make


def batch_norm(train: bool, dtype, name: str) -> nn.BatchNorm:
  """BatchNorm with PyTorch's defaults (momentum 0.1, eps 1e-5); statistics kept in float32.

  Under jit with the batch sharded over a mesh, the statistics are those of the global batch.
  """
  return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=dtype,
                      name=name)
