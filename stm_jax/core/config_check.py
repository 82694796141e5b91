"""The one check of a whole config, run before any compute: every field, its allowed values.

`check(config)` raises `errors.ConfigError('config.<field>=<value>: <rule>')` for the first field
that cannot work. Fields are declared (with a comment each) in configs/default.py; the model's
rules sit beside the model table (`models.check_model_config`), the rest here. Paths are checked
where they are used (they may be empty where a mode does not need them).
"""

import ml_collections

from input_pipeline import datasets
from input_pipeline import errors
from input_pipeline import protocols
from input_pipeline.prepare import layouts
from stm_jax import models


def _positive_int(field: str, value) -> None:
  if not isinstance(value, int) or isinstance(value, bool) or value < 1:
    raise errors.bad_field(field, value, 'must be a positive integer')


def check_data(config: ml_collections.ConfigDict, preparing: bool = False) -> None:
  """The `data` fields: clip geometry, augmentation, views, loading and preparation.

  `preparing`: `num_classes` may be 0 (the custom layout then takes the count from the data).
  """
  d = config.data
  for field in ('num_frames', 'crop_size', 'short_side', 'num_clips', 'videos_per_shard'):
    _positive_int(f'data.{field}', d[field])
  if not isinstance(d.num_classes, int) or d.num_classes < (0 if preparing else 1):
    raise errors.bad_field('data.num_classes', d.num_classes,
                           'must be the dataset\'s class count' +
                           (' (or 0: from the data)' if preparing else
                           ' (the prepare summary prints it)'))
  if d.num_crops not in (1, 3):
    raise errors.bad_field('data.num_crops', d.num_crops, 'must be 1 or 3')
  if not d.scales or any(not 0 < s <= 1 for s in d.scales):
    raise errors.bad_field('data.scales', d.scales, 'must be crop scales in (0, 1]')
  if d.max_distort < 0:
    raise errors.bad_field('data.max_distort', d.max_distort, 'must be >= 0')
  pairs = d.flip_label_map.items() if hasattr(d.flip_label_map, 'items') else d.flip_label_map
  if any(len(pair) != 2 or not all(0 <= a and (a < d.num_classes or not d.num_classes)
                                   for a in pair) for pair in pairs):
    raise errors.bad_field('data.flip_label_map', d.flip_label_map,
                           f'must be pairs (label, label after flip) in [0, {d.num_classes})')
  if d.eval_split not in ('train', 'validation', 'test'):
    raise errors.bad_field('data.eval_split', d.eval_split,
                           "must be 'validation', 'test' or 'train'")
  if d.num_workers < -1:
    raise errors.bad_field('data.num_workers', d.num_workers, 'must be >= 0, or -1 (auto)')
  for field in ('num_threads', 'prepare_workers'):
    if d[field] < 0:
      raise errors.bad_field(f'data.{field}', d[field], 'must be >= 0 (0: auto)')
  if d.raw_format not in layouts.FORMATS:
    raise errors.bad_field('data.raw_format', d.raw_format, f'must be one of {layouts.FORMATS}')
  for field in ('format', 'output_format'):
    allowed = datasets.FORMATS + (('',) if field == 'output_format' else ())
    if d[field] not in allowed:
      raise errors.bad_field(f'data.{field}', d[field], f'must be one of {allowed}')
  if d.split not in (1, 2, 3):
    raise errors.bad_field('data.split', d.split, 'must be 1, 2 or 3 (the official splits)')
  if not 1 <= d.jpeg_quality <= 100:
    raise errors.bad_field('data.jpeg_quality', d.jpeg_quality, 'must be in [1, 100]')
  if not isinstance(d.stored_short_side, int) or d.stored_short_side < 0:
    raise errors.bad_field('data.stored_short_side', d.stored_short_side,
                           'must be >= 0 (0: frames stored at data.short_side)')
  protocols.check_config(config)


def check_optim(config: ml_collections.ConfigDict) -> None:
  """`batch_size` and the `optim` fields (the paper's recipe, train/optim.py)."""
  o = config.optim
  _positive_int('batch_size', config.batch_size)
  if not 0 < o.base_lr < float('inf'):
    raise errors.bad_field('optim.base_lr', o.base_lr, 'must be positive and finite')
  if not 0 <= o.momentum < 1:
    raise errors.bad_field('optim.momentum', o.momentum, 'must be in [0, 1)')
  if o.nesterov and o.momentum == 0:
    raise errors.bad_field('optim.nesterov', o.nesterov, 'needs optim.momentum > 0')
  if o.weight_decay < 0:
    raise errors.bad_field('optim.weight_decay', o.weight_decay, 'must be >= 0')
  if not o.epochs > 0:
    raise errors.bad_field('optim.epochs', o.epochs, 'must be positive')
  decay = tuple(o.decay_epochs)
  if list(decay) != sorted(set(decay)) or any(not 0 < e < o.epochs for e in decay):
    raise errors.bad_field('optim.decay_epochs', decay,
                           'must be increasing epochs strictly between 0 and '
                           f'optim.epochs={o.epochs}')
  if not 0 < o.decay_factor <= 1:
    raise errors.bad_field('optim.decay_factor', o.decay_factor, 'must be in (0, 1]')
  if not 0 <= o.warmup_epochs < o.epochs:
    raise errors.bad_field('optim.warmup_epochs', o.warmup_epochs,
                           f'must be in [0, optim.epochs={o.epochs})')
  if o.clip_grad_norm < 0:
    raise errors.bad_field('optim.clip_grad_norm', o.clip_grad_norm, 'must be >= 0 (0 = off)')
  _positive_int('optim.grad_accum_steps', o.grad_accum_steps)
  if config.batch_size % o.grad_accum_steps:
    raise errors.bad_field('optim.grad_accum_steps', o.grad_accum_steps,
                           f'must divide batch_size={config.batch_size}')


def check_run(config: ml_collections.ConfigDict) -> None:
  """The bookkeeping fields of a training run: checkpoints, logs, evaluation."""
  for field in ('checkpoint_every_steps', 'keep_checkpoints', 'log_every_steps'):
    _positive_int(field, config[field])
  if config.eval_every_epochs < 0:
    raise errors.bad_field('eval_every_epochs', config.eval_every_epochs,
                           'must be >= 0 (0 = never)')
  steps = tuple(config.profile_steps)
  if steps and (len(steps) != 2 or not all(isinstance(s, int) for s in steps)
                or not 1 <= steps[0] <= steps[1]):
    raise errors.bad_field('profile_steps', config.profile_steps,
                           'must be () or (first, last) training steps, 1 <= first <= last')


def check(config: ml_collections.ConfigDict, mode: str = 'train') -> None:
  """Checks every field of `config` that `mode` reads (`prepare` reads the data fields only);
  raises a ConfigError naming the first bad one."""
  if mode == 'prepare':
    check_data(config, preparing=True)
    return
  check_data(config)
  models.check_model_config(config)
  check_optim(config)
  check_run(config)
