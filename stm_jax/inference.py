"""A trained model ready for inference: what predict, visualize and export start from.

`--checkpoint` may name
  * a training run directory (`launch.py --mode=train --workdir=DIR`): the model is rebuilt from
    the run's `config.json`, with the best-by-validation checkpoint when the run kept one, else
    the latest, and the dataset's class names from `class_names.json`;
  * a weights directory written by `launch.py --mode=convert`: the model is the one `--config`
    describes (the class names are then `class <i>`).
"""

import dataclasses
import os
from typing import Any

import jax
import jax.numpy as jnp
import flax.linen as nn
import ml_collections

from stm_jax import checkpointing
from stm_jax import models
from stm_jax import run_info
from stm_jax import sharding


@dataclasses.dataclass
class LoadedModel:
  """A model, its variables (`{'params', 'batch_stats'}`) and where they came from."""
  config: ml_collections.ConfigDict
  model: nn.Module
  variables: dict[str, Any]
  class_names: list[str]
  step: int | None  # Training step of the checkpoint (None for converted weights).
  description: str  # E.g. 'best checkpoint (step 120) of /runs/a'.

  def logits(self, clips: jax.Array) -> jax.Array:
    """Class logits of uint8 clips (B, T, H, W, 3), inference mode."""
    return self.model.apply(self.variables, clips, train=False)


def is_run_directory(directory: str) -> bool:
  """Whether `directory` is a training run (rather than converted weights)."""
  return run_info.has_config(directory) or os.path.isdir(
      os.path.join(directory, checkpointing.CHECKPOINT_DIR))


def load(checkpoint: str, config: ml_collections.ConfigDict) -> LoadedModel:
  """Loads `checkpoint` (a run directory or converted weights; see the module docstring).

  `config` describes the model only when the checkpoint does not (converted weights, or a run
  written before runs saved their config). Raises FileNotFoundError / ValueError naming the
  directory when there is nothing loadable there.
  """
  checkpoint = os.path.abspath(checkpoint)
  if not os.path.isdir(checkpoint):
    raise FileNotFoundError(f'{checkpoint}: no such directory (expected a training run '
                            'directory or weights written by launch.py --mode=convert)')
  if is_run_directory(checkpoint):
    return _load_run(checkpoint, config)
  return _load_converted(checkpoint, config)


def _class_names(directory: str, num_classes: int) -> list[str]:
  names = run_info.read_class_names(directory)
  if names is None:
    return [f'class {i}' for i in range(num_classes)]
  if len(names) != num_classes:
    raise ValueError(f'{os.path.join(directory, run_info.CLASS_NAMES_FILE)}: {len(names)} '
                     f'names for a model of {num_classes} classes')
  return names


def _load_run(workdir: str, config: ml_collections.ConfigDict) -> LoadedModel:
  from stm_jax import evaluate  # pylint: disable=g-import-not-at-top
  if run_info.has_config(workdir):
    config = run_info.read_config(workdir)
  models.check_model_config(config)
  model = models.create(config)
  which = 'best' if checkpointing.has_best(workdir) else None
  step, variables = evaluate.restore_variables(config, workdir, model, sharding.make_mesh(),
                                               which)
  kind = 'best' if which else 'latest'
  return LoadedModel(config=config, model=model, variables=variables,
                     class_names=_class_names(workdir, config.data.num_classes), step=step,
                     description=f'{kind} checkpoint (step {step}) of {workdir}')


def _load_converted(directory: str, config: ml_collections.ConfigDict) -> LoadedModel:
  from stm_jax import convert  # pylint: disable=g-import-not-at-top
  from stm_jax import train  # pylint: disable=g-import-not-at-top
  models.check_model_config(config)
  model = models.create(config)
  try:
    variables = convert.restore(directory)
  except Exception as e:  # pylint: disable=broad-except
    raise ValueError(f'{directory}: neither a training run directory (no config.json or '
                     f'checkpoints/) nor weights written by --mode=convert ({e})') from e
  size = config.data.crop_size
  clips = jnp.zeros((1, config.data.num_frames, size, size, 3), jnp.uint8)
  expected = jax.eval_shape(model.init, jax.random.key(0), clips)
  train.check_variables(variables, {c: expected[c] for c in ('params', 'batch_stats')})
  return LoadedModel(config=config, model=model, variables=variables,
                     class_names=_class_names(directory, config.data.num_classes), step=None,
                     description=f'converted weights in {directory}')
