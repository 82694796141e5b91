"""`config.profile_steps`: a `jax.profiler` trace of chosen training steps, for TensorBoard.

`(first, last)` traces steps first..last (numbered as the log numbers them: step 1 is the first
update) into `<workdir>/tensorboard/plugins/profile/<time>/`, where TensorBoard's profile tab (the
`tensorboard-plugin-profile` package) and Perfetto read it. The first steps of a run include
compilation: trace later ones. The profiler writes local files only, so for a workdir in a bucket
the trace is written to a local temporary folder and uploaded when it stops.
"""

import os
import shutil
import tempfile

import jax

from input_pipeline import files

PROFILE_DIR = os.path.join('plugins', 'profile')


class StepProfiler:
  """Starts the trace before step `first` and stops it after step `last` (`() `: never)."""

  def __init__(self, profile_steps, log_dir: str):
    self._steps = tuple(int(s) for s in profile_steps)
    self._log_dir = files.resolve(log_dir)
    self._local = None
    self.written: list[str] = []  # The trace files, once stopped.

  def before(self, step: int) -> None:
    """Called before step `step` (1-based) runs."""
    if self._steps and step == self._steps[0] and self._local is None:
      remote = files.is_remote(self._log_dir)
      self._local = tempfile.mkdtemp(prefix='stm_profile_') if remote else os.fspath(
          self._log_dir)
      jax.profiler.start_trace(self._local)

  def after(self, step: int, state) -> None:
    """Called after step `step`; stops the trace (waiting for `state`) after the last one."""
    if self._local is None or step < self._steps[-1]:
      return
    jax.block_until_ready(state)
    self.stop()

  def stop(self) -> None:
    """Stops a running trace (also when training ends early) and puts its files in place."""
    if self._local is None:
      return
    jax.profiler.stop_trace()
    local, self._local = self._local, None
    for dirpath, _, names in os.walk(os.path.join(local, PROFILE_DIR)):
      for name in names:
        rel = os.path.relpath(os.path.join(dirpath, name), local)
        dest = self._log_dir / rel
        if files.is_remote(dest):
          files.put_file(os.path.join(dirpath, name), dest)
        self.written.append(os.fspath(dest))
    if files.is_remote(self._log_dir):
      shutil.rmtree(local, ignore_errors=True)
