"""`launch.py --mode=train`: the training loop, checkpointed, resumable, preemptible.

A run lives in its workdir: it resumes from the newest readable checkpoint there (train state
and input position, so the continuation is exactly the uninterrupted run), saves every
`config.checkpoint_every_steps` steps, on SIGTERM and at the end, and keeps the last
`config.keep_checkpoints`. Every `config.eval_every_epochs` epochs (and at the end) it runs the
val protocol (1 clip, centre crop) on `config.data.eval_split` and keeps the state with the best
top-1 in `<workdir>/best` (checkpointing.BestCheckpointer).

Before any compute (`check_workdir`, also run by launch.py before it writes the run's log) it
refuses, with one error naming the field or the process: a config that cannot work; a class count
other than the prepared dataset's; a workdir whose config.json is another model or dataset
(unless `config.allow_config_change`; fine-tuning is `config.init_checkpoint` into a new
workdir); a workdir another training process holds (`run_directory.WorkdirLock`, taken by
process 0 for the whole run). A checkpoint of another architecture is never restored, and one
that cannot be read is set aside only when the previous one reads (core/checkpointing.py).

Each step reports, besides its loss, whether the updated parameters, BatchNorm statistics and
optimizer state are all finite and the range of its labels (reduced inside the jitted step).
These are checked on the host at every log, before every save and before every evaluation (one
transfer of the metrics gathered since the last check, so the device never waits on the host in
between): a non-finite loss, gradient or state, or a label outside `[0, data.num_classes)`, stops
the run before anything of it is saved. SIGTERM, from start-up to the end of the final save,
ends the run with a resumable checkpoint, or with nothing new before the first step.

Process 0 logs to `<workdir>` (stm_jax/train/run_log.py): TensorBoard events (loss, top-1, lr, clips/s,
step time, fraction of time waiting for data; val top-1/top-5), `metrics.jsonl`, `curves.png`,
and a progress bar with ETA on the console.
"""

import contextlib
import dataclasses
import os
import time
from typing import Any, Sequence

from absl import logging
import jax
import ml_collections
import numpy as np

from input_pipeline import datasets
from input_pipeline import errors
from input_pipeline import files
from input_pipeline import pipeline
from input_pipeline import protocols
from stm_jax import models
from stm_jax.core import checkpointing
from stm_jax.core import compilation_cache
from stm_jax.core import config_check
from stm_jax.core import run_directory
from stm_jax.core import sharding
from stm_jax.core import weights
from stm_jax.evaluation import runner
from stm_jax.train import optim
from stm_jax.train import preemption
from stm_jax.train import profiling
from stm_jax.train import run_log
from stm_jax.train import train_state


class NonFiniteLossError(FloatingPointError):
  """The loss, the gradient norm or the updated state became NaN or infinite; the run stopped
  without saving it."""


@dataclasses.dataclass
class RunResult:
  """How a call of `train_and_evaluate` ended."""
  step: int  # Steps done (the state's step count).
  total_steps: int
  preempted: bool  # Stopped early on SIGTERM (after a checkpoint, if it had made a step).
  metrics: dict[str, float]  # Means since the last log.
  saved_step: int | None = None  # The newest checkpoint of the run on disk (None: none).



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


# More than this fraction of a log interval waiting for data: the loader is the bottleneck.
DATA_WAIT_WARNING = 0.10


def data_wait_warning(fraction: float, config: ml_collections.ConfigDict) -> str | None:
  """The one-line warning for a log interval that spent `fraction` of its wall time waiting for
  the input pipeline, naming the settings to change; None when the loader keeps up, and on a
  CPU-only host, where the step and the loader share the cores (waiting there is not idle
  hardware, and more loader processes would only slow the step)."""
  if fraction <= DATA_WAIT_WARNING or jax.default_backend() == 'cpu':
    return None
  cores = os.cpu_count() or 1
  workers, threads = pipeline.loader_size(
      int(config.data.num_workers), int(config.data.num_threads), accelerator=True, cores=cores)
  return (f'the input pipeline is the bottleneck: {100 * fraction:.0f}% of the time is spent '
          f'waiting for data ({workers} loader processes x {threads} threads on a {cores}-core '
          f'host). Raise --config.data.num_workers (and --config.data.num_threads), give the host '
          'more cores, or store the frames smaller (data.short_side); README "Throughput"')


def check_config(config: ml_collections.ConfigDict) -> None:
  """Checks the whole config (core/config_check.py) and the initial weights path, before any
  compute; raises a ConfigError naming the bad field."""
  config_check.check(config)
  if config.init_checkpoint and not files.resolve(config.init_checkpoint).is_dir():
    raise errors.bad_field('init_checkpoint', config.init_checkpoint,
                           'is not a directory (a training run, or weights written by '
                           'launch.py --mode=convert)')


def check_workdir(config: ml_collections.ConfigDict, workdir: str,
                  train_source: Sequence | None = None, check_lock: bool = True) -> None:
  """Every refusal that needs no compute, before anything is written: the config
  (`check_config`), its class count against the prepared dataset (unless `train_source` replaces
  it), a workdir whose config.json is another model or dataset (unless
  `config.allow_config_change`), and with `check_lock` (process 0) a workdir another live
  training process holds. Uses no jax (launch.py runs it before jax.distributed starts)."""
  check_config(config)
  if train_source is None:
    runner.check_class_count(config)
  changed = run_directory.identity_changes(workdir, config)
  if changed and not config.allow_config_change:
    raise errors.ConfigError(
        f'{files.resolve(workdir) / run_directory.CONFIG_FILE}: this run is another model or '
        f'dataset than the config: {run_directory.format_changes(changed)}. Resume it with its '
        'own settings (drop these overrides), train the new config in a new --workdir (with '
        f'--config.init_checkpoint={workdir} to start from its weights), or pass '
        '--config.allow_config_change=True to change the run anyway')
  if check_lock:
    run_directory.WorkdirLock(workdir).check_free()


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


# Metrics of the step that the loop checks and does not log.
_STEP_CHECKS = ('finite', 'label_min', 'label_max')


def _check_finite(pending: list[tuple[int, dict]], checkpoint_dir: str,
                  last_saved: int | None, num_classes: int) -> dict[str, float]:
  """Fetches the metrics of the steps since the last check; raises on a label outside the
  classes (ConfigError), a non-finite loss or gradient, or a non-finite updated state
  (NonFiniteLossError).

  Returns the means of the logged metrics.
  """
  steps = [s for s, _ in pending]
  values = sharding.to_host([m for _, m in pending])
  where = (f'the last checkpoint is step {last_saved} in {checkpoint_dir}' if last_saved
           is not None else 'no checkpoint was saved')
  advice = ('Try a lower config.optim.base_lr, config.optim.clip_grad_norm=20 or '
            'config.optim.warmup_epochs.')
  for step, m in zip(steps, values):
    low, high = int(m['label_min']), int(m['label_max'])
    if low < 0 or high >= num_classes:
      raise errors.bad_field(
          'data.num_classes', num_classes,
          f'the batch of step {step} holds label {low if low < 0 else high}, outside [0, '
          f'{num_classes}): set it to the dataset\'s class count (--config.data.num_classes), '
          'or train on a labelled split (nothing was saved of this run after step '
          f'{last_saved if last_saved is not None else 0})')
    bad = {k: float(v) for k, v in m.items() if k in ('loss', 'grad_norm') and not np.isfinite(v)}
    if bad:
      raise NonFiniteLossError(
          f'non-finite {", ".join(f"{k}={v}" for k, v in bad.items())} at step {step}: stopping '
          f'without saving ({where}). {advice}')
    if not bool(m['finite']):
      raise NonFiniteLossError(
          'non-finite parameters, BatchNorm statistics or optimizer state (the loss, '
          f'{float(m["loss"]):.4g}, was finite) after the update at step {step}: stopping '
          f'without saving ({where}). {advice}')
  return {k: float(np.mean([m[k] for m in values])) for k in values[0] if k not in _STEP_CHECKS}


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
  Raises a UserError for what `check_workdir` refuses, a CheckpointMismatchError for checkpoints
  of another model, an UnreadableCheckpointError when the newest two cannot be read,
  NonFiniteLossError when training diverges. SIGTERM is caught from here to the end of the
  final save.
  """
  with preemption.PreemptionWatcher() as watcher:
    return _train(config, workdir, train_source, eval_source, watcher)


def _lock(workdir: str, stack: contextlib.ExitStack) -> None:
  """Takes the workdir's lock on process 0 (released when `stack` closes); every process raises
  if it could not be taken."""
  lock = run_directory.WorkdirLock(workdir)
  error = None
  if jax.process_index() == 0:
    try:
      lock.acquire()
      stack.callback(lock.release)
    except errors.InUseError as e:
      error = e
  if not checkpointing.all_processes_agree(error is None):
    raise error or errors.InUseError(f'{workdir}: process 0 could not lock it (another training '
                                     'run holds it)')


def _restore(ckpt: checkpointing.Checkpointer, abstract: Any, data_iter: Any, workdir: str,
             config: ml_collections.ConfigDict) -> Any:
  """`ckpt.restore_latest`, a mismatch error completed with the config fields that differ from
  the run's config.json."""
  try:
    return ckpt.restore_latest(abstract, data_iter)
  except checkpointing.CheckpointMismatchError as e:
    found = (run_directory.changes(run_directory.flatten(run_directory.read_config(workdir)),
                                   run_directory.flatten(config))
             if run_directory.has_config(workdir) else [])
    fields = (f'the config differs from the run\'s: {run_directory.format_changes(found)}'
              if found else 'the run\'s config.json does not say which fields differ')
    raise checkpointing.CheckpointMismatchError(
        f'{e}; {fields}. Nothing was changed; resume with the run\'s own config, or train the '
        'new config in a new --workdir', e.differences) from None


def _train(config: ml_collections.ConfigDict, workdir: str, train_source: Sequence | None,
           eval_source: Sequence | None, watcher: preemption.PreemptionWatcher) -> RunResult:
  """`train_and_evaluate` inside its SIGTERM watcher."""
  # The lock is taken below, agreed by every process (a refusal here would leave the others
  # waiting in a collective).
  check_workdir(config, workdir, train_source, check_lock=False)
  with contextlib.ExitStack() as stack:
    _lock(workdir, stack)
    return _train_locked(config, workdir, train_source, eval_source, watcher)


def _train_locked(config: ml_collections.ConfigDict, workdir: str,
                  train_source: Sequence | None, eval_source: Sequence | None,
                  watcher: preemption.PreemptionWatcher) -> RunResult:
  """`_train` holding the workdir's lock (released after the final save has finished)."""
  dtype_note = models.compute_dtype(config.model.dtype)
  if config.model.dtype == 'auto':
    dtype_note += f' (model.dtype=auto on {jax.default_backend()})'
  config = with_compute_dtype(config)
  cache_dir = compilation_cache.use(config, workdir)
  compiled = compilation_cache.CacheCounter()
  mesh = sharding.make_mesh()
  source = datasets.open_source(config, 'train') if train_source is None else train_source
  num_examples = len(source)
  tx = optim.create_optimizer(config, num_examples)
  total = optim.total_steps(config, num_examples)
  schedule = optim.learning_rate_schedule(config, num_examples)
  model = models.create(config)
  data_iter = iter(pipeline.create_dataset(source, config, 'train'))
  step_fn = train_state.jit_train_step(model, tx, config, mesh)
  if eval_source is None and train_source is None and config.eval_every_epochs:
    eval_source = _eval_source(config)
  evaluate_at = eval_steps(config, num_examples, total) if eval_source is not None else set()
  with contextlib.ExitStack() as saving:
    ckpt = checkpointing.Checkpointer(workdir, keep=config.keep_checkpoints)
    saving.callback(ckpt.close)
    state = _restore(ckpt, train_state.abstract_train_state(model, tx, config, mesh), data_iter,
                     workdir, config)
    if jax.process_index() == 0:
      _note_config_changes(workdir, config)
      run_directory.write(workdir, config,
                          None if train_source is not None else datasets.class_names(config))
    best = None
    if evaluate_at:
      best = checkpointing.BestCheckpointer(workdir)
      saving.callback(best.close)
    if state is None:
      state = train_state.init_train_state(model, tx, config, mesh, _initial_variables(config))
    step = int(sharding.to_host(state.step))
    last_saved = step if ckpt.all_steps() else None
    log = run_log.RunLog(workdir, total, step, enabled=jax.process_index() == 0)
    saving.callback(log.close)
    profiler = profiling.StepProfiler(
        config.profile_steps if jax.process_index() == 0 else (),
        files.resolve(workdir) / run_log.TENSORBOARD_DIR)
    saving.callback(profiler.stop)
    log.line(f'{"resuming" if step else "starting"} at step {step} of {total} ({num_examples} '
             f'videos, global batch {config.batch_size}, {jax.device_count()} devices, '
             f'{dtype_note})')
    pending, metrics = [], {}
    preempted = watcher.requested_before_start()
    if preempted:
      logging.warning('SIGTERM before the first step: stopping at step %d with nothing new', step)
    speed = Throughput(step)
    intervals, warned_wait = 0, False
    while step < total and not preempted:
      profiler.before(step + 1)
      with speed.waiting():
        batch = sharding.global_batch(next(data_iter), mesh)
      state, step_metrics = step_fn(state, batch)
      step += 1
      profiler.after(step, state)
      pending.append((step, step_metrics))
      preempted = watcher.reached(step)
      save = step % config.checkpoint_every_steps == 0 or step == total or preempted
      if save or step % config.log_every_steps == 0 or step in evaluate_at:
        metrics = _check_finite(pending, ckpt.directory, last_saved, config.data.num_classes)
        pending = []
        metrics.update(lr=float(schedule(step - 1)), **speed.measure(step, config.batch_size))
        log.line(f'step {step}/{total}: loss {metrics["loss"]:.4f} top1 {metrics["top1"]:.3f} '
                 f'grad_norm {metrics["grad_norm"]:.3g} lr {metrics["lr"]:.3g} '
                 f'({metrics["clips_per_s"]:.2f} clips/s, '
                 f'{100 * metrics["data_wait_fraction"]:.0f}% waiting for data)')
        log.train(step, metrics)
        intervals += 1
        warning = data_wait_warning(metrics['data_wait_fraction'], config)
        if warning and intervals > 1 and not warned_wait:  # The first one compiles.
          logging.warning('step %d: %s', step, warning)
          warned_wait = True
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
    if cache_dir:
      log.line(f'compilation cache {cache_dir}: {compiled.loaded} programs loaded from it, '
               f'{compiled.compiled} compiled')
    if profiler.written:
      log.line(f'profile of steps {config.profile_steps[0]}-{config.profile_steps[-1]}: '
               f'{os.path.dirname(profiler.written[0])}')
  # The final save has finished here (ckpt.close), still inside the SIGTERM watcher.
  return RunResult(step=step, total_steps=total, preempted=preempted, metrics=metrics,
                   saved_step=last_saved)


def with_compute_dtype(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """`config` with `model.dtype` resolved (`models.compute_dtype`): what the run computes in, and
  what its config.json records (a copy; the caller's config is unchanged)."""
  resolved = config.copy_and_resolve_references()
  resolved.model.dtype = models.compute_dtype(config.model.dtype)
  return resolved


def _note_config_changes(workdir: str, config: ml_collections.ConfigDict) -> None:
  """Says which fields of the run's config.json this start changes (it is then rewritten)."""
  if not run_directory.has_config(workdir):
    return
  found = run_directory.changes(run_directory.flatten(run_directory.read_config(workdir)),
                                run_directory.flatten(config))
  if found:
    logging.warning('%s: this start changes %s', files.resolve(workdir) / run_directory.CONFIG_FILE,
                    run_directory.format_changes(found))
