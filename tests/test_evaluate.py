"""Evaluation: metrics of hand-made scores, per-video averaging of views with padding, and an
end-to-end `evaluate(...)` of a tiny trained checkpoint with both protocols."""

import json
import os

import numpy as np
import pytest

from configs import tiny
from input_pipeline import pipeline
from input_pipeline import prepare
from stm_jax import checkpointing
from stm_jax import evaluate
from stm_jax import run_info
from stm_jax import trainer
from tests import video_fixtures


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
  m = evaluate.compute_metrics(scores, labels)
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
  m = evaluate.compute_metrics(scores, labels)
  top1, top5, mean_class, _ = _reference(scores, labels, 5)
  assert (m['top1'], m['top5'], m['mean_class_accuracy']) == pytest.approx(
      (top1, top5, mean_class))


def test_metrics_without_labels_and_with_few_classes():
  m = evaluate.compute_metrics(np.eye(3), np.full(3, -1))
  assert m['top1'] is None and m['num_labelled'] == 0
  m = evaluate.compute_metrics(np.array([[0.2, 0.8], [0.6, 0.4]]), np.array([0, 0]))
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
  acc = evaluate.VideoScores(7, 4, 6)
  for b in reversed(batches):  # order does not matter
    acc.add(**b)
  scores, got_labels = acc.averaged()
  np.testing.assert_allclose(scores, expected, rtol=1e-12)
  np.testing.assert_array_equal(got_labels, labels)


def test_every_video_must_be_counted_exactly_once():
  rng = np.random.RandomState(1)
  batches, _, _ = _global_batches(num_videos=5, views=3, batch=4, num_classes=3, rng=rng)
  acc = evaluate.VideoScores(5, 3, 3)
  for b in batches + batches[:1]:  # a batch seen twice (e.g. by two hosts)
    acc.add(**b)
  with pytest.raises(ValueError, match='view count other than 3'):
    acc.averaged()
  acc = evaluate.VideoScores(5, 3, 3)
  for b in batches[1:]:  # a batch missing
    acc.add(**b)
  with pytest.raises(ValueError, match='view count other than 3'):
    acc.averaged()


def test_predictions_round_trip(tmp_path):
  scores = np.array([[0.25, 0.75], [0.5, 0.5]])
  path = str(tmp_path / 'p.csv')
  evaluate.write_predictions(path, ['a', 'b'], scores, np.array([1, -1]))
  ids, got, labels = evaluate.read_predictions(path)
  assert ids == ['a', 'b'] and labels.tolist() == [1, -1]
  np.testing.assert_allclose(got, scores)


# --- end to end --------------------------------------------------------------------------------

@pytest.fixture(scope='module')
def trained(tmp_path_factory):
  """A tiny run of 3 steps (checkpoints 1, 2 and 3) on the prepared Something-Something v1
  fixture (3 training and 2 validation videos)."""
  tmp = tmp_path_factory.mktemp('eval')
  _, data_config = video_fixtures.setup(tmp, 'sthv1')
  prepare.prepare(data_config)
  config = tiny.get_config()
  config.data.dataset = 'sthv1'
  config.data.data_dir = data_config.data.data_dir
  config.data.num_classes = 3
  config.batch_size = 2
  config.optim.epochs = 2
  config.optim.decay_epochs = ()
  config.checkpoint_every_steps = 1
  config.data.num_clips = 3
  config.data.num_crops = 3
  workdir = str(tmp / 'run')
  result = trainer.train_and_evaluate(config, workdir)
  assert result.step == 3  # 2 epochs of 3 videos in batches of 2
  return config, workdir


@pytest.mark.parametrize('mode,views', [('val', 1), ('test', 9)])
def test_evaluate_a_checkpoint(trained, mode, views, capsys):
  config, workdir = trained
  config = config.copy_and_resolve_references()
  config.batch_size = 4  # 2 videos: val pads 2 rows, test (18 views) pads 2 in the last batch
  metrics = evaluate.evaluate(config, workdir, mode)
  out_dir = os.path.join(workdir, f'eval_{mode}_step3')
  assert metrics['output_dir'] == out_dir and metrics['step'] == 3
  assert sorted(os.listdir(out_dir)) == ['confusion.png', 'metrics.json', 'predictions.csv']
  with open(os.path.join(out_dir, 'confusion.png'), 'rb') as f:
    assert f.read(8) == b'\x89PNG\r\n\x1a\n'
  with open(os.path.join(out_dir, 'metrics.json')) as f:
    saved = json.load(f)
  assert saved['top1'] == metrics['top1'] and saved['protocol'] == mode
  assert metrics['num_videos'] == metrics['num_labelled'] == 2
  assert 0 <= metrics['top1'] <= metrics['top5'] == 1.0  # 3 classes: top-5 always hits
  ids, scores, labels = evaluate.read_predictions(os.path.join(out_dir, 'predictions.csv'))
  assert ids == ['104', '105'] and labels.tolist() == [1, 0]  # sthv1 fixture's validation split
  assert scores.shape == (2, 3)
  np.testing.assert_allclose(scores.sum(axis=1), 1, rtol=1e-5)
  recomputed = evaluate.compute_metrics(scores, labels)
  assert recomputed['top1'] == metrics['top1']
  cost = metrics['cost']
  assert cost['views_per_video'] == views and cost['macs_per_video'] == views * cost['macs_per_clip']
  assert cost['macs_per_clip'] > 0
  printed = capsys.readouterr().out
  assert f'x {views} views' in printed and 'top-1' in printed


def test_evaluate_a_named_checkpoint(trained):
  config, workdir = trained
  metrics = evaluate.evaluate(config, workdir, 'val', checkpoint_step=1)
  assert metrics['step'] == 1 and os.path.isdir(os.path.join(workdir, 'eval_val_step1'))
  with pytest.raises(ValueError, match='no checkpoint 7'):
    evaluate.evaluate(config, workdir, 'val', checkpoint_step=7)


def test_training_keeps_the_best_checkpoint(trained):
  config, workdir = trained
  # 3 videos in batches of 2: epoch 1 ends at step 1, epoch 2 (the last) at step 3.
  top1 = {s: evaluate.evaluate(config, workdir, 'val', checkpoint_step=s)['top1'] for s in (1, 3)}
  expected = 1 if top1[1] >= top1[3] else 3  # A later tie does not replace the kept one.
  best = checkpointing.BestCheckpointer(workdir)
  try:
    assert best.best() == (expected, top1[expected])
    assert best.all_steps() == [expected]
  finally:
    best.close()
  metrics = evaluate.evaluate(config, workdir, 'val', checkpoint_step='best')
  assert metrics['step'] == expected and metrics['top1'] == top1[expected]


def test_a_run_records_its_config_and_class_names(trained):
  config, workdir = trained
  assert run_info.read_config(workdir) == config
  # The names in the prepared dataset's info (tests/test_layouts.py checks them there).
  names = run_info.read_class_names(workdir)
  assert names == pipeline.class_names(config) and len(names) == 3 and names[0] != '0'


def test_evaluate_without_checkpoint(tmp_path):
  config = tiny.get_config()
  with pytest.raises(FileNotFoundError, match='no checkpoint'):
    evaluate.evaluate(config, str(tmp_path), 'val', source=[{'id': 'x'}])
