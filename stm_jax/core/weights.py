"""Trained weights, wherever they come from: the one way training, evaluation and the tools load them.

A weights path is either
  * a training run directory (`launch.py --mode=train --workdir=DIR`): its `config.json` describes
    the model (`run_directory.resolve_config`), the checkpoint is the best-by-validation one when
    the run kept one, else the latest (or the step asked for), and `class_names.json` names the
    classes;
  * a weights directory written by `launch.py --mode=convert` (an Orbax checkpoint of
    `{'params', 'batch_stats'}`): the model is the one the caller's config describes, the class
    names are `class <i>`.
Only `params` and `batch_stats` are read from a run's checkpoint (not the optimizer state), so no
optimizer is built to load weights. Loading never changes anything on disk: a checkpoint that
is not of the model the config describes is a CheckpointMismatchError naming the arrays, one that
cannot be read (or fails its checksum) an UnreadableCheckpointError; an unreadable best
checkpoint falls back to the latest with one warning when no step was asked for.
"""

import dataclasses
import os
from typing import Any

from absl import logging
import flax.linen as nn
import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from input_pipeline import errors
from input_pipeline import files
from stm_jax import models
from stm_jax.core import checkpointing
from stm_jax.core import run_directory
from stm_jax.core import sharding

# `checkpoint_step` values besides a step number.
AUTO, LATEST, BEST = 'auto', 'latest', 'best'


@dataclasses.dataclass
class Weights:
  """A model, its variables (`{'params', 'batch_stats'}`) and where they came from."""
  config: ml_collections.ConfigDict  # The config of the model the variables belong to.
  model: nn.Module
  variables: dict[str, Any]
  class_names: list[str]
  step: int | None  # Training step of the checkpoint (None for converted weights).
  description: str  # E.g. 'best checkpoint (step 120) of /runs/a'.

  def logits(self, clips: jax.Array) -> jax.Array:
    """Class logits of uint8 clips (B, T, H, W, 3), inference mode."""
    return self.model.apply(self.variables, clips, train=False)


def is_run_directory(path: str) -> bool:
  """Whether `path` is a training run (rather than converted weights)."""
  return (run_directory.has_config(path)
          or (files.resolve(path) / checkpointing.CHECKPOINT_DIR).is_dir())


def save_converted(variables: dict[str, Any], directory: str) -> None:
  """Writes `{'params', 'batch_stats'}` as a weights directory (`--mode=convert`'s output).

  Refuses an existing directory: converted weights always go to a new one.
  """
  directory = files.resolve(directory)
  check_new(directory)
  tree = {c: variables[c] for c in models.VARIABLE_COLLECTIONS}
  with ocp.StandardCheckpointer() as checkpointer:
    checkpointer.save(directory, tree)
    checkpointer.wait_until_finished()


def check_new(directory: str) -> None:
  """Raises an ExistsError if `directory` exists (a conversion or export never overwrites)."""
  if files.resolve(directory).exists():
    raise errors.ExistsError(f'{directory}: already exists; choose another --output or remove '
                             'it')


def _read_converted(directory: str) -> dict[str, Any]:
  """The variables of a weights directory (`save_converted`), as host arrays."""
  try:
    with ocp.StandardCheckpointer() as checkpointer:
      variables = checkpointer.restore(files.resolve(directory))
  except Exception as e:  # pylint: disable=broad-except
    raise errors.UserError(f'{directory}: neither a training run directory (no config.json or '
                           f'checkpoints/) nor weights written by --mode=convert '
                           f'({type(e).__name__})') from None
  if not isinstance(variables, dict) or set(models.VARIABLE_COLLECTIONS) - set(variables):
    raise errors.UserError(f'{directory}: not weights written by --mode=convert (no params and '
                           'batch_stats)')
  variables = {c: variables[c] for c in models.VARIABLE_COLLECTIONS}
  bad = [jax.tree_util.keystr(p) for p, x in jax.tree_util.tree_leaves_with_path(variables)
         if np.issubdtype(np.asarray(x).dtype, np.inexact) and not np.isfinite(x).all()]
  if bad:
    raise errors.UserError(f'{directory}: {len(bad)} arrays of these weights hold NaN or '
                           f'infinite values, e.g. {bad[0]}; convert them again')
  return variables


def _with_class_count(config: ml_collections.ConfigDict,
                      variables: dict[str, Any]) -> ml_collections.ConfigDict:
  """`config` with the class count of the weights' classifier (converted weights carry theirs)."""
  kernel = variables['params'].get('fc', {}).get('kernel')
  if kernel is None or kernel.shape[-1] == config.data.num_classes:
    return config
  config = ml_collections.ConfigDict(config.to_dict())
  config.data.num_classes = int(kernel.shape[-1])
  return config


def check_variables(variables: dict[str, Any], expected: dict[str, Any], what: str) -> None:
  """Raises a UserError naming the first variable missing, extra or misshapen; `what` names
  the variables (e.g. '<path>: the weights')."""
  got = {jax.tree_util.keystr(p): x.shape for p, x in jax.tree_util.tree_leaves_with_path(
      {c: variables.get(c, {}) for c in expected})}
  want = {jax.tree_util.keystr(p): x.shape for p, x in
          jax.tree_util.tree_leaves_with_path(expected)}
  for key in sorted(set(got) | set(want)):
    if got.get(key) != want.get(key):
      raise errors.UserError(f'{what} do not fit the model: {key} has shape '
                             f'{got.get(key, "(missing)")}, the model needs '
                             f'{want.get(key, "(no such variable)")}')


def _class_names(directory: str, num_classes: int) -> list[str]:
  names = run_directory.read_class_names(directory)
  if names is None:
    return [f'class {i}' for i in range(num_classes)]
  if len(names) != num_classes:
    raise errors.UserError(f'{files.resolve(directory) / run_directory.CLASS_NAMES_FILE}: '
                           f'{len(names)} class names for a model of {num_classes} classes '
                           f'(config.data.num_classes={num_classes}); the run\'s files do not '
                           'belong together')
  return names


def _read_run_checkpoint(ckpt: checkpointing.Checkpointer, step: int | None,
                         abstract: dict[str, Any], workdir: str) -> dict[str, Any]:
  """`restore_variables` of checkpoint `step` (None: the newest) of `ckpt`, the mismatch error
  completed with what the run's config.json says."""
  try:
    steps = ckpt.all_steps()
    if not steps:
      raise errors.NotFoundError(f'no checkpoint in {ckpt.directory}: train first '
                                 '(launch.py --mode=train)')
    return ckpt.restore_variables(steps[-1] if step is None else step, abstract)
  except checkpointing.CheckpointMismatchError as e:
    raise checkpointing.CheckpointMismatchError(
        f'{e}; the model comes from {files.resolve(workdir) / run_directory.CONFIG_FILE}, which '
        'does not describe these checkpoints', e.differences) from None
  finally:
    ckpt.close()


def _restore_run(workdir: str, config: ml_collections.ConfigDict, checkpoint_step: int | str,
                 mesh: jax.sharding.Mesh) -> tuple[int, dict[str, Any], str]:
  """(step, variables replicated over `mesh`, which) of a checkpoint of the run `workdir`.

  'auto' takes the best checkpoint when the run kept one; if that one cannot be read, the latest
  (one warning line). Nothing is created, moved or changed in `workdir`.
  """
  replicated = sharding.replicated(mesh)
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated),
                          models.abstract_variables(config))
  which = checkpoint_step
  if checkpoint_step == AUTO:
    which = BEST if checkpointing.has_best(workdir) else LATEST
  if which == BEST:
    if not checkpointing.has_best(workdir):
      raise errors.NotFoundError(f'no best checkpoint in {workdir}: it is kept when training '
                                 'evaluates (config.eval_every_epochs > 0 and a validation split)')
    try:
      restored = _read_run_checkpoint(checkpointing.BestCheckpointer(workdir, read_only=True),
                                      None, abstract, workdir)
    except checkpointing.UnreadableCheckpointError as e:
      if checkpoint_step != AUTO:
        raise
      logging.warning('%s; using the latest checkpoint instead', e)
      which = LATEST
  if which != BEST:
    step = None if which == LATEST else int(checkpoint_step)
    which = 'latest' if which == LATEST else 'step'
    restored = _read_run_checkpoint(checkpointing.Checkpointer(workdir, read_only=True), step,
                                    abstract, workdir)
  variables = {c: restored[c] for c in models.VARIABLE_COLLECTIONS}
  return int(sharding.to_host(restored['step'])), variables, which


def load(path: str, config: ml_collections.ConfigDict, checkpoint_step: int | str = AUTO,
         mesh: jax.sharding.Mesh | None = None) -> Weights:
  """Loads the weights at `path` (a run directory or converted weights; see the docstring).

  `config` describes the model: for a run, the run's own config
  (`run_directory.resolve_config(path, ...)`); converted weights keep the class count of their
  classifier. `checkpoint_step` (runs only): 'auto' (best if
  kept, else latest), 'latest', 'best' or a step number. Variables are replicated over `mesh`
  (default: every device). Raises a UserError naming the path when nothing fits there.
  """
  path = os.fspath(files.resolve(path))
  if not files.resolve(path).is_dir():
    raise errors.NotFoundError(f'{path}: no such directory (expected a training run directory or '
                               'weights written by launch.py --mode=convert)')
  models.check_model_config(config)
  mesh = sharding.make_mesh() if mesh is None else mesh
  if is_run_directory(path):
    step, variables, which = _restore_run(path, config, checkpoint_step, mesh)
    description = f'{which} checkpoint (step {step}) of {path}'
  else:
    variables = _read_converted(path)
    config = _with_class_count(config, variables)
    check_variables(variables, models.abstract_variables(config), f'{path}: the weights')
    variables = jax.device_put(variables, sharding.replicated(mesh))
    step, description = None, f'converted weights in {path}'
  model = models.create(config)
  return Weights(config=config, model=model, variables=variables,
                 class_names=_class_names(path, config.data.num_classes), step=step,
                 description=description)


def host_variables(weights: Weights) -> dict[str, Any]:
  """The variables as numpy arrays on the host (every process reads its own replica)."""
  return jax.tree.map(np.asarray, sharding.to_host(weights.variables))
