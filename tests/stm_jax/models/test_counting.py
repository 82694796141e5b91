"""Parameter and MAC counts: the paper's full-size figures, and the counter itself."""

import jax
import jax.numpy as jnp
import pytest

from configs import sthv1
from configs import tiny
from stm_jax.models import counting

# 174 classes, 8x224x224 (issue 2, item 4): exact params, MACs within 0.2%.
@pytest.mark.parametrize('overrides,params,gmacs', [
    ({'temporal_module': 'none'}, 23_864_558, 32.70),
    ({'temporal_module': 'tsm'}, 23_864_558, 32.70),
    ({'temporal_module': 'cstm'}, 23_875_886, 32.75),
    ({'temporal_module': 'stm'}, 24_035_666, 33.08),
    ({'temporal_module': 'cstm', 'temporal_conv': 'full'}, 27_636_974, 40.41),
    ({'temporal_module': 'stm', 'num_frames': 16}, 24_035_666, 66.15),
])
def test_full_size_counts_match_the_paper(overrides, params, gmacs):
  config = sthv1.get_config()
  for key, value in overrides.items():
    setattr(config.data if key == 'num_frames' else config.model, key, value)
  result = counting.summarize(config)
  assert result['params'] == params
  assert result['macs'] / 1e9 == pytest.approx(gmacs, rel=2e-3)


def test_counter_counts_convs_and_dense_layers_by_their_shapes():
  config = tiny.get_config()
  macs = counting.count_macs(config)
  # The stem: 7x7x3 taps per output, 16 channels at 16x16, 4 frames.
  assert macs['STMResNet/conv1'] == 4 * 16 * 16 * 16 * 7 * 7 * 3
  # fc: 128*4 features to 5 classes for each of the 4 frames.
  assert macs['STMResNet/fc'] == 4 * 512 * 5
  # CSTM counted as a grouped conv: 3 taps per output element (16 channels at 8x8, 4 frames).
  assert macs['STMResNet/layer1_0/shift'] == 4 * 8 * 8 * 16 * 3
  # CMM's depthwise 3x3 on its one reduced channel.
  assert macs['STMResNet/layer1_0/mb/shift'] == 4 * 8 * 8 * 1 * 9


def test_counts_do_not_depend_on_how_channelwise_convs_are_computed():
  config = tiny.get_config()
  counts = {}
  for impl in ('shift', 'grouped'):
    config.model.channelwise_impl = impl
    counts[impl] = counting.summarize(config)['macs']
  assert counts['shift'] == counts['grouped']
