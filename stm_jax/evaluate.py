"""`launch.py --mode=eval`: a checkpoint of a run, evaluated with the paper's protocols.

Protocols (input_pipeline/pipeline.py):
  val   1 view per video: segment centres, centre crop.
  test  `config.data.num_clips x config.data.num_crops` views per video (paper 4.2: 10 x 3).

The eval step (jitted, `train=False`) returns the softmax scores of every view of the global
batch, replicated, so every process sees every row; each process adds them per video on the
host: a video's score is the mean of its views' softmax scores, padding rows (`mask` 0) are
dropped, and a video whose view count is not exactly the protocol's is an error (so with any
number of hosts every video counts once). Metrics of the averaged scores: top-1, top-5, mean
class accuracy (mean of the per-class accuracies of the classes present), per-class accuracy
and the confusion matrix; videos without a label (-1) are scored but not counted.

Process 0 writes `<workdir>/eval_<mode>_step<N>/`: `metrics.json`, `predictions.csv` (video
index, id, label, prediction, one score column per class: for score fusion) and
`confusion.png`, and prints the accuracy beside the protocol's cost (MACs of one clip, as
`--mode=summary` counts them, x views per video).
"""

import csv
import functools
import json
import os
from typing import Any, Callable, Iterable, Sequence

from absl import logging
import flax.linen as nn
import jax
import ml_collections
import numpy as np

from stm_jax import checkpointing
from stm_jax import models
from stm_jax import optim
from stm_jax import sharding
from stm_jax import train

PROTOCOLS = ('val', 'test')
Batch = dict[str, Any]


def _check_mode(mode: str) -> None:
  if mode not in PROTOCOLS:
    raise ValueError(f'eval protocol must be one of {PROTOCOLS}, got {mode!r}')


def views_per_video(config: ml_collections.ConfigDict, mode: str) -> int:
  """Views (clips x crops) per video of the protocol: val 1, test num_clips x num_crops."""
  _check_mode(mode)
  if mode == 'val':
    return 1
  return int(config.data.get('num_clips', 1)) * int(config.data.get('num_crops', 1))


# --- device ------------------------------------------------------------------------------------

def class_scores(variables: dict[str, Any], clips: jax.Array, *, model: nn.Module) -> jax.Array:
  """Softmax scores (float32, (B, classes)) of clips: what evaluation and prediction average."""
  logits = model.apply(variables, clips, train=False)
  return jax.nn.softmax(logits.astype(np.float32), axis=-1)


def eval_step(variables: dict[str, Any], batch: Batch, *, model: nn.Module) -> Batch:
  """Softmax scores of a batch's views, with their label/mask/video."""
  return {'scores': class_scores(variables, batch['clips'], model=model),
          'label': batch['label'], 'mask': batch['mask'], 'video_index': batch['video_index']}


def jit_eval_step(model: nn.Module, mesh: jax.sharding.Mesh) -> Callable[[Any, Batch], Batch]:
  """`eval_step` over `mesh`: variables replicated, batch on `data`, outputs replicated (every
  process gets every row of the global batch)."""
  replicated = sharding.replicated(mesh)
  return jax.jit(functools.partial(eval_step, model=model),
                 in_shardings=(replicated, sharding.data_sharded(mesh)),
                 out_shardings=replicated)


# --- host: per-video averaging -----------------------------------------------------------------

class VideoScores:
  """Sums the softmax scores of each video's views; `averaged()` gives the per-video means."""

  def __init__(self, num_videos: int, num_classes: int, views_per_video: int):
    self.views_per_video = views_per_video
    self._sums = np.zeros((num_videos, num_classes), np.float64)
    self._counts = np.zeros((num_videos,), np.int64)
    self._labels = np.full((num_videos,), -1, np.int64)

  def add(self, scores: np.ndarray, label: np.ndarray, mask: np.ndarray,
          video_index: np.ndarray) -> None:
    """Adds the rows of one global batch; rows with `mask` 0 (padding) are ignored."""
    keep = np.asarray(mask) > 0
    videos = np.asarray(video_index)[keep]
    if videos.size and (videos.min() < 0 or videos.max() >= len(self._counts)):
      raise ValueError(f'video index out of range [0, {len(self._counts)}): '
                       f'{videos.min()}..{videos.max()}')
    np.add.at(self._sums, videos, np.asarray(scores, np.float64)[keep])
    np.add.at(self._counts, videos, 1)
    self._labels[videos] = np.asarray(label)[keep]

  def averaged(self) -> tuple[np.ndarray, np.ndarray]:
    """Returns (per-video mean scores (N, C), labels (N,)); raises unless every video has
    exactly `views_per_video` views."""
    wrong = np.flatnonzero(self._counts != self.views_per_video)
    if wrong.size:
      raise ValueError(f'{wrong.size} video(s) have a view count other than '
                       f'{self.views_per_video}, e.g. video {wrong[0]}: '
                       f'{self._counts[wrong[0]]} views')
    return self._sums / self.views_per_video, self._labels.copy()


def _to_host(x: jax.Array) -> np.ndarray:
  """A replicated array's value (this process's copy)."""
  return np.asarray(x.addressable_data(0))


def video_scores(variables: dict[str, Any], model: nn.Module, config: ml_collections.ConfigDict,
                 mesh: jax.sharding.Mesh, source: Sequence, mode: str,
                 batches: Iterable[dict[str, np.ndarray]] | None = None
                 ) -> tuple[np.ndarray, np.ndarray]:
  """Runs the `mode` protocol over `source`; returns per-video mean scores and labels.

  `variables` (`{'params', 'batch_stats'}`) must be replicated over `mesh`; `batches` defaults
  to this process's share of `pipeline.create_dataset(source, config, mode)`.
  """
  from input_pipeline import pipeline  # pylint: disable=g-import-not-at-top
  sharding.check_batch_size(config.batch_size, mesh)
  spec = pipeline.ClipSpec.from_config(config)
  steps = pipeline.num_eval_steps(len(source), spec, mode, config.batch_size)
  if batches is None:
    batches = pipeline.create_dataset(source, config, mode)
  step_fn = jit_eval_step(model, mesh)
  acc = VideoScores(len(source), config.data.num_classes, spec.views_per_video(mode))
  pending = None
  done = 0
  for local in batches:
    if done == steps:
      break
    out = step_fn(variables, sharding.global_batch(local, mesh))
    if pending is not None:  # Fetch the previous step while this one runs.
      acc.add(**{k: _to_host(v) for k, v in pending.items()})
    pending = out
    done += 1
    if done % 50 == 0:
      logging.info('eval %s: step %d/%d', mode, done, steps)
  if pending is not None:
    acc.add(**{k: _to_host(v) for k, v in pending.items()})
  if done != steps:
    raise ValueError(f'the {mode} pipeline gave {done} batches, expected {steps}')
  return acc.averaged()


# --- metrics -----------------------------------------------------------------------------------

def top_k(scores: np.ndarray, k: int) -> np.ndarray:
  """The k best classes of each row, best first (ties: the lower class first)."""
  return np.argsort(-scores, axis=1, kind='stable')[:, :k]


def compute_metrics(scores: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
  """Top-1, top-5, mean class and per-class accuracy and the confusion matrix of labelled rows.

  `scores`: (N, C) per-video scores; `labels`: (N,), -1 for unlabelled videos (not counted).
  Per-class accuracy is None for a class without videos; the mean class accuracy is the mean
  over the classes that have videos. Accuracies are fractions in [0, 1] (None without labels).
  """
  scores = np.asarray(scores)
  labels = np.asarray(labels)
  num_classes = scores.shape[1]
  labelled = labels >= 0
  s, y = scores[labelled], labels[labelled]
  confusion = np.zeros((num_classes, num_classes), np.int64)
  if not len(y):
    return {'num_videos': int(len(labels)), 'num_labelled': 0, 'top1': None, 'top5': None,
            'mean_class_accuracy': None, 'per_class_accuracy': [None] * num_classes,
            'confusion': confusion.tolist()}
  pred = top_k(s, min(5, num_classes))
  np.add.at(confusion, (y, pred[:, 0]), 1)
  per_class_total = confusion.sum(axis=1)
  per_class = [float(confusion[c, c] / per_class_total[c]) if per_class_total[c] else None
               for c in range(num_classes)]
  present = [a for a in per_class if a is not None]
  return {
      'num_videos': int(len(labels)),
      'num_labelled': int(len(y)),
      'top1': float(np.mean(pred[:, 0] == y)),
      'top5': float(np.mean(np.any(pred == y[:, None], axis=1))),
      'mean_class_accuracy': float(np.mean(present)),
      'per_class_accuracy': per_class,
      'confusion': confusion.tolist(),
  }


# --- outputs -----------------------------------------------------------------------------------

def write_predictions(path: str, ids: Sequence[str], scores: np.ndarray,
                      labels: np.ndarray) -> None:
  """CSV: video_index, video_id, label, prediction, score_0 .. score_{C-1} (per-video means)."""
  with open(path, 'w', newline='') as f:
    w = csv.writer(f)
    w.writerow(['video_index', 'video_id', 'label', 'prediction'] +
               [f'score_{c}' for c in range(scores.shape[1])])
    for i, (vid, row, label) in enumerate(zip(ids, scores, labels)):
      w.writerow([i, vid, int(label), int(np.argmax(row))] + [f'{v:.7g}' for v in row])


def read_predictions(path: str) -> tuple[list[str], np.ndarray, np.ndarray]:
  """Reads a predictions.csv back: (video ids, scores (N, C), labels (N,))."""
  with open(path, newline='') as f:
    rows = list(csv.reader(f))[1:]
  ids = [r[1] for r in rows]
  labels = np.asarray([int(r[2]) for r in rows], np.int64)
  scores = np.asarray([[float(v) for v in r[4:]] for r in rows], np.float64)
  return ids, scores, labels


def plot_confusion(path: str, confusion: np.ndarray, title: str,
                   class_names: Sequence[str] | None = None) -> None:
  """Saves the row-normalised confusion matrix (true class down, predicted across) as a PNG."""
  from matplotlib.backends.backend_agg import FigureCanvasAgg  # pylint: disable=g-import-not-at-top
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top
  confusion = np.asarray(confusion, np.float64)
  totals = confusion.sum(axis=1, keepdims=True)
  normalised = np.divide(confusion, totals, out=np.zeros_like(confusion), where=totals > 0)
  n = confusion.shape[0]
  size = min(max(4.0, 0.35 * n + 2), 20.0)
  fig = Figure(figsize=(size, size))
  FigureCanvasAgg(fig)
  ax = fig.add_subplot(1, 1, 1)
  image = ax.imshow(normalised, cmap='Blues', vmin=0, vmax=1, interpolation='nearest')
  fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
  ax.set_xlabel('predicted class')
  ax.set_ylabel('true class')
  ax.set_title(title)
  if n <= 30:
    names = list(class_names) if class_names is not None and len(class_names) == n else None
    ax.set_xticks(range(n))
    ax.set_yticks(range(n))
    if names:
      ax.set_xticklabels(names, rotation=90, fontsize=6)
      ax.set_yticklabels(names, fontsize=6)
  fig.tight_layout()
  fig.savefig(path, dpi=100)


def protocol_cost(config: ml_collections.ConfigDict, mode: str) -> dict[str, Any]:
  """MACs of one clip (summary.py's count) and of one video under the protocol."""
  from stm_jax import summary  # pylint: disable=g-import-not-at-top
  macs = int(summary.summarize(config)['macs'])
  views = views_per_video(config, mode)
  return {'macs_per_clip': macs, 'views_per_video': views, 'macs_per_video': macs * views}


def format_result(mode: str, step: int, metrics: dict[str, Any]) -> str:
  """The one-line result: accuracy beside GFLOPs x views."""
  def pct(x):
    return 'n/a' if x is None else f'{100 * x:.2f}%'
  c = metrics['cost']
  views = c['views_per_video']
  return (f'eval {mode} (step {step}, {metrics["num_videos"]} videos, '
          f'{metrics["num_labelled"]} labelled): top-1 {pct(metrics["top1"])}  '
          f'top-5 {pct(metrics["top5"])}  mean class {pct(metrics["mean_class_accuracy"])}  |  '
          f'{c["macs_per_clip"] / 1e9:.3f} GFLOPs x {views} views = '
          f'{c["macs_per_video"] / 1e9:.3f} GFLOPs per video')


# --- entry point -------------------------------------------------------------------------------

def check_config(config: ml_collections.ConfigDict, mode: str) -> None:
  """Checks the fields an evaluation reads, raising a ValueError naming the bad one."""
  _check_mode(mode)
  models.check_model_config(config)
  if not isinstance(config.batch_size, int) or config.batch_size < 1:
    raise ValueError(f'config.batch_size={config.batch_size!r}: must be a positive integer')
  if config.data.num_classes < 1:
    raise ValueError(f'config.data.num_classes={config.data.num_classes!r}: must be set')
  if mode == 'test':
    for field in ('num_clips', 'num_crops'):
      value = config.data.get(field, 1)
      if not isinstance(value, int) or value < 1:
        raise ValueError(f'config.data.{field}={value!r}: must be a positive integer')
    if config.data.get('num_crops', 1) not in (1, 3):
      raise ValueError(f'config.data.num_crops={config.data.num_crops!r}: must be 1 or 3')


def open_eval_source(config: ml_collections.ConfigDict) -> Sequence:
  """The prepared split that evaluation reads (`config.data.eval_split`)."""
  from input_pipeline import pipeline  # pylint: disable=g-import-not-at-top
  return pipeline.open_source(config, config.data.get('eval_split', 'validation'))


def restore_variables(config: ml_collections.ConfigDict, workdir: str, model: nn.Module,
                      mesh: jax.sharding.Mesh, checkpoint_step: int | str | None = None
                      ) -> tuple[int, dict[str, Any]]:
  """Restores a train state of `workdir`; returns its step and `{'params', 'batch_stats'}`,
  replicated over `mesh`.

  `checkpoint_step`: None (the latest), a step number, or 'best' (the best validation top-1
  kept during training).
  """
  # The optimiser state's tree does not depend on the schedule, so any example count does.
  tx = optim.create_optimizer(config, num_examples=config.batch_size)
  abstract = train.abstract_train_state(model, tx, config, mesh)
  if checkpoint_step == 'best':
    if not checkpointing.has_best(workdir):
      raise FileNotFoundError(f'no best checkpoint in {workdir}: it is kept when training '
                              'evaluates (config.eval_every_epochs > 0 and a validation split)')
    ckpt = checkpointing.BestCheckpointer(workdir)
    checkpoint_step = ckpt.best()[0]
  else:
    ckpt = checkpointing.Checkpointer(workdir, keep=config.get('keep_checkpoints', 3))
  try:
    if checkpoint_step is None:
      state = ckpt.restore_latest(abstract)
      if state is None:
        raise FileNotFoundError(f'no checkpoint in {ckpt.directory}: train first '
                                '(launch.py --mode=train)')
    else:
      state = ckpt.restore(int(checkpoint_step), abstract)
  finally:
    ckpt.close()
  step = int(_to_host(state.step))
  return step, {'params': state.params, 'batch_stats': state.batch_stats}


def evaluate(config: ml_collections.ConfigDict, workdir: str, mode: str = 'val',
             checkpoint_step: int | str | None = None, source: Sequence | None = None
             ) -> dict[str, Any]:
  """Evaluates a checkpoint of `workdir` (latest, a step, or 'best') with protocol `mode`.

  The split is `config.data.eval_split` (default 'validation'); `source` replaces it (tests,
  custom sources). Writes `<workdir>/eval_<mode>_step<N>/{metrics.json, predictions.csv,
  confusion.png}` (process 0) and returns the metrics (accuracies as fractions).
  """
  check_config(config, mode)
  mesh = sharding.make_mesh()
  model = models.create(config)
  step, variables = restore_variables(config, workdir, model, mesh, checkpoint_step)
  if source is None:
    source = open_eval_source(config)
  return evaluate_variables(config, model, variables, mesh, source, mode, step, workdir)


def evaluate_variables(config: ml_collections.ConfigDict, model: nn.Module,
                       variables: dict[str, Any], mesh: jax.sharding.Mesh, source: Sequence,
                       mode: str, step: int, workdir: str, write_outputs: bool = True
                       ) -> dict[str, Any]:
  """Evaluates `variables` (replicated over `mesh`) on `source` with protocol `mode`.

  Shared by `--mode=eval` and the evaluations during training. With `write_outputs`, process 0
  writes `<workdir>/eval_<mode>_step<step>/` and prints the result line; without, only the
  metrics are returned (training logs them itself).
  """
  split = config.data.get('eval_split', 'validation')
  if len(source) == 0:
    raise ValueError(f'the {split!r} split is empty')
  logging.info('eval %s: step %d, %d videos of %r, %d views each', mode, step,
               len(source), split, views_per_video(config, mode))
  scores, labels = video_scores(variables, model, config, mesh, source, mode)
  metrics = compute_metrics(scores, labels)
  metrics.update(protocol=mode, split=split, step=step)
  if not write_outputs:
    return metrics
  cost = protocol_cost(config, mode)  # Traces the model: only for the written report.
  cost['num_clips'] = 1 if mode == 'val' else int(config.data.get('num_clips', 1))
  cost['num_crops'] = 1 if mode == 'val' else int(config.data.get('num_crops', 1))
  metrics['cost'] = cost
  out_dir = os.path.join(workdir, f'eval_{mode}_step{step}')
  metrics['output_dir'] = out_dir
  if jax.process_index() == 0:
    os.makedirs(out_dir, exist_ok=True)
    ids = [_video_id(source[i]) for i in range(len(source))]
    write_predictions(os.path.join(out_dir, 'predictions.csv'), ids, scores, labels)
    plot_confusion(os.path.join(out_dir, 'confusion.png'), np.asarray(metrics['confusion']),
                   f'{config.data.dataset} {split}, {mode} protocol, step {step}')
    with open(os.path.join(out_dir, 'metrics.json'), 'w') as f:
      json.dump(metrics, f, indent=1)
    print(format_result(mode, step, metrics), flush=True)
  return metrics


def _video_id(record: dict[str, Any]) -> str:
  vid = record['id']
  return vid.decode() if isinstance(vid, bytes) else str(vid)


def main(config: ml_collections.ConfigDict, workdir: str, mode: str,
         checkpoint_step: int | str | None = None) -> dict[str, Any]:
  """`--mode=eval`."""
  return evaluate(config, workdir, mode, checkpoint_step)
