"""Metrics of hand-made scores, and per-video averaging of views with padding."""

import numpy as np
import pytest

from stm_jax.evaluation import metrics as metrics_lib


# --- metrics -----------------------------------------------------------------------------------

def _reference(scores, labels, k):
  """Top-k accuracy, mean class accuracy, per-class accuracy by plain loops."""
  hits_k, hits_1, per_class = 0, 0, {}
  n = 0
  for row, y in zip(scores, labels):
    if y < 0:
      continue
    n += 1
    order = sorted(range(len(row)), key=lambda c: (-row[c], c))
    hits_1 += order[0] == y
    hits_k += y in order[:k]
    per_class.setdefault(y, []).append(order[0] == y)
  accs = {c: sum(v) / len(v) for c, v in per_class.items()}
  return hits_1 / n, hits_k / n, sum(accs.values()) / len(accs), accs


def test_metrics_of_hand_made_scores():
  scores = np.array([
      [0.7, 0.1, 0.1, 0.05, 0.03, 0.02, 0.0],   # y=0: top-1
      [0.1, 0.2, 0.3, 0.15, 0.12, 0.08, 0.05],  # y=1: rank 2 -> top-5
      [0.5, 0.0, 0.1, 0.1, 0.1, 0.1, 0.1],      # y=1: rank 7 -> miss
      [0.0, 0.0, 0.9, 0.1, 0.0, 0.0, 0.0],      # y=2: top-1
      [0.2, 0.2, 0.1, 0.1, 0.1, 0.1, 0.2],      # y=6: rank 3 (ties: lower class first)
      [0.3, 0.3, 0.1, 0.1, 0.1, 0.1, 0.0],      # y=-1: unlabelled, not counted
  ])
  labels = np.array([0, 1, 1, 2, 6, -1])
  m = metrics_lib.compute_metrics(scores, labels)
  top1, top5, mean_class, per_class = _reference(scores, labels, 5)
  assert m['num_videos'] == 6 and m['num_labelled'] == 5
  assert m['top1'] == pytest.approx(top1) == pytest.approx(2 / 5)
  assert m['top5'] == pytest.approx(top5) == pytest.approx(4 / 5)
  # classes 0: 1/1, 1: 0/2, 2: 1/1, 6: 0/1 -> mean 0.5; classes 3-5 have no videos.
  assert m['mean_class_accuracy'] == pytest.approx(mean_class) == pytest.approx(0.5)
  for c, acc in enumerate(m['per_class_accuracy']):
    assert acc == (pytest.approx(per_class[c]) if c in per_class else None)
  confusion = np.asarray(m['confusion'])
  assert confusion.sum() == 5 and confusion[1, 2] == 1 and confusion[1, 0] == 1
  assert confusion[6, 0] == 1 and np.trace(confusion) == 2


def test_metrics_on_random_scores_match_the_reference():
  rng = np.random.RandomState(3)
  scores = rng.rand(200, 12)
  labels = rng.randint(-1, 12, 200)
  m = metrics_lib.compute_metrics(scores, labels)
  top1, top5, mean_class, _ = _reference(scores, labels, 5)
  assert (m['top1'], m['top5'], m['mean_class_accuracy']) == pytest.approx(
      (top1, top5, mean_class))


def test_metrics_without_labels_and_with_few_classes():
  m = metrics_lib.compute_metrics(np.eye(3), np.full(3, -1))
  assert m['top1'] is None and m['num_labelled'] == 0
  m = metrics_lib.compute_metrics(np.array([[0.2, 0.8], [0.6, 0.4]]), np.array([0, 0]))
  assert m['top1'] == 0.5 and m['top5'] == 1.0  # top-5 of 2 classes is top-2


# --- view averaging ----------------------------------------------------------------------------

def _global_batches(num_videos, views, batch, num_classes, rng):
  """Video-major views in global batches, the last padded (mask 0, video -1, garbage scores)."""
  scores = rng.rand(num_videos * views, num_classes)
  scores /= scores.sum(axis=1, keepdims=True)
  labels = rng.randint(0, num_classes, num_videos)
  steps = -(-num_videos * views // batch)
  out = []
  for s in range(steps):
    rows = np.arange(s * batch, (s + 1) * batch)
    real = rows < num_videos * views
    idx = np.minimum(rows, num_videos * views - 1)
    out.append({'scores': np.where(real[:, None], scores[idx], 1e6),
                'label': np.where(real, labels[idx // views], -1),
                'mask': real.astype(np.int32),
                'video_index': np.where(real, idx // views, -1)})
  return out, scores.reshape(num_videos, views, num_classes).mean(axis=1), labels


def test_views_are_averaged_per_video_and_padding_ignored():
  rng = np.random.RandomState(0)
  batches, expected, labels = _global_batches(num_videos=7, views=6, batch=8, num_classes=4,
                                              rng=rng)
  assert batches[-1]['mask'].sum() < 8  # 42 views in 6 batches of 8: the last one padded
  acc = metrics_lib.VideoScores(7, 4, 6)
  for b in reversed(batches):  # order does not matter
    acc.add(**b)
  scores, got_labels = acc.averaged()
  np.testing.assert_allclose(scores, expected, rtol=1e-12)
  np.testing.assert_array_equal(got_labels, labels)


def test_every_video_must_be_counted_exactly_once():
  rng = np.random.RandomState(1)
  batches, _, _ = _global_batches(num_videos=5, views=3, batch=4, num_classes=3, rng=rng)
  acc = metrics_lib.VideoScores(5, 3, 3)
  for b in batches + batches[:1]:  # a batch seen twice (e.g. by two hosts)
    acc.add(**b)
  with pytest.raises(ValueError, match='view count other than 3'):
    acc.averaged()
  acc = metrics_lib.VideoScores(5, 3, 3)
  for b in batches[1:]:  # a batch missing
    acc.add(**b)
  with pytest.raises(ValueError, match='view count other than 3'):
    acc.averaged()


def test_a_label_outside_the_models_classes_is_an_error_naming_both():
  acc = metrics_lib.VideoScores(num_videos=2, num_classes=3, views_per_video=1)
  with pytest.raises(ValueError, match=r'config.data.num_classes=3: the evaluated split holds '
                                       r'label 4, outside the model\'s 3 classes'):
    acc.add(scores=np.full((2, 3), 1 / 3), label=np.array([0, 4]), mask=np.array([1, 1]),
            video_index=np.array([0, 1]))
  acc.add(scores=np.full((2, 3), 1 / 3), label=np.array([-1, 2]), mask=np.array([1, 1]),
          video_index=np.array([0, 1]))  # Unlabelled (-1) is fine.
