"""Scores and metrics of an evaluation: per-video averaging of view scores, accuracies.

A video's score is the mean of its views' softmax scores; padding rows (`mask` 0) are dropped and
a video whose view count is not exactly the protocol's is an error, so with any number of hosts
every video counts once. Metrics of the averaged scores: top-1, top-5, mean class accuracy (mean
of the per-class accuracies of the classes present), per-class accuracy and the confusion matrix;
videos without a label (-1) are scored but not counted.
"""

from typing import Any

import numpy as np

from input_pipeline import errors


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
      raise errors.UserError(f'video index out of range [0, {len(self._counts)}): '
                       f'{videos.min()}..{videos.max()}')
    labels = np.asarray(label)[keep]
    num_classes = self._sums.shape[1]
    if labels.size and labels.max() >= num_classes:
      raise errors.bad_field('data.num_classes', num_classes,
                             f'the evaluated split holds label {int(labels.max())}, outside the '
                             f'model\'s {num_classes} classes: it is not the dataset the model '
                             'was trained on')
    np.add.at(self._sums, videos, np.asarray(scores, np.float64)[keep])
    np.add.at(self._counts, videos, 1)
    self._labels[videos] = labels

  def averaged(self) -> tuple[np.ndarray, np.ndarray]:
    """Returns (per-video mean scores (N, C), labels (N,)); raises unless every video has
    exactly `views_per_video` views."""
    wrong = np.flatnonzero(self._counts != self.views_per_video)
    if wrong.size:
      raise ValueError(f'{wrong.size} video(s) have a view count other than '
                       f'{self.views_per_video}, e.g. video {wrong[0]}: '
                       f'{self._counts[wrong[0]]} views')
    return self._sums / self.views_per_video, self._labels.copy()


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
