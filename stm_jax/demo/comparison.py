"""The out-of-the-box demo (`python launch.py`): what STM's temporal modules add to TSN, on a CPU.

1. Writes a synthetic dataset whose classes come in time-reversed pairs (stm_jax/demo/videos.py)
   as Something-Something v2 raw data: webm videos and the JSON annotations;
2. prepares it with the data pipeline's own converter (input_pipeline/prepare/converter.py);
3. trains one tiny network per `config.demo.models` entry (TSN = none, CSTM, CMM, STM) with the
   same budget (stm_jax/train/loop.py) and evaluates each on the validation split (val protocol);
4. prints and writes a comparison in the style of the paper's Table 5: `comparison.md`,
   `comparison.json` and `comparison.png`.

Within-pair accuracy is the fraction of validation videos whose true class scores above its
time-reversed partner. TSN averages per-frame logits, so it cannot see the order of frames and
sits near 50% by construction; the temporal modules can.

Everything lives in the workdir: `data/raw` (videos), `data/tfds` (prepared), `runs/<model>`
(checkpoints, evaluation). A rerun skips what is done: the dataset, its preparation, finished
models (their `demo_result.json`); an interrupted training resumes from its checkpoint.
"""

import json
import os
import time
from typing import Any

import ml_collections
import numpy as np

from input_pipeline import errors
from input_pipeline import files
from input_pipeline.prepare import converter
from stm_jax.core import figures
from stm_jax.core import run_directory
from stm_jax.demo import videos
from stm_jax.evaluation import reports
from stm_jax.evaluation import runner
from stm_jax.models import counting
from stm_jax.models import temporal
from stm_jax.train import loop
from stm_jax.train import preemption

RESULT_FILE = 'demo_result.json'
TRAIN_FILE = 'demo_train.json'


def resolve(config: ml_collections.ConfigDict, workdir: str) -> ml_collections.ConfigDict:
  """A copy of `config` pointed at the workdir's data folders, with the class count of the
  demo's pairs."""
  config = ml_collections.ConfigDict(config.to_dict())
  workdir = os.path.abspath(workdir)
  config.data.raw_dir = os.path.join(workdir, 'data', 'raw')
  config.data.data_dir = os.path.join(workdir, 'data', 'tfds')
  config.data.num_classes = len(videos.class_names(config))
  return config


def model_config(config: ml_collections.ConfigDict, temporal_module: str
                 ) -> ml_collections.ConfigDict:
  """The config of one compared model: the demo config with `model.temporal_module` set and
  that model's budget (`demo.epochs`, the lr dropping at the `demo.decay_at` fractions)."""
  config = ml_collections.ConfigDict(config.to_dict())
  config.model.temporal_module = temporal_module
  epochs = int(config.demo.epochs[temporal_module])
  config.optim.epochs = epochs
  config.optim.decay_epochs = tuple(sorted({round(f * epochs) for f in config.demo.decay_at}))
  return config


def within_pair_accuracy(scores: np.ndarray, labels: np.ndarray) -> float:
  """Fraction of videos whose true class scores above its time-reversed partner class."""
  labels = np.asarray(labels)
  rows = np.arange(len(labels))
  return float(np.mean(scores[rows, labels] > scores[rows, labels ^ 1]))


def check_same_run(config: ml_collections.ConfigDict, run_dir: str) -> None:
  """Raises FileExistsError if `run_dir` holds a run of another config: a rerun must not resume
  (or report) a model trained with other settings as if it were this one."""
  if not run_directory.has_config(run_dir):
    return
  stored = files.read_json(os.path.join(run_dir, run_directory.CONFIG_FILE))
  # As the trainer records it: model.dtype=auto resolved for this backend.
  if stored != json.loads(loop.with_compute_dtype(config).to_json()):
    raise errors.ExistsError(f'{run_dir} holds a run made with other settings: delete it or '
                             'choose another demo workdir (--workdir)')


def run_model(config: ml_collections.ConfigDict, run_dir: str) -> dict[str, Any]:
  """Trains (or resumes) and evaluates one model; returns its comparison row.

  The row is stored in `<run_dir>/demo_result.json`; when that exists the model is not touched.
  A run directory of another config is an error (check_same_run).
  The training time is that of the call that finished training (`demo_train.json`); a run
  stopped by SIGTERM exits with status 143 after its checkpoint, and a rerun resumes it.
  """
  check_same_run(config, run_dir)
  result_path = os.path.join(run_dir, RESULT_FILE)
  if os.path.exists(result_path):
    return dict(files.read_json(result_path), skipped=True)
  name = temporal.TEMPORAL_MODULES[config.model.temporal_module].display_name
  train_path = os.path.join(run_dir, TRAIN_FILE)
  if not os.path.exists(train_path):
    print(f'--- {name}: training in {run_dir}', flush=True)
    start = time.time()
    run = loop.train_and_evaluate(config, run_dir)
    if run.preempted:
      print(f'{name}: stopped at step {run.step} of {run.total_steps} after a checkpoint; rerun '
            'the demo to resume', flush=True)
      raise SystemExit(preemption.PREEMPTED_EXIT_CODE)
    files.write_json(train_path, {'seconds': time.time() - start, 'steps': run.step})
  trained = files.read_json(train_path)
  print(f'--- {name}: evaluating on the validation split', flush=True)
  metrics = runner.evaluate(config, run_dir, 'val')
  _, scores, labels = reports.read_predictions(
      os.path.join(metrics['output_dir'], runner.PREDICTIONS_FILE))
  row = {
      'model': name,
      'temporal_module': config.model.temporal_module,
      'params': int(counting.summarize(config)['params']),
      'gflops': metrics['cost']['macs_per_clip'] / 1e9,
      'top1': metrics['top1'],
      'within_pair': within_pair_accuracy(scores, labels),
      'train_seconds': trained['seconds'],
      'steps': trained['steps'],
      'epochs': config.optim.epochs,
      'val_videos': metrics['num_labelled'],
  }
  files.write_json(result_path, row)
  return dict(row, skipped=False)


def format_table(rows: list[dict[str, Any]], config: ml_collections.ConfigDict) -> str:
  """The comparison as a markdown table, with a line saying what was trained on what."""
  d = config.demo
  lines = [
      f'Synthetic time-reversal pairs: {config.data.num_classes} classes, '
      f'{d.videos_per_class} train / {d.val_videos_per_class} val videos per class; '
      f'{config.data.num_frames} frames x {config.data.crop_size}x{config.data.crop_size}, '
      f'width {config.model.width}, blocks {tuple(config.model.blocks)}; each model trained '
      'to convergence (epochs in the table). Within-pair: the true class scores above its '
      'time-reversed partner (chance 50%).',
      '',
      '| model | params | GFLOPs/clip | epochs | top-1 | within-pair | train time |',
      '|---|---:|---:|---:|---:|---:|---:|',
  ]
  for r in rows:
    lines.append(f'| {r["model"]} | {r["params"]:,} | {r["gflops"]:.4f} | {r["epochs"]} | '
                 f'{100 * r["top1"]:.1f}% | {100 * r["within_pair"]:.1f}% | '
                 f'{r["train_seconds"]:.0f} s |')
  lines += ['', f'Top-1 chance: {100 / config.data.num_classes:.1f}%. TSN averages per-frame '
            'predictions, so a clip and its time reversal look the same to it: it can at best '
            'tell which pair a video belongs to. CSTM (channel-wise temporal convolution) and CMM '
            '(feature differences between neighbouring frames) see the order of frames; STM has '
            'both.']
  return '\n'.join(lines)


def plot(path: str, rows: list[dict[str, Any]], num_classes: int) -> None:
  """Bar chart of top-1 and within-pair accuracy per model, with their chance levels."""
  fig = figures.new_figure((6, 4))
  ax = fig.add_subplot(1, 1, 1)
  x = np.arange(len(rows))
  for offset, key, label in ((-0.2, 'top1', 'top-1'), (0.2, 'within_pair', 'within-pair')):
    values = [100 * r[key] for r in rows]
    bars = ax.bar(x + offset, values, width=0.4, label=label)
    ax.bar_label(bars, fmt='%.0f', fontsize=8)
  ax.axhline(100 / num_classes, color='C0', linestyle=':', linewidth=1, label='top-1 chance')
  ax.axhline(50, color='C1', linestyle='--', linewidth=1, label='within-pair chance')
  ax.set_xticks(x)
  ax.set_xticklabels([r['model'] for r in rows])
  ax.set_ylim(0, 105)
  ax.set_ylabel('validation accuracy (%)')
  ax.set_title('Telling a video from its time reversal')
  ax.legend(loc='upper center', bbox_to_anchor=(0.5, -0.1), ncol=4, fontsize=8, frameon=False)
  fig.tight_layout()
  figures.save_png(fig, path)


def main(config: ml_collections.ConfigDict, workdir: str) -> list[dict[str, Any]]:
  """Runs the demo in `workdir` (see the module docstring); returns the comparison rows."""
  config = resolve(config, workdir)
  os.makedirs(workdir, exist_ok=True)
  start = time.time()
  manifest = videos.write_dataset(config.data.raw_dir, config)
  print(f'demo data in {config.data.raw_dir}: {manifest["counts"]} videos'
        f'{" (already there)" if manifest["skipped"] else ""} ({time.time() - start:.1f} s)',
        flush=True)
  start = time.time()
  converter.main(config)
  print(f'prepared in {time.time() - start:.1f} s', flush=True)
  rows = []
  for module in config.demo.models:
    rows.append(run_model(model_config(config, module),
                          os.path.join(os.path.abspath(workdir), 'runs', module)))
  table = format_table(rows, config)
  print(table, flush=True)
  with files.atomic_write(os.path.join(workdir, 'comparison.md'), encoding='utf-8') as f:
    f.write(table + '\n')
  files.write_json(os.path.join(workdir, 'comparison.json'), rows)
  plot(os.path.join(workdir, 'comparison.png'), rows, int(config.data.num_classes))
  print(f'wrote {os.path.join(workdir, "comparison.md")} and comparison.png', flush=True)
  return rows
