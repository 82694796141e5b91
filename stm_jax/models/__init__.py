"""The STM model family: `create(config)` builds the network a config describes."""

import jax
import jax.numpy as jnp
import ml_collections

from stm_jax import config_errors
from stm_jax.models import resnet
from stm_jax.models import temporal

# The faster channel-wise conv form per backend, from benchmarks/model_speed.py
# (docs/benchmarks.md). TPU is unmeasured: shift-adds need no grouped-conv support.
DEFAULT_CHANNELWISE_IMPL = {'cpu': 'shift', 'gpu': 'shift', 'tpu': 'shift'}
DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}



def check_model_config(config: ml_collections.ConfigDict) -> None:
  """Checks the model fields of a config, raising a ValueError that names the bad field."""
  m = config.model
  if m.temporal_module not in resnet.TEMPORAL_MODULES:
    config_errors.fail('model.temporal_module', m.temporal_module,
                       f'must be one of {resnet.TEMPORAL_MODULES}')
  if m.temporal_conv not in resnet.TEMPORAL_CONVS:
    config_errors.fail('model.temporal_conv', m.temporal_conv,
                       f'must be one of {resnet.TEMPORAL_CONVS}')
  if not set(m.stages) <= {2, 3, 4, 5}:
    config_errors.fail('model.stages', m.stages, 'stages are numbered 2-5 as in the paper')
  if not m.blocks and m.depth not in resnet.BLOCKS_BY_DEPTH:
    config_errors.fail('model.depth', m.depth, f'must be one of {sorted(resnet.BLOCKS_BY_DEPTH)} '
          '(or set model.blocks)')
  if m.blocks and (len(m.blocks) != 4 or min(m.blocks) < 1):
    config_errors.fail('model.blocks', m.blocks, 'needs four stages of at least one block')
  if m.width < 1:
    config_errors.fail('model.width', m.width, 'must be positive')
  if m.temporal_module in ('cmm', 'stm', 'stm_concat') and m.width // m.cmm_reduction < 1:
    config_errors.fail('model.cmm_reduction', m.cmm_reduction,
          f'CMM needs at least one reduced channel: model.width={m.width} // cmm_reduction is 0')
  if m.temporal_module == 'tsm' and m.width // m.tsm_fold_div < 1:
    config_errors.fail('model.tsm_fold_div', m.tsm_fold_div, 'shifts no channel at this width')
  if m.dtype not in DTYPES:
    config_errors.fail('model.dtype', m.dtype, f'must be one of {tuple(DTYPES)}')
  if m.channelwise_impl not in ('auto',) + temporal.IMPLS:
    config_errors.fail('model.channelwise_impl', m.channelwise_impl,
                       f"must be 'auto' or one of {temporal.IMPLS}")
  if not 0.0 <= m.dropout_rate < 1.0:
    config_errors.fail('model.dropout_rate', m.dropout_rate, 'must be in [0, 1)')
  if config.data.num_frames < 1:
    config_errors.fail('data.num_frames', config.data.num_frames, 'must be at least 1')
  if config.data.num_classes < 1:
    config_errors.fail('data.num_classes', config.data.num_classes, 'must be at least 1')


def create(config: ml_collections.ConfigDict) -> resnet.STMResNet:
  """Returns the (unbound) Flax module the config describes, after checking its fields.

  `module.apply(variables, clips, train=False)` gives logits `(B, num_classes)`; with
  `train=True` pass `rngs={'dropout': key}` and `mutable=['batch_stats']`.
  """
  check_model_config(config)
  m = config.model
  impl = m.channelwise_impl
  if impl == 'auto':
    impl = DEFAULT_CHANNELWISE_IMPL.get(jax.default_backend(), 'shift')
  return resnet.STMResNet(
      num_classes=config.data.num_classes,
      num_frames=config.data.num_frames,
      blocks=tuple(m.blocks) or resnet.BLOCKS_BY_DEPTH[m.depth],
      width=m.width,
      temporal_module=m.temporal_module,
      temporal_conv=m.temporal_conv,
      stages=tuple(m.stages),
      first_block_only=m.first_block_only,
      cmm_reduction=m.cmm_reduction,
      tsm_fold_div=m.tsm_fold_div,
      dropout_rate=m.dropout_rate,
      channelwise_impl=impl,
      dtype=DTYPES[m.dtype])
