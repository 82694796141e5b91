"""Runs shard tasks in worker processes, and survives a video that kills its worker.

FFmpeg can crash, or a video can exhaust memory, taking its worker process down; a
`multiprocessing.Pool` would then wait forever. Here a `ProcessPoolExecutor` (spawn) notices the
death, each worker reports which video it is on, and after a death every video that was in flight is
converted again alone in a child process: one that kills that child too is quarantined as 'crashed
the converter', the pool is restarted, and the conversion goes on. Finished shards are never redone.
"""

import concurrent.futures
import multiprocessing
import os
import threading
import time
from typing import Callable

from input_pipeline.prepare import records

_MAX_RESTARTS = 20
_ALONE_TIMEOUT_S = 1800

# Set in each worker: where it reports (pid, shard key, entry position, finished?).
_REPORTS = None


def _init(reports) -> None:
  global _REPORTS
  _REPORTS = reports


def _run_task(task: records.ShardTask) -> dict:
  pid, key = os.getpid(), (task.split, task.index)
  return records.write_shard(task, progress=lambda i, done: _REPORTS.put((pid, key, i, done)))


def _convert_alone(entry, task) -> None:
  try:
    records.convert_entry(entry, task)
  except Exception:  # pylint: disable=broad-except
    pass  # an ordinary error is the shard's business; only a hard death matters here


def _exit_code_alone(ctx, entry, task) -> int | str | None:
  """Converts one entry in a fresh process; returns its exit code if it died, else None."""
  proc = ctx.Process(target=_convert_alone, args=(entry, task), daemon=True)
  proc.start()
  proc.join(_ALONE_TIMEOUT_S)
  if proc.is_alive():
    proc.kill()
    proc.join()
    return f'timeout after {_ALONE_TIMEOUT_S} s'
  return proc.exitcode or None


def run(tasks: list[records.ShardTask], num_workers: int, on_video: Callable[[], None],
        poisoned: dict[tuple[str, str], str],
        save_poisoned: Callable[[dict], None]) -> None:
  """Runs the tasks not yet done in `num_workers` spawn processes.

  `on_video` is called once per finished video (progress). `poisoned` maps (split, video id) to a
  reason for videos known to crash the converter (kept across runs by `save_poisoned`); they are
  quarantined without being converted. Raises the first ordinary exception of a task (e.g. an
  AnnotationError), or RuntimeError if workers die and no video can be blamed.
  """
  ctx = multiprocessing.get_context('spawn')
  for _ in range(_MAX_RESTARTS):
    pending = [t for t in tasks if not os.path.exists(t.done_path)]
    if not pending:
      return
    for t in pending:
      t.skip = {e.video_id: poisoned[(t.split, e.video_id)] for e in t.entries
                if (t.split, e.video_id) in poisoned}
    in_flight = _run_pool(ctx, pending, num_workers, on_video)
    if in_flight is None:
      return
    by_key = {(t.split, t.index): t for t in pending}
    blamed = 0
    for key, i in in_flight:
      task = by_key[key]
      entry = task.entries[i]
      code = _exit_code_alone(ctx, entry, task)
      if code is not None:
        poisoned[(task.split, entry.video_id)] = f'crashed the converter process (exit code {code})'
        blamed += 1
    if not blamed:
      raise RuntimeError(
          'a worker process died but none of the videos it was converting crashes on its own (was '
          'it killed from outside, or out of memory with all workers busy?). Finished shards are '
          'kept: run the same command again to resume, with fewer workers if memory is short.')
    save_poisoned(poisoned)
  raise RuntimeError(f'worker processes died {_MAX_RESTARTS} times; giving up '
                     '(run again to resume)')


def _run_pool(ctx, pending, num_workers, on_video) -> list[tuple] | None:
  """Runs `pending` in one pool; None if all finish, else the videos in flight if one died."""
  reports = ctx.SimpleQueue()  # synchronous put: a report is in the pipe before the work starts
  in_flight, stop = {}, threading.Event()

  def drain():
    while True:
      if reports.empty():
        if stop.is_set():
          return
        time.sleep(0.02)
        continue
      pid, key, i, done = reports.get()
      if done:
        in_flight.pop(pid, None)
        on_video()
      else:
        in_flight[pid] = (key, i)

  drainer = threading.Thread(target=drain, daemon=True)
  drainer.start()
  pool = concurrent.futures.ProcessPoolExecutor(min(num_workers, len(pending)), mp_context=ctx,
                                                initializer=_init, initargs=(reports,))
  futures = [pool.submit(_run_task, t) for t in pending]
  broken = False
  try:
    for future in concurrent.futures.as_completed(futures):
      future.result()
  except concurrent.futures.process.BrokenProcessPool:
    broken = True
  finally:
    for f in futures:
      f.cancel()
    pool.shutdown(wait=True, cancel_futures=True)
    stop.set()
    drainer.join()
  return sorted(set(in_flight.values())) if broken else None
