"""Preemption notices (SIGTERM): tells the loop at which step to checkpoint and stop.

Multi-process runs use JAX's preemption sync manager (started by `jax.distributed.initialize`,
which catches SIGTERM itself): every process gets the same step, however far apart the notices
arrive. A single process installs its own SIGTERM handler and stops at the next step; the
trainer holds it from start-up to the end of its final save, so a SIGTERM before the first step
stops the run with nothing new, and one during the final save lets that save finish.
"""

import signal

from absl import logging
import jax
from jax.experimental import multihost_utils

# Exit status of a run stopped by SIGTERM after its checkpoint (128 + SIGTERM): rerun to resume.
PREEMPTED_EXIT_CODE = 143


class PreemptionWatcher:
  """`reached(step)` is True at the step where the run must checkpoint and stop.

  Call `reached` once per step on every process; use as a context manager (restores the
  previous SIGTERM handler on exit).
  """

  def __init__(self):
    self._signalled = False
    self._previous = None
    self._multiprocess = jax.process_count() > 1

  def __enter__(self) -> 'PreemptionWatcher':
    if not self._multiprocess:
      self._previous = signal.signal(signal.SIGTERM, self._on_sigterm)
    return self

  def __exit__(self, *exc) -> None:
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)
      self._previous = None

  def _on_sigterm(self, signum, frame) -> None:
    del signum, frame
    logging.warning('SIGTERM: checkpointing at the end of this step and stopping')
    self._signalled = True

  def requested_before_start(self) -> bool:
    """Whether a SIGTERM came before the first step (single process; a multi-process run learns
    of it at its first step's sync point)."""
    return not self._multiprocess and self._signalled

  def reached(self, step: int) -> bool:
    """Whether `step` is the step to save a preemption checkpoint at (same on every process)."""
    if self._multiprocess:
      try:
        return multihost_utils.reached_preemption_sync_point(step)
      except RuntimeError:  # Preemption service disabled (jax_enable_preemption_service).
        return False
    return self._signalled
