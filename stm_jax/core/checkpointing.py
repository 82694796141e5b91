"""Checkpoints of a run: train state and input-iterator state together, async, last K kept.

`<workdir>/checkpoints/<step>/` holds `state` (Orbax StandardSave of the TrainState) and, when
the run has a grain iterator, `data_iter` (one JSON state per process), so a resumed run sees
exactly the batches it would have seen (docs/design.md section 7). Saves are asynchronous: the
arrays are copied off the devices and written in the background while training goes on; the
iterator state, a few bytes, is written before `save` returns, so it matches the train state.

Half-written checkpoints never count: Orbax writes into a temporary directory and renames it
when complete (a leftover of a killed run is removed when the manager opens). A checkpoint that
is complete on disk but cannot be read back (a truncated or deleted file) is renamed to
`corrupt-<step>-<time>` with a warning, and the previous one is used.

`<workdir>/best/<step>/` holds the train state that scored the best validation top-1 so far
(`BestCheckpointer`, one kept); evaluation, prediction and export of a run use it when present.
"""

import os
import time
from typing import Any

from absl import logging
import grain
import jax
from jax.experimental import multihost_utils
import numpy as np
import orbax.checkpoint as ocp

from input_pipeline import errors

CHECKPOINT_DIR = 'checkpoints'
BEST_DIR = 'best'


def _all_processes_agree(ok: bool) -> bool:
  """Whether `ok` holds on every process (so that all take the same branch)."""
  if jax.process_count() == 1:
    return ok
  return bool(np.all(multihost_utils.process_allgather(np.int32(ok))))


class Checkpointer:
  """Saves and restores `{'state', 'data_iter'}` checkpoints under `<workdir>/checkpoints`."""

  def __init__(self, workdir: str, keep: int = 3, async_save: bool = True,
               subdir: str = CHECKPOINT_DIR, read_only: bool = False, **options):
    """Opens (creating) `<workdir>/<subdir>`; keeps the last `keep` saves.

    `read_only`: for commands that only read a run (evaluation, prediction): nothing is created,
    cleaned up or deleted. `options`: further `ocp.CheckpointManagerOptions` (BestCheckpointer's
    ranking).
    """
    self.directory = os.path.join(os.path.abspath(workdir), subdir)
    if read_only:
      options = ocp.CheckpointManagerOptions(read_only=True, create=False, **options)
    else:
      options = ocp.CheckpointManagerOptions(
          max_to_keep=keep, create=True, cleanup_tmp_directories=True,
          enable_async_checkpointing=async_save, **options)
    self._manager = ocp.CheckpointManager(self.directory, options=options)

  def all_steps(self) -> list[int]:
    """The steps of the finished checkpoints on disk, ascending."""
    return sorted(self._manager.all_steps())

  def save(self, step: int, state: Any, data_iter: Any = None,
           metrics: dict[str, float] | None = None) -> None:
    """Starts saving `state` (and the iterator's current position) as checkpoint `step`.

    Returns once the arrays are copied off the devices; call `wait` before exiting.
    """
    items = {'state': ocp.args.StandardSave(state)}
    if data_iter is not None:
      items['data_iter'] = grain.checkpoint.CheckpointSave(data_iter)
    self._manager.save(step, args=ocp.args.Composite(**items), metrics=metrics, force=True)
    logging.info('checkpoint %d: saving to %s', step, self.directory)

  def _restore(self, step: int, abstract_state: Any, data_iter: Any) -> Any:
    items = {'state': ocp.args.StandardRestore(abstract_state)}
    if data_iter is not None:
      items['data_iter'] = grain.checkpoint.CheckpointRestore(data_iter)
    return self._manager.restore(step, args=ocp.args.Composite(**items)).state

  def restore(self, step: int, abstract_state: Any) -> Any:
    """Returns the train state of checkpoint `step` (evaluation of a named checkpoint).

    Raises a ValueError listing the checkpoints on disk when there is no such step.
    """
    if step not in self.all_steps():
      raise errors.UserError(f'no checkpoint {step} in {self.directory} (there are: '
                             f'{self.all_steps() or "none"})')
    return self._restore(step, abstract_state, None)

  def restore_variables(self, step: int, abstract_variables: dict[str, Any]) -> dict[str, Any]:
    """`{'step', 'params', 'batch_stats'}` of checkpoint `step`, placed as `abstract_variables`
    (`{'params', 'batch_stats'}` of ShapeDtypeStructs with shardings) say; the optimizer state is
    not read. Raises a UserError listing the checkpoints on disk when there is no such step."""
    if step not in self.all_steps():
      raise errors.UserError(f'no checkpoint {step} in {self.directory} (there are: '
                             f'{self.all_steps() or "none"})')
    some = jax.tree.leaves(abstract_variables)[0]
    target = {'step': jax.ShapeDtypeStruct((), np.int32, sharding=some.sharding),
              **abstract_variables}
    state = ocp.args.PyTreeRestore(item=target, partial_restore=True,
                                   restore_args=ocp.checkpoint_utils.construct_restore_args(target))
    return self._manager.restore(step, args=ocp.args.Composite(state=state)).state

  def _set_aside(self, step: int) -> str:
    """Renames checkpoint `step` so that the manager no longer sees it; returns the new path."""
    target = os.path.join(self.directory, f'corrupt-{step}-{int(time.time())}')
    if jax.process_index() == 0:
      os.rename(os.path.join(self.directory, str(step)), target)
    multihost_utils.sync_global_devices(f'checkpoint {step} set aside')
    self._manager.reload()
    return target

  def restore_latest(self, abstract_state: Any, data_iter: Any = None) -> Any | None:
    """Returns the newest readable train state, or None when there is no checkpoint.

    `abstract_state` gives the tree, shapes, dtypes and shardings to restore into (e.g.
    `jax.tree.map(ocp.utils.to_shape_dtype_struct, state)`); `data_iter`, if given, is moved to
    the saved position. Unreadable checkpoints are set aside with a warning, newest first.
    """
    start = data_iter.get_state() if data_iter is not None else None
    for step in reversed(self.all_steps()):
      reason = 'another process could not read it'
      try:
        state = self._restore(step, abstract_state, data_iter)
        ok = True
      except Exception as e:  # pylint: disable=broad-except
        reason, ok = f'{type(e).__name__}: {str(e)[:500]}', False
      if _all_processes_agree(ok):
        logging.info('restored checkpoint %d of %s', step, self.directory)
        return state
      target = self._set_aside(step)
      logging.warning('checkpoint %d in %s cannot be read (%s); moved to %s, trying the '
                      'previous one', step, self.directory, reason, target)
    if start is not None:
      data_iter.set_state(start)  # A failed restore may have moved it.
    return None

  def wait(self) -> None:
    """Blocks until the pending save is on disk (and raises if it failed)."""
    self._manager.wait_until_finished()

  def close(self) -> None:
    """Waits for the pending save and releases the manager."""
    self._manager.wait_until_finished()
    self._manager.close()


class BestCheckpointer(Checkpointer):
  """The single checkpoint of a run with the best validation top-1, in `<workdir>/best`.

  `maybe_save` writes only when a score beats the kept one, so a run that resumes keeps
  comparing against the best of its whole history.
  """

  def __init__(self, workdir: str, async_save: bool = True, read_only: bool = False):
    super().__init__(workdir, keep=1, async_save=async_save, subdir=BEST_DIR, read_only=read_only,
                     best_fn=lambda metrics: metrics['top1'], best_mode='max',
                     keep_checkpoints_without_metrics=False)

  def best(self) -> tuple[int, float] | None:
    """(step, top-1) of the kept checkpoint, or None before the first evaluation."""
    step = self._manager.best_step()
    if step is None:
      return None
    return step, float(self._manager.metrics(step)['top1'])

  def maybe_save(self, step: int, state: Any, top1: float) -> bool:
    """Saves `state` as the new best when `top1` beats the kept score; returns whether it did."""
    kept = self.best()
    if kept is not None and top1 <= kept[1]:
      return False
    self.save(step, state, metrics={'top1': float(top1)})
    return True


def has_best(workdir: str) -> bool:
  """Whether `workdir` holds a best-by-validation checkpoint."""
  directory = os.path.join(os.path.abspath(workdir), BEST_DIR)
  return os.path.isdir(directory) and any(n.isdigit() for n in os.listdir(directory))
