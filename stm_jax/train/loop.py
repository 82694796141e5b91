"""`launch.py --mode=train`: the training loop, checkpointed, resumable, preemptible.

A run lives in its workdir: it resumes from the newest readable checkpoint there (train state
and input position, so the continuation is exactly the uninterrupted run), saves every
`config.checkpoint_every_steps` steps, on SIGTERM and at the end, and keeps the last
`config.keep_checkpoints`. Every `config.eval_every_epochs` epochs (and at the end) it runs the
val protocol (1 clip, centre crop) on `config.data.eval_split` and keeps the state with the best
top-1 in `<workdir>/best` (checkpointing.BestCheckpointer). Losses are checked on the host at every log and before every save
(one transfer of the metrics gathered since the last check, so the device never waits on the
host in between): a non-finite loss or gradient stops the run before it can be saved.

Process 0 logs to `<workdir>` (stm_jax/train/run_log.py): TensorBoard events (loss, top-1, lr, clips/s,
step time, fraction of time waiting for data; val top-1/top-5), `metrics.jsonl`, `curves.png`,
and a progress bar with ETA on the console.
"""

import contextlib
import dataclasses
import os
import time
from typing import Any, Iterator, Sequence

from absl import logging
import jax
import ml_collections
import numpy as np

from input_pipeline import datasets
from input_pipeline import errors
from input_pipeline import pipeline
from input_pipeline import protocols
from stm_jax import models
from stm_jax.core import checkpointing
from stm_jax.core import config_check
from stm_jax.core import run_directory
from stm_jax.core import sharding
from stm_jax.core import weights
from stm_jax.evaluation import runner
from stm_jax.train import optim
from stm_jax.train import preemption
from stm_jax.train import run_log
from stm_jax.train import train_state


class NonFiniteLossError(FloatingPointError):
  """The loss (or the gradient norm) became NaN or infinite; the run stopped unsaved."""


@dataclasses.dataclass
class RunResult:
  """How a call of `train_and_evaluate` ended."""
  step: int  # Steps done (the state's step count).
  total_steps: int
  preempted: bool  # Stopped early on SIGTERM, after a checkpoint.
  metrics: dict[str, float]  # Means since the last log.



class Throughput:
  """Training speed between two logs: clips/s, seconds per step, and the fraction of the wall
  time spent waiting for the input pipeline (blocked in `next` while the devices run ahead)."""

  def __init__(self, step: int):
    self.restart(step)

  def restart(self, step: int) -> None:
    """Starts a new interval at `step` (after a pause that is not training, e.g. evaluation)."""
    self._start, self._step, self._wait = time.perf_counter(), step, 0.0

  @contextlib.contextmanager
  def waiting(self):
    """Counts the time inside the block as waiting for data."""
    begin = time.perf_counter()
    try:
      yield
    finally:
      self._wait += time.perf_counter() - begin

  def measure(self, step: int, batch_size: int) -> dict[str, float]:
    """The interval's figures up to `step`; starts the next interval."""
    elapsed = max(time.perf_counter() - self._start, 1e-9)
    steps = max(step - self._step, 1)
    result = {'clips_per_s': steps * batch_size / elapsed, 'step_time_s': elapsed / steps,
              'data_wait_fraction': min(self._wait / elapsed, 1.0)}
    self.restart(step)
    return result


def check_config(config: ml_collections.ConfigDict) -> None:
  """Checks the whole config (core/config_check.py) and the initial weights path, before any
  compute; raises a ConfigError naming the bad field."""
  config_check.check(config)
  if config.init_checkpoint and not os.path.isdir(config.init_checkpoint):
    raise errors.bad_field('init_checkpoint', config.init_checkpoint,
                           'is not a directory (a training run, or weights written by '
                           'launch.py --mode=convert)')


def _initial_variables(config: ml_collections.ConfigDict) -> dict[str, Any] | None:
  """Host copies of the weights in `config.init_checkpoint`, or None for a fresh init.

  The directory is either converted weights (`launch.py --mode=convert`, e.g. ImageNet) or
  another training run (e.g. Kinetics, for fine-tuning: its best checkpoint, else its latest).
  """
  if not config.init_checkpoint:
    return None
  path = config.init_checkpoint
  loaded = weights.load(path, run_directory.resolve_config(path, config))
  print(f'initial weights from {path}: {loaded.description}', flush=True)
  return weights.host_variables(loaded)


def _eval_source(config: ml_collections.ConfigDict) -> Sequence | None:
  """The split evaluated during training, or None (with a warning) when there is none."""
  try:
    source = runner.open_eval_source(config)
  except errors.UserError as e:
    logging.warning('no evaluation during training: the %r split cannot be opened (%s)',
                    config.data.eval_split, e)
    return None
  return source if len(source) else None


def eval_steps(config: ml_collections.ConfigDict, num_examples: int, total: int) -> set[int]:
  """The steps after which training evaluates: every `eval_every_epochs` epochs, and the last."""
  every = config.eval_every_epochs
  if not every:
    return set()
  steps, k = {total}, 1
  while (s := optim.epoch_start_step(k * every, num_examples, config.batch_size)) < total:
    steps.add(s)
    k += 1
  return {s for s in steps if s > 0}


def _check_finite(pending: list[tuple[int, dict]], checkpoint_dir: str,
                  last_saved: int | None) -> dict[str, float]:
  """Fetches the metrics of the steps since the last check; raises on a non-finite one.

  Returns their means.
  """
  steps = [s for s, _ in pending]
  values = sharding.to_host([m for _, m in pending])
  for step, m in zip(steps, values):
    bad = {k: float(v) for k, v in m.items() if k in ('loss', 'grad_norm') and not np.isfinite(v)}
    if bad:
      where = (f'the last checkpoint is step {last_saved} in {checkpoint_dir}' if last_saved
               is not None else 'no checkpoint was saved')
      raise NonFiniteLossError(
          f'non-finite {", ".join(f"{k}={v}" for k, v in bad.items())} at step {step}: stopping '
                               f'without saving ({where}). Try a lower config.optim.base_lr, '
                               'config.optim.clip_grad_norm=20 or config.optim.warmup_epochs.')
  return {k: float(np.mean([m[k] for m in values])) for k in values[0]}


def _evaluate(config: ml_collections.ConfigDict, model, state: train_state.TrainState,
              mesh: jax.sharding.Mesh, source: Sequence, step: int,
              best: checkpointing.BestCheckpointer, log: run_log.RunLog) -> dict[str, Any]:
  """Runs the val protocol on `source` with the current weights; keeps them if the best."""
  variables = {'params': state.params, 'batch_stats': state.batch_stats}
  metrics = runner.evaluate_variables(config, model, variables, mesh, source, protocols.VAL,
                                      step, workdir='', write_outputs=False)
  if metrics['top1'] is None:
    logging.warning('eval at step %d: the split has no labels; no best checkpoint kept', step)
    return metrics
  kept = best.best()
  improved = best.maybe_save(step, state, metrics['top1'])
  log.line(f'eval at step {step}: val top-1 {100 * metrics["top1"]:.2f}%, top-5 '
           f'{100 * metrics["top5"]:.2f}% '
           f'({"new best" if improved else f"best {100 * kept[1]:.2f}% at step {kept[0]}"})')
  return metrics


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       train_source: Sequence | None = None,
                       eval_source: Sequence | None = None) -> RunResult:
  """Trains `config` in `workdir` to `config.optim.epochs`, resuming whatever is there.

  `train_source` / `eval_source`: random-access sequences of video records to use instead of
  the prepared dataset's train / eval split (tests, custom sources); with `train_source` and no
  `eval_source`, training does not evaluate.
  Raises NonFiniteLossError when the loss diverges.
  """
  check_config(config)
  mesh = sharding.make_mesh()
  source = datasets.open_source(config, 'train') if train_source is None else train_source
  num_examples = len(source)
  tx = optim.create_optimizer(config, num_examples)
  total = optim.total_steps(config, num_examples)
  schedule = optim.learning_rate_schedule(config, num_examples)
  model = models.create(config)
  data_iter = iter(pipeline.create_dataset(source, config, 'train'))
  step_fn = train_state.jit_train_step(model, tx, config, mesh)
  if jax.process_index() == 0:
    run_directory.write(workdir, config,
                        None if train_source is not None else datasets.class_names(config))
  if eval_source is None and train_source is None and config.eval_every_epochs:
    eval_source = _eval_source(config)
  evaluate_at = eval_steps(config, num_examples, total) if eval_source is not None else set()
  with contextlib.ExitStack() as stack:
    ckpt = checkpointing.Checkpointer(workdir, keep=config.keep_checkpoints)
    stack.callback(ckpt.close)
    best = None
    if evaluate_at:
      best = checkpointing.BestCheckpointer(workdir)
      stack.callback(best.close)
    state = ckpt.restore_latest(train_state.abstract_train_state(model, tx, config, mesh), data_iter)
    if state is None:
      state = train_state.init_train_state(model, tx, config, mesh, _initial_variables(config))
    step = int(sharding.to_host(state.step))
    last_saved = step if ckpt.all_steps() else None
    log = run_log.RunLog(workdir, total, step, enabled=jax.process_index() == 0)
    stack.callback(log.close)
    log.line(f'{"resuming" if step else "starting"} at step {step} of {total} ({num_examples} '
             f'videos, global batch {config.batch_size}, {jax.device_count()} devices, '
             f'{config.model.dtype})')
    pending, metrics, preempted = [], {}, False
    speed = Throughput(step)
    with preemption.PreemptionWatcher() as watcher:
      while step < total:
        with speed.waiting():
          batch = sharding.global_batch(next(data_iter), mesh)
        state, step_metrics = step_fn(state, batch)
        step += 1
        pending.append((step, step_metrics))
        preempted = watcher.reached(step)
        save = step % config.checkpoint_every_steps == 0 or step == total or preempted
        if save or step % config.log_every_steps == 0:
          metrics = _check_finite(pending, ckpt.directory, last_saved)
          pending = []
          metrics.update(lr=float(schedule(step - 1)), **speed.measure(step, config.batch_size))
          log.line(f'step {step}/{total}: loss {metrics["loss"]:.4f} top1 {metrics["top1"]:.3f} '
                   f'grad_norm {metrics["grad_norm"]:.3g} lr {metrics["lr"]:.3g} '
                   f'({metrics["clips_per_s"]:.2f} clips/s, '
                   f'{100 * metrics["data_wait_fraction"]:.0f}% waiting for data)')
          log.train(step, metrics)
        log.advance(step)
        if step in evaluate_at:  # Before the save: a run killed in between redoes it.
          eval_metrics = _evaluate(config, model, state, mesh, eval_source, step, best, log)
          log.eval(step, {k: eval_metrics[k] for k in ('top1', 'top5', 'mean_class_accuracy')})
          speed.restart(step)  # Evaluation time is not training throughput.
        if save:
          ckpt.save(step, state, data_iter)
          last_saved = step
        if preempted:
          logging.warning('preempted: stopped at step %d after saving; rerun to resume', step)
          break
  return RunResult(step=step, total_steps=total, preempted=preempted, metrics=metrics)
