"""The STM model family: `create(config)` builds the network a config describes.

`example_clips` and `init_variables` are the one dummy input and the one fresh initialisation
that training, conversion, loading and counting start from.
"""

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from input_pipeline import errors
from stm_jax.models import resnet
from stm_jax.models import temporal

# The faster channel-wise conv form per backend, from benchmarks/model_speed.py
# (docs/benchmarks.md). TPU is unmeasured: shift-adds need no grouped-conv support.
DEFAULT_CHANNELWISE_IMPL = {'cpu': 'shift', 'gpu': 'shift', 'tpu': 'shift'}
DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}
VARIABLE_COLLECTIONS = ('params', 'batch_stats')


def check_model_config(config: ml_collections.ConfigDict) -> None:
  """Checks the model fields of a config, raising a ConfigError that names the bad field."""
  m = config.model
  if m.temporal_module not in temporal.TEMPORAL_MODULES:
    raise errors.bad_field('model.temporal_module', m.temporal_module,
                           f'must be one of {tuple(temporal.TEMPORAL_MODULES)}')
  if m.temporal_conv not in resnet.TEMPORAL_CONVS:
    raise errors.bad_field('model.temporal_conv', m.temporal_conv,
                           f'must be one of {resnet.TEMPORAL_CONVS}')
  if not set(m.stages) <= {2, 3, 4, 5}:
    raise errors.bad_field('model.stages', m.stages, 'stages are numbered 2-5 as in the paper')
  if not m.blocks and m.depth not in resnet.BLOCKS_BY_DEPTH:
    raise errors.bad_field('model.depth', m.depth,
                           f'must be one of {sorted(resnet.BLOCKS_BY_DEPTH)} (or set model.blocks)')
  if m.blocks and (len(m.blocks) != 4 or min(m.blocks) < 1):
    raise errors.bad_field('model.blocks', m.blocks, 'needs four stages of at least one block')
  if m.width < 1:
    raise errors.bad_field('model.width', m.width, 'must be positive')
  module = temporal.TEMPORAL_MODULES[m.temporal_module]
  if module.cmm and m.width // m.cmm_reduction < 1:
    raise errors.bad_field('model.cmm_reduction', m.cmm_reduction,
                           f'CMM needs at least one reduced channel: model.width={m.width} // '
                           'cmm_reduction is 0')
  if module.input_shift and m.width // m.tsm_fold_div < 1:
    raise errors.bad_field('model.tsm_fold_div', m.tsm_fold_div, 'shifts no channel at this width')
  if m.tsm_placement not in resnet.TSM_PLACEMENTS:
    raise errors.bad_field('model.tsm_placement', m.tsm_placement,
                           f"must be one of {resnet.TSM_PLACEMENTS} ('tsm': TSM's own rule, every "
                           'other block where conv4_x has 23+ blocks; every_block: all blocks)')
  if m.dtype not in ('auto',) + tuple(DTYPES):
    raise errors.bad_field('model.dtype', m.dtype, f"must be 'auto' or one of {tuple(DTYPES)}")
  if m.channelwise_impl not in ('auto',) + temporal.IMPLS:
    raise errors.bad_field('model.channelwise_impl', m.channelwise_impl,
                           f"must be 'auto' or one of {temporal.IMPLS}")
  if not 0.0 <= m.dropout_rate < 1.0:
    raise errors.bad_field('model.dropout_rate', m.dropout_rate, 'must be in [0, 1)')
  if config.data.num_frames < 1:
    raise errors.bad_field('data.num_frames', config.data.num_frames, 'must be at least 1')
  if config.data.num_classes < 1:
    raise errors.bad_field('data.num_classes', config.data.num_classes, 'must be at least 1')


def compute_dtype(dtype: str) -> str:
  """The compute dtype a `model.dtype` value names: 'auto' is bfloat16 on GPU and TPU, where it
  is the fast path (parameters and BN statistics stay float32), and float32 on CPU, where
  bfloat16 is emulated and slower."""
  if dtype != 'auto':
    return dtype
  return 'float32' if jax.default_backend() == 'cpu' else 'bfloat16'


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
      tsm_placement=m.tsm_placement,
      cmm_reduction=m.cmm_reduction,
      tsm_fold_div=m.tsm_fold_div,
      dropout_rate=m.dropout_rate,
      channelwise_impl=impl,
      dtype=DTYPES[compute_dtype(m.dtype)],
      causal=bool(m.causal))


def example_clips(config: ml_collections.ConfigDict, batch: int = 1) -> jax.Array:
  """Zero uint8 clips `(batch, T, crop, crop, 3)`: the input that `init`, `eval_shape` and
  tracing start from (inside `jit` or `eval_shape` nothing is allocated)."""
  size = config.data.crop_size
  return jnp.zeros((batch, config.data.num_frames, size, size, 3), jnp.uint8)


def init_variables(model, config: ml_collections.ConfigDict) -> dict[str, Any]:
  """Fresh `{'params', 'batch_stats'}` of `model` from `config.seed` (wrap in `jax.jit` to run,
  `jax.eval_shape` for shapes only)."""
  variables = model.init(jax.random.key(config.seed), example_clips(config))
  return {c: variables[c] for c in VARIABLE_COLLECTIONS}


def abstract_variables(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """Shapes and dtypes of the model's `{'params', 'batch_stats'}`, computed without running it."""
  model = create(config)
  return jax.eval_shape(lambda: init_variables(model, config))
