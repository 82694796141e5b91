"""The paper's optimiser (4.2, docs/design.md section 4): SGD with momentum, L2 decay, step schedule.

lr = `optim.base_lr * batch_size / 64` (linear scaling from the paper's 64 clips), multiplied by
`optim.decay_factor` at the start of each epoch in `optim.decay_epochs`, with an optional linear
warmup. An update is computed as PyTorch's SGD computes it, so that recipes carry over:

  g = clip_by_global_norm(grad, optim.clip_grad_norm)        # optional (TSM: 20)
  g = g + weight_decay * param                               # coupled L2, kernels only by default
  buf = momentum * buf + g;  param -= lr * buf               # (Nesterov optional)

Weight decay: TSM's code (which STM's recipe follows) decays conv and dense kernels and leaves
BatchNorm scales/offsets and biases undecayed; `optim.decay_all_params=True` decays everything.

Epochs are counted in steps of the continuous training stream (input_pipeline/pipeline.py
repeats the shuffled dataset without dropping a partial batch at each epoch's end), so epoch `e`
starts at step `floor(e * num_examples / batch_size)`.
"""

import math
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax

from input_pipeline import errors


# The global batch that `optim.base_lr` is given for (paper: 8 GPUs x 8 clips).
REFERENCE_BATCH = 64



def peak_lr(config: ml_collections.ConfigDict) -> float:
  """The learning rate after warmup: `base_lr` scaled linearly from a batch of 64 clips."""
  return config.optim.base_lr * config.batch_size / REFERENCE_BATCH


def epoch_start_step(epoch: float, num_examples: int, batch_size: int) -> int:
  """The first step of `epoch` (0-based, may be fractional) in a continuous stream of batches."""
  return int(math.floor(epoch * num_examples / batch_size))


def total_steps(config: ml_collections.ConfigDict, num_examples: int) -> int:
  """Steps of a whole run: `optim.epochs` passes over `num_examples` training videos."""
  steps = epoch_start_step(config.optim.epochs, num_examples, config.batch_size)
  if steps < 1:
    raise errors.UserError(f'{config.optim.epochs} epoch(s) of {num_examples} videos make no batch '
                           f'of config.batch_size={config.batch_size}')
  return steps


def learning_rate_schedule(config: ml_collections.ConfigDict,
                           num_examples: int) -> optax.Schedule:
  """Returns step -> learning rate: linear warmup, then x`decay_factor` at each decay epoch.

  `num_examples` is the size of the training set (videos); it converts epochs to steps.
  """
  o = config.optim
  lr = peak_lr(config)
  boundaries = jnp.asarray([epoch_start_step(e, num_examples, config.batch_size)
                            for e in o.decay_epochs] or [jnp.iinfo(jnp.int32).max], jnp.int32)
  warmup = epoch_start_step(o.warmup_epochs, num_examples, config.batch_size)
  factor = o.decay_factor if o.decay_epochs else 1.0

  def schedule(step):
    step = jnp.asarray(step, jnp.int32)
    decays = jnp.sum(step >= boundaries)
    rate = lr * jnp.power(jnp.float32(factor), decays.astype(jnp.float32))
    if warmup > 0:
      rate = rate * jnp.minimum(1.0, (step + 1).astype(jnp.float32) / warmup)
    return rate

  return schedule


def decay_mask(params: Any, decay_all: bool = False) -> Any:
  """Which parameters get weight decay: kernels (conv, dense, temporal), or all of them."""
  def is_decayed(path, _):
    return decay_all or getattr(path[-1], 'key', None) == 'kernel'
  return jax.tree_util.tree_map_with_path(is_decayed, params)


def create_optimizer(config: ml_collections.ConfigDict,
                     num_examples: int) -> optax.GradientTransformation:
  """Returns the SGD transformation of the recipe (clip, decay, momentum, scheduled lr)."""
  o = config.optim
  parts = []
  if o.clip_grad_norm > 0:
    parts.append(optax.clip_by_global_norm(o.clip_grad_norm))
  if o.weight_decay > 0:
    parts.append(optax.add_decayed_weights(
        o.weight_decay, mask=lambda p: decay_mask(p, o.decay_all_params)))
  parts.append(optax.sgd(learning_rate_schedule(config, num_examples),
                         momentum=o.momentum or None, nesterov=o.nesterov))
  return optax.chain(*parts)
