"""What a training run logs, and where: TensorBoard events, `metrics.jsonl`, `curves.png`, a progress bar.

Process 0 of a run writes, inside the run's workdir:

* `tensorboard/`: TensorBoard event files (tensorboardX), one scalar per metric, tagged
  `train/<key>` (loss, top1, grad_norm, lr, clips_per_s, step_time_s, data_wait_fraction) and
  `val/<key>` (top1, top5, mean_class_accuracy), at the training step. Watch a run with
  `tensorboard --logdir <workdir>` (or several runs with `--logdir <parent of workdirs>`).
* `metrics.jsonl`: the same numbers as one JSON object per line,
  `{"step": 100, "split": "train", "time": <unix seconds>, "loss": 2.31, ...}`, flushed after every
  line (in a bucket: the object rewritten whole each time), so that scripts, notebooks and tests can read a run without TensorFlow or TensorBoard
  (`read_metrics`). Non-finite values (a diverging loss) are written as `null`, since JSON has no
  NaN or Infinity; values that are not scalars (per-class lists, dicts, None) are not logged.
* `curves.png`: loss and accuracy against step, redrawn from `metrics.jsonl` after every
  evaluation and at the end, for a look at a run without a TensorBoard server.

and shows a tqdm progress bar (steps done of the total, rate, ETA, latest loss and top-1) on stderr.

A resumed run continues the logs of the run it resumes without logging any step twice: the steps
after the checkpoint it resumes from (logged by a run killed before its next checkpoint, and about
to be redone) are dropped from `metrics.jsonl` (an atomic rewrite) and purged from TensorBoard (the
writer is opened with `purge_step`, which hides earlier events at those steps). A last line cut off
by a kill mid-write is skipped by the reader and dropped at the next start.
"""

import json
import math
import numbers
import os
import sys
import time
from typing import Any

from absl import logging
import numpy as np
import tqdm

from input_pipeline import files
from stm_jax.core import figures

METRICS_FILE = 'metrics.jsonl'
TENSORBOARD_DIR = 'tensorboard'
CURVES_FILE = 'curves.png'
_RESERVED = ('step', 'split', 'time')


def _scalar(value: Any) -> float | int | None:
  """`value` as a Python number, or None when it is not a single number (list, dict, None, text)."""
  if isinstance(value, (bool, np.bool_)):
    return int(value)
  if isinstance(value, numbers.Integral):
    return int(value)
  if isinstance(value, numbers.Real):
    return float(value)
  if isinstance(value, np.ndarray) or hasattr(value, '__array__'):  # numpy / jax 0-d arrays.
    array = np.asarray(value)
    if array.ndim == 0 and array.dtype.kind in 'biuf':
      return _scalar(array.item())
  return None


def _scalars(metrics: dict[str, Any]) -> dict[str, float | int]:
  """The entries of `metrics` that are single numbers, as Python numbers; the rest are left out."""
  bad = [key for key in metrics if key in _RESERVED]
  if bad:
    raise ValueError(f'run_log: metric name {bad[0]!r} is reserved for the fields of '
                     f'{METRICS_FILE} lines ({", ".join(_RESERVED)}); rename the metric')
  result = {}
  for key, value in metrics.items():
    number = _scalar(value)
    if number is not None:
      result[str(key)] = number
  return result


def _json_line(record: dict[str, Any]) -> str:
  """One line of metrics.jsonl: non-finite floats become null (JSON has no NaN/Infinity)."""
  clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
           for k, v in record.items()}
  return json.dumps(clean, allow_nan=False) + '\n'


def _read_lines(path: str) -> tuple[list[dict[str, Any]], int]:
  """The records of the metrics file at `path` and the number of unreadable lines skipped."""
  records, bad = [], 0
  try:
    lines = files.resolve(path).read_text(encoding='utf-8').split('\n')
  except FileNotFoundError:
    return [], 0
  for number, line in enumerate(lines, 1):
    if not line.strip():
      continue
    try:
      record = json.loads(line)
    except json.JSONDecodeError:
      record = None
    if not isinstance(record, dict) or not isinstance(record.get('step'), int):
      bad += 1
      if number < len(lines) - 1 or lines[-1]:  # Not just a last line cut off mid-write.
        logging.warning('%s: line %d is not a metrics record; skipped', path, number)
      continue
    records.append(record)
  return records, bad


def read_metrics(workdir: str) -> list[dict[str, Any]]:
  """The records of `<workdir>/metrics.jsonl` in order (each has step, split, time and the
  metrics; non-finite values read as None); [] when there is none. Unreadable lines, such as a
  last line cut off by a kill mid-write, are skipped."""
  return _read_lines(files.resolve(workdir) / METRICS_FILE)[0]


def _truncate_after(path: str, step: int) -> None:
  """Rewrites the metrics file at `path` (atomically) without records after `step` and without
  unreadable lines, so that a resumed run appends the redone steps once. Unchanged if clean."""
  records, bad = _read_lines(path)
  keep = [r for r in records if r['step'] <= step]
  if len(keep) == len(records) and not bad:
    return
  logging.info('%s: dropping %d records after step %d (to be redone by this run) and %d '
               'unreadable lines', path, len(records) - len(keep), step, bad)
  with files.atomic_write(path, encoding='utf-8') as f:
    f.writelines(json.dumps(r) + '\n' for r in keep)


class _LineFile:
  """metrics.jsonl open for adding lines, each on disk when `write` returns: a local file is
  appended to and flushed; an object in a bucket cannot be appended to, so it is rewritten whole
  (one upload of the lines so far, kept here; a file of a long run is a few hundred KiB)."""

  def __init__(self, path):
    self._path = files.resolve(path)
    self._remote = files.is_remote(self._path)
    if self._remote:
      self._text = self._path.read_text(encoding='utf-8') if self._path.exists() else ''
    else:
      self._file = open(self._path, 'a', encoding='utf-8')  # pylint: disable=consider-using-with

  def write(self, line: str) -> None:
    """Adds `line` (ending in a newline) to the file."""
    if self._remote:
      self._text += line
      files.write_bytes(self._path, self._text.encode('utf-8'))
    else:
      self._file.write(line)
      self._file.flush()

  def close(self) -> None:
    """Closes the local file (a bucket's object is complete after every write)."""
    if not self._remote:
      self._file.close()


def plot_curves(records: list[dict[str, Any]], path: str) -> bool:
  """Draws loss (train) and accuracy (train top-1; top-1/top-5 of every evaluated split) against
  step into the PNG at `path`, atomically (temp file + rename) so that a reader never sees half
  a file. Returns False, writing nothing, when there is nothing to draw."""
  def series(split, key):
    points = [(r['step'], r[key]) for r in records
              if r.get('split') == split and isinstance(r.get(key), (int, float))]
    return [p[0] for p in points], [p[1] for p in points]

  splits = sorted({r.get('split') for r in records} - {'train', None}, key=str)
  curves = [('loss', 'train', 'loss'), ('accuracy', 'train', 'top1')]
  curves += [('accuracy', split, key) for split in splits for key in ('top1', 'top5')]
  drawn = [(panel, split, key, *series(split, key)) for panel, split, key in curves]
  drawn = [d for d in drawn if d[3]]
  if not drawn:
    return False
  figure = figures.new_figure((11, 4), dpi=100)
  axes = dict(zip(('loss', 'accuracy'), figure.subplots(1, 2)))
  for panel, split, key, steps, values in drawn:
    style = '-' if split == 'train' else 'o-'
    axes[panel].plot(steps, values, style, label=f'{split} {key}', markersize=3)
  for panel, ax in axes.items():
    ax.set_xlabel('step')
    ax.set_ylabel(panel)
    ax.grid(alpha=0.3)
    if ax.lines:
      ax.legend()
  figure.tight_layout()
  figures.save_png(figure, path)
  return True


class RunLog:
  """The logs of one training run (see the module docstring): TensorBoard, metrics.jsonl,
  curves.png and the progress bar. With `enabled=False` (every process but 0 of a multi-host
  run) every method does nothing and nothing is created on disk."""

  def __init__(self, workdir: str, total_steps: int, start_step: int, enabled: bool):
    """Opens the logs of a run of `total_steps` steps starting (or resuming) at `start_step`:
    drops what an earlier, killed run logged after `start_step` and starts the progress bar."""
    self.workdir = workdir
    self.enabled = enabled
    self.bar = None
    self._writer = None
    self._file = None
    if not enabled:
      return
    from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
    directory = files.resolve(workdir)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / METRICS_FILE
    _truncate_after(path, start_step)
    self._file = _LineFile(path)
    # purge_step hides, in TensorBoard, events of earlier files at steps >= start_step + 1 (also
    # at start_step 0: a workdir with logs but no checkpoint is started over).
    # tensorboardX names event files by the second and truncates an existing one: the suffix
    # keeps a restart within the same second from erasing the previous file, and (as TensorBoard
    # reads a directory's files in name order) sorts the newer file after it.
    self._writer = SummaryWriter(os.fspath(directory / TENSORBOARD_DIR),
                                 purge_step=start_step + 1,
                                 filename_suffix=f'.{time.time_ns():020d}.{os.getpid()}')
    # On a terminal the bar redraws in place; in a log file (a batch job's stderr) each redraw
    # is appended, so it redraws once a minute there.
    interactive = sys.stderr.isatty()
    self.bar = tqdm.tqdm(total=total_steps, initial=start_step, unit='step', file=sys.stderr,
                         dynamic_ncols=True, smoothing=0.1, mininterval=0.1 if interactive else 60)

  def line(self, text: str) -> None:
    """One line for the console, above the progress bar (process 0), and for the log file."""
    logging.info('%s', text)
    if self.enabled:
      tqdm.tqdm.write(text, file=sys.stderr)

  def advance(self, step: int) -> None:
    """Moves the progress bar to `step` (steps done)."""
    if self.bar is not None and step > self.bar.n:
      self.bar.update(step - self.bar.n)

  def _log(self, step: int, split: str, metrics: dict[str, Any]) -> dict[str, float | int]:
    """Writes the scalars of `metrics` as `<split>/<key>` events and one metrics.jsonl line."""
    values = _scalars(metrics)
    for key, value in values.items():
      self._writer.add_scalar(f'{split}/{key}', value, global_step=step)
    self._writer.flush()
    self._file.write(_json_line({'step': int(step), 'split': split, 'time': time.time(),
                                 **values}))
    return values

  def train(self, step: int, metrics: dict[str, Any]) -> None:
    """Logs training metrics at `step` (TensorBoard `train/<key>`, metrics.jsonl) and shows the
    loss and top-1 on the progress bar."""
    if not self.enabled:
      return
    values = self._log(step, 'train', metrics)
    shown = {k: f'{values[k]:.4g}' for k in ('loss', 'top1') if k in values}
    if shown:
      self.bar.set_postfix(shown, refresh=False)

  def eval(self, step: int, metrics: dict[str, Any], split: str = 'val') -> None:
    """Logs evaluation metrics at `step` (TensorBoard `<split>/<key>`, metrics.jsonl), prints
    them above the progress bar and redraws curves.png."""
    if not self.enabled:
      return
    values = self._log(step, split, metrics)
    text = ' '.join(f'{k} {v:.4g}' for k, v in values.items())
    tqdm.tqdm.write(f'step {step} {split}: {text}', file=sys.stderr)
    self.plot()

  def plot(self) -> None:
    """Redraws <workdir>/curves.png from metrics.jsonl (nothing when nothing is logged yet)."""
    if not self.enabled:
      return
    plot_curves(read_metrics(self.workdir), files.resolve(self.workdir) / CURVES_FILE)

  def close(self) -> None:
    """Draws the final curves and closes the event writer, the metrics file and the bar."""
    if not self.enabled or self._file is None:
      return
    try:
      self.plot()
    finally:
      self._writer.close()
      self._file.close()
      self.bar.close()
      self._file = None
