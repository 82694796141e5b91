"""What an evaluation writes and prints: predictions.csv, confusion.png, the result line.

`predictions.csv` holds, per video, its index, id, label, predicted class and the averaged score of
every class (for score fusion across models); `confusion.png` the row-normalised confusion matrix;
the result line gives the accuracy beside the protocol's cost (MACs of one clip, as
`--mode=summary` counts them, x views per video).
"""

import csv
import io
from typing import Any, Sequence

import ml_collections
import numpy as np

from input_pipeline import files
from input_pipeline import protocols
from stm_jax.core import figures
from stm_jax.models import counting


def write_predictions(path: str, ids: Sequence[str], scores: np.ndarray,
                      labels: np.ndarray) -> None:
  """CSV: video_index, video_id, label, prediction, score_0 .. score_{C-1} (per-video means)."""
  with files.atomic_write(path, newline='', encoding='utf-8') as f:
    w = csv.writer(f)
    w.writerow(['video_index', 'video_id', 'label', 'prediction'] +
               [f'score_{c}' for c in range(scores.shape[1])])
    for i, (vid, row, label) in enumerate(zip(ids, scores, labels)):
      w.writerow([i, vid, int(label), int(np.argmax(row))] + [f'{v:.7g}' for v in row])


def read_predictions(path: str) -> tuple[list[str], np.ndarray, np.ndarray]:
  """Reads a predictions.csv back: (video ids, scores (N, C), labels (N,))."""
  rows = list(csv.reader(io.StringIO(files.resolve(path).read_text(encoding='utf-8'))))[1:]
  ids = [r[1] for r in rows]
  labels = np.asarray([int(r[2]) for r in rows], np.int64)
  scores = np.asarray([[float(v) for v in r[4:]] for r in rows], np.float64)
  return ids, scores, labels


def plot_confusion(path: str, confusion: np.ndarray, title: str,
                   class_names: Sequence[str] | None = None) -> None:
  """Saves the row-normalised confusion matrix (true class down, predicted across) as a PNG."""
  confusion = np.asarray(confusion, np.float64)
  totals = confusion.sum(axis=1, keepdims=True)
  normalised = np.divide(confusion, totals, out=np.zeros_like(confusion), where=totals > 0)
  n = confusion.shape[0]
  size = min(max(4.0, 0.35 * n + 2), 20.0)
  fig = figures.new_figure((size, size))
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
  figures.save_png(fig, path)


def protocol_cost(config: ml_collections.ConfigDict,
                  protocol: protocols.Protocol) -> dict[str, Any]:
  """MACs of one clip (models/counting.py) and of one video under `protocol`."""
  macs = int(counting.summarize(config)['macs'])
  views = protocol.views_per_video
  return {'macs_per_clip': macs, 'views_per_video': views, 'macs_per_video': macs * views,
          'num_clips': protocol.num_clips, 'num_crops': protocol.num_crops}


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
