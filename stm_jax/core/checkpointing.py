"""Checkpoints of a run: train state and input-iterator state together, async, last K kept.

`<workdir>/checkpoints/<step>/` holds `state` (Orbax StandardSave of the TrainState), `checksum`
(a CRC-32 of every array's bytes, JSON) and, when the run has a grain iterator, `data_iter` (one
JSON state per process), so a resumed run sees exactly the batches it would have seen
(docs/design.md section 7). Saves are asynchronous: the arrays are copied off the devices and
written in the background while training goes on; the checksum (computed from the host copy) and
the iterator state are items of the same Orbax checkpoint, so they commit with it.

What a restore can meet, and what it does:
  * a half-written checkpoint never counts: Orbax writes into a temporary directory and renames
    it when complete (a leftover of a killed run is removed when a writing manager opens);
  * a checkpoint of another model (its tree of arrays differs from the one asked for: other
    layers, shapes or dtypes) is a `CheckpointMismatchError` naming the differing arrays; nothing
    on disk changes. A mismatch is a wrong config, never corruption;
  * a checkpoint that fails to read (a truncated, deleted or garbled file, bytes that do not
    match the checksum, non-finite values) is an unreadable one. Training then uses the previous
    checkpoint and renames the bad one `corrupt-<step>-<time>` with one warning line; if the
    previous one is unreadable too (or there is no other), it stops with an
    `UnreadableCheckpointError` and moves nothing: checkpoints are never all set aside.

Cost, measured on STM-ResNet-50's train state (48.1M float32 values: parameters, BN statistics,
momentum) on a shared 2-core CPU machine: CRC-32 of the host copy 0.09-0.16 s and the finiteness
check 0.03 s, at every save and every restore; the structure check (Orbax's metadata) 0.3-0.9 s
per restore (a whole restore: 2-3 s). Checkpoints written before checksums existed are restored
unchecked (finiteness is still checked).

`<workdir>/best/<step>/` holds the train state that scored the best validation top-1 so far
(`BestCheckpointer`, one kept); evaluation, prediction and export of a run use it when present.
"""

import contextlib
import logging as python_logging
import os
import sys
import time
import zlib
from typing import Any, Iterator

from absl import logging
from etils import epath
import grain
import jax
from jax.experimental import multihost_utils
import numpy as np
import orbax.checkpoint as ocp

from input_pipeline import errors
from input_pipeline import files
from stm_jax.core import sharding

CHECKPOINT_DIR = 'checkpoints'
BEST_DIR = 'best'
STATE_ITEM = 'state'
CHECKSUM_ITEM = 'checksum'
DATA_ITER_ITEM = 'data_iter'
CHECKSUM_ALGORITHM = 'crc32 of the C-order bytes of each array'
# How many differing arrays a mismatch error names (then: "and N more").
_MISMATCHES_SHOWN = 3


class CheckpointMismatchError(errors.UserError):
  """A checkpoint holds another model's arrays than the one asked for (a config mistake)."""

  def __init__(self, message: str, differences: list[str]):
    super().__init__(message)
    self.differences = differences


class UnreadableCheckpointError(errors.UserError):
  """No checkpoint can be read and training would otherwise start over: nothing was moved."""


class _Unreadable(Exception):
  """One checkpoint failed to read; `str(e)` is the reason (one line)."""


def all_processes_agree(ok: bool) -> bool:
  """Whether `ok` holds on every process (so that all take the same branch)."""
  if jax.process_count() == 1:
    return ok
  return bool(np.all(multihost_utils.process_allgather(np.int32(ok))))


def leaf_name(path: tuple[Any, ...]) -> str:
  """The `a/b/0/c` name of a tree path, the same for a TrainState, a dict and Orbax metadata."""
  parts = []
  for key in path:
    for attr in ('key', 'name', 'idx'):
      if hasattr(key, attr):
        parts.append(str(getattr(key, attr)))
        break
    else:
      parts.append(str(key))
  return '/'.join(parts)


def leaf_table(tree: Any) -> dict[str, tuple[tuple[int, ...], str]]:
  """`{leaf name: (shape, dtype name)}` of a tree of arrays, ShapeDtypeStructs or metadata."""
  return {leaf_name(p): (tuple(int(d) for d in x.shape), np.dtype(x.dtype).name)
          for p, x in jax.tree_util.tree_leaves_with_path(tree)}


def checksums(host_tree: Any) -> dict[str, int]:
  """`{leaf name: CRC-32 of the array's C-order bytes}` of a tree of host (numpy) arrays."""
  return {leaf_name(p): zlib.crc32(np.ascontiguousarray(x).reshape(-1).view(np.uint8))
          for p, x in jax.tree_util.tree_leaves_with_path(host_tree)}


def _non_finite(host_tree: Any) -> list[str]:
  """Names of the floating-point leaves holding a NaN or an infinity."""
  return [leaf_name(p) for p, x in jax.tree_util.tree_leaves_with_path(host_tree)
          if np.issubdtype(np.asarray(x).dtype, np.inexact) and not np.isfinite(x).all()]


def describe_mismatch(stored: dict[str, tuple], wanted: dict[str, tuple]) -> list[str]:
  """One phrase per array that differs between a checkpoint's table (`leaf_table`) and the
  model's, sorted by name."""
  out = []
  for name in sorted(set(stored) | set(wanted)):
    have, want = stored.get(name), wanted.get(name)
    if have == want:
      continue
    if have is None:
      out.append(f'{name} is not in the checkpoint')
    elif want is None:
      out.append(f'{name} is in the checkpoint, not in the model')
    else:
      out.append(f'{name} is {have[1]}{list(have[0])} in the checkpoint, the model needs '
                 f'{want[1]}{list(want[0])}')
  return out


def _one_line(e: BaseException) -> str:
  """An exception as one short line: its innermost cause (TensorStore's own message, which names
  the file and array), first line, at most 200 characters (the outer ones span pages)."""
  while e.__cause__ is not None:
    e = e.__cause__
  text = str(e).strip().splitlines()[0] if str(e).strip() else ''
  text = text if len(text) <= 200 else text[:197] + '...'
  return f'{type(e).__name__}: {text}' if text else type(e).__name__


class _DropAsyncNoise(python_logging.Filter):
  """Drops asyncio's reports about the tasks a failed Orbax read leaves behind."""

  def filter(self, record: python_logging.LogRecord) -> bool:
    message = str(record.msg)
    return not any(s in message for s in ('Task exception was never retrieved',
                                          'Task was destroyed but it is pending',
                                          'Event loop is closed', 'exception in callback'))


def _is_async_noise(unraisable: Any) -> bool:
  """Whether an unraisable exception is one of an abandoned Orbax read: its coroutine,
  garbage-collected with the read's error inside, or a late callback into the closed loop."""
  value = getattr(unraisable, 'exc_value', None)
  if isinstance(value, RuntimeError) and 'Event loop is closed' in str(value):
    return True
  code = getattr(getattr(unraisable, 'object', None), 'cr_code', None)
  return code is not None and f'{os.sep}orbax{os.sep}' in code.co_filename


def _install_unraisable_filter() -> None:
  """Wraps `sys.unraisablehook` (once) so that it drops the reports of Orbax's abandoned reads
  and passes every other one on; it stays, since an abandoned read may finish later."""
  current = sys.unraisablehook
  if getattr(current, 'drops_orbax_read_noise', False):
    return

  def hook(unraisable: Any) -> None:
    if not _is_async_noise(unraisable):
      current(unraisable)

  hook.drops_orbax_read_noise = True
  sys.unraisablehook = hook


@contextlib.contextmanager
def _quiet_failed_read() -> Iterator[None]:
  """Silences what a failing Orbax restore leaves behind. Orbax runs the reads of all arrays as
  coroutines in an event loop that it closes as soon as one of them raises; every other read
  that fails too is then garbage-collected with its error inside, which Python reports as
  "Exception ignored in: <coroutine object _read_array_index_and_device_put>" plus a TensorStore
  traceback (120 of them, 7,700 lines, for a truncated STM-ResNet-50 checkpoint), or as
  'Event loop is closed' from late callbacks. The first error itself is raised as usual."""
  asyncio_logger = python_logging.getLogger('asyncio')
  noise = _DropAsyncNoise()
  asyncio_logger.addFilter(noise)
  _install_unraisable_filter()
  try:
    yield
  finally:
    asyncio_logger.removeFilter(noise)


class Checkpointer:
  """Saves and restores `{'state', 'checksum', 'data_iter'}` checkpoints under
  `<workdir>/checkpoints`."""

  def __init__(self, workdir: str, keep: int = 3, async_save: bool = True,
               subdir: str = CHECKPOINT_DIR, read_only: bool = False, **options):
    """Opens (creating) `<workdir>/<subdir>`; keeps the last `keep` saves.

    `read_only`: for commands that only read a run (evaluation, prediction): nothing is created,
    cleaned up, renamed or deleted. `options`: further `ocp.CheckpointManagerOptions`
    (BestCheckpointer's ranking).
    """
    self.directory = files.resolve(workdir) / subdir
    self.read_only = read_only
    if read_only:
      options = ocp.CheckpointManagerOptions(read_only=True, create=False,
                                             save_interval_steps=0, **options)
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
    """Starts saving `state` (its checksum, and the iterator's current position) as checkpoint
    `step`.

    Returns once the arrays are copied off the devices; call `wait` before exiting. Refuses
    (FloatingPointError) a state with a non-finite value: nothing non-finite is ever saved (the
    trainer stops before; this is the last line).
    """
    host = sharding.to_host(state)
    bad = _non_finite(host)
    if bad:
      raise FloatingPointError(f'checkpoint {step} not saved to {self.directory}: non-finite '
                               f'values in {len(bad)} arrays, e.g. {bad[0]}')
    crc = checksums(host)
    items = {STATE_ITEM: ocp.args.StandardSave(state),
             CHECKSUM_ITEM: ocp.args.JsonSave({'algorithm': CHECKSUM_ALGORITHM, 'crc32': crc})}
    if data_iter is not None:
      items[DATA_ITER_ITEM] = grain.checkpoint.CheckpointSave(data_iter)
    self._manager.save(step, args=ocp.args.Composite(**items), metrics=metrics, force=True)
    logging.info('checkpoint %d: saving to %s', step, self.directory)

  def _item_path(self, step: int, item: str) -> epath.Path:
    return self.directory / str(step) / item

  def _stored_table(self, step: int) -> dict[str, tuple]:
    """The arrays of checkpoint `step` (`leaf_table`), from its metadata; raises _Unreadable."""
    handler = ocp.StandardCheckpointHandler()
    try:
      metadata = handler.metadata(self._item_path(step, STATE_ITEM))
      return leaf_table(metadata.tree)
    except Exception as e:  # pylint: disable=broad-except
      raise _Unreadable(f'its metadata cannot be read ({_one_line(e)})') from None
    finally:
      handler.close()

  def _check_structure(self, step: int, wanted: dict[str, tuple], partial: bool) -> None:
    """Raises CheckpointMismatchError if checkpoint `step` holds other arrays than `wanted`
    (`partial`: only the top-level parts `wanted` names are compared)."""
    stored = self._stored_table(step)
    if partial:
      parts = {name.split('/')[0] for name in wanted}
      stored = {k: v for k, v in stored.items() if k.split('/')[0] in parts}
    differences = describe_mismatch(stored, wanted)
    if differences:
      shown = '; '.join(differences[:_MISMATCHES_SHOWN])
      more = len(differences) - _MISMATCHES_SHOWN
      raise CheckpointMismatchError(
          f'checkpoint {step} in {self.directory} is not of the model the config describes '
          f'({len(differences)} arrays differ: {shown}{f"; and {more} more" if more > 0 else ""})',
          differences)

  def _verify(self, step: int, state: Any, saved: dict[str, Any] | None) -> None:
    """Raises _Unreadable unless the restored arrays match the checkpoint's checksum item
    `saved` (None: a checkpoint written before checksums, unchecked) and are finite."""
    host = sharding.to_host(state)
    if saved is not None:
      crc = saved.get('crc32') if isinstance(saved, dict) else None
      if not isinstance(crc, dict):
        raise _Unreadable('its checksum item is not a table of CRC-32 values')
      got = checksums(host)
      wrong = sorted(name for name, value in got.items() if crc.get(name) != value)
      if wrong:
        raise _Unreadable(f'its bytes do not match its checksum ({len(wrong)} arrays, e.g. '
                          f'{wrong[0]})')
    else:
      logging.info('checkpoint %d in %s has no checksum (written before checksums): unchecked',
                   step, self.directory)
    bad = _non_finite(host)
    if bad:
      raise _Unreadable(f'it holds non-finite values ({len(bad)} arrays, e.g. {bad[0]})')

  def _read(self, step: int, abstract_state: Any, data_iter: Any = None,
            partial: bool = False) -> Any:
    """Restores and verifies checkpoint `step` into `abstract_state`.

    Raises CheckpointMismatchError (another model) or _Unreadable (a damaged checkpoint).
    """
    self._check_structure(step, leaf_table(abstract_state), partial)
    if partial:
      state_args = ocp.args.PyTreeRestore(
          item=abstract_state, partial_restore=True,
          restore_args=ocp.checkpoint_utils.construct_restore_args(abstract_state))
    else:
      state_args = ocp.args.StandardRestore(abstract_state)
    items = {STATE_ITEM: state_args}
    has_checksum = self._item_path(step, CHECKSUM_ITEM).exists()
    if has_checksum:
      items[CHECKSUM_ITEM] = ocp.args.JsonRestore()
    if data_iter is not None:
      items[DATA_ITER_ITEM] = grain.checkpoint.CheckpointRestore(data_iter)
    with _quiet_failed_read():
      try:
        restored = self._manager.restore(step, args=ocp.args.Composite(**items))
      except Exception as e:  # pylint: disable=broad-except
        raise _Unreadable(_one_line(e)) from None
    state = restored[STATE_ITEM]
    self._verify(step, state, restored[CHECKSUM_ITEM] if has_checksum else None)
    return state

  def _check_step(self, step: int) -> None:
    if step not in self.all_steps():
      raise errors.NotFoundError(f'no checkpoint {step} in {self.directory} (there are: '
                                 f'{self.all_steps() or "none"})')

  def restore(self, step: int, abstract_state: Any) -> Any:
    """Returns the train state of checkpoint `step` (evaluation of a named checkpoint).

    Raises a NotFoundError listing the checkpoints on disk when there is no such step, a
    CheckpointMismatchError when it is another model's, an UnreadableCheckpointError when it
    cannot be read; never changes anything on disk.
    """
    self._check_step(step)
    try:
      return self._read(step, abstract_state)
    except _Unreadable as e:
      raise UnreadableCheckpointError(f'checkpoint {step} in {self.directory} cannot be read: '
                                      f'{e}') from None

  def restore_variables(self, step: int, abstract_variables: dict[str, Any]) -> dict[str, Any]:
    """`{'step', 'params', 'batch_stats'}` of checkpoint `step`, placed as `abstract_variables`
    (`{'params', 'batch_stats'}` of ShapeDtypeStructs with shardings) say; the optimizer state is
    not read. Errors as `restore`; nothing on disk changes."""
    self._check_step(step)
    some = jax.tree.leaves(abstract_variables)[0]
    target = {'step': jax.ShapeDtypeStruct((), np.int32, sharding=some.sharding),
              **abstract_variables}
    try:
      return self._read(step, target, partial=True)
    except _Unreadable as e:
      raise UnreadableCheckpointError(f'checkpoint {step} in {self.directory} cannot be read: '
                                      f'{e}') from None

  def _set_aside(self, step: int) -> str:
    """Renames checkpoint `step` so that the manager no longer sees it; returns the new path."""
    target = self.directory / f'corrupt-{step}-{int(time.time())}'
    if jax.process_index() == 0:
      (self.directory / str(step)).rename(target)
    multihost_utils.sync_global_devices(f'checkpoint {step} set aside')
    self._manager.reload()
    return target

  def restore_latest(self, abstract_state: Any, data_iter: Any = None) -> Any | None:
    """Returns the newest readable train state, or None when there is no checkpoint.

    `abstract_state` gives the tree, shapes, dtypes and shardings to restore into (e.g.
    `jax.tree.map(ocp.utils.to_shape_dtype_struct, state)`); `data_iter`, if given, is moved to
    the saved position. An unreadable newest checkpoint is set aside (one warning line) when the
    one before it reads; when that one fails too, or there is no other, it raises an
    UnreadableCheckpointError and moves nothing. A checkpoint of another model raises
    CheckpointMismatchError at once.
    """
    start = data_iter.get_state() if data_iter is not None else None
    failed = []  # (step, reason), newest first.
    for step in reversed(self.all_steps()):
      reason = 'another process could not read it'
      try:
        state = self._read(step, abstract_state, data_iter)
        ok = True
      except _Unreadable as e:
        reason, ok = str(e), False
      if all_processes_agree(ok):
        for bad, why in failed:
          target = self._set_aside(bad)
          logging.warning('checkpoint %d in %s cannot be read (%s): moved to %s; resuming from '
                          'checkpoint %d', bad, self.directory, why, target, step)
        logging.info('restored checkpoint %d of %s', step, self.directory)
        return state
      failed.append((step, reason))
      if data_iter is not None:
        data_iter.set_state(start)  # A failed restore may have moved it.
      if len(failed) == 2:
        break
    if not failed:
      return None
    listed = '; '.join(f'checkpoint {s}: {why}' for s, why in failed)
    which = (f'the two newest checkpoints in {self.directory} cannot be read'
             if len(failed) == 2 else f'the only checkpoint in {self.directory} cannot be read')
    raise UnreadableCheckpointError(
        f'{which} ({listed}); stopped without moving or deleting anything. Move the damaged '
        f'step folders out of {self.directory} to resume from an older one (or to start over)')

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
  directory = files.resolve(workdir) / BEST_DIR
  return directory.is_dir() and any(p.name.isdigit() for p in directory.iterdir())
