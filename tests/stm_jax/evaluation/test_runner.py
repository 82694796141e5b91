"""End-to-end `evaluate(...)` of a tiny trained checkpoint with both protocols."""

import json
import os

import numpy as np
import pytest

from configs import tiny
from input_pipeline import datasets
from input_pipeline import pipeline
from stm_jax.core import checkpointing
from stm_jax.core import run_directory
from stm_jax.evaluation import metrics as metrics_lib
from stm_jax.evaluation import reports
from stm_jax.evaluation import runner
from stm_jax.train import loop
from tests import video_fixtures


# --- end to end --------------------------------------------------------------------------------

@pytest.fixture(scope='module')
def trained(tmp_path_factory):
  """A tiny run of 3 steps (checkpoints 1, 2 and 3) on the prepared Something-Something v1
  fixture (3 training and 2 validation videos)."""
  tmp = tmp_path_factory.mktemp('eval')
  _, config = video_fixtures.prepared_sthv1(
      tmp, **{'optim.epochs': 2, 'checkpoint_every_steps': 1, 'data.num_clips': 3,
              'data.num_crops': 3})
  workdir = str(tmp / 'run')
  result = loop.train_and_evaluate(config, workdir)
  assert result.step == 3  # 2 epochs of 3 videos in batches of 2
  return config, workdir


@pytest.mark.parametrize('mode,views', [('val', 1), ('test', 9)])
def test_evaluate_a_checkpoint(trained, mode, views, capsys):
  config, workdir = trained
  config = config.copy_and_resolve_references()
  config.batch_size = 4  # 2 videos: val pads 2 rows, test (18 views) pads 2 in the last batch
  metrics = runner.evaluate(config, workdir, mode)
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
  ids, scores, labels = reports.read_predictions(os.path.join(out_dir, 'predictions.csv'))
  assert ids == ['104', '105'] and labels.tolist() == [1, 0]  # sthv1 fixture's validation split
  assert scores.shape == (2, 3)
  np.testing.assert_allclose(scores.sum(axis=1), 1, rtol=1e-5)
  recomputed = metrics_lib.compute_metrics(scores, labels)
  assert recomputed['top1'] == metrics['top1']
  cost = metrics['cost']
  assert cost['views_per_video'] == views and cost['macs_per_video'] == views * cost['macs_per_clip']
  assert cost['macs_per_clip'] > 0
  printed = capsys.readouterr().out
  assert f'x {views} views' in printed and 'top-1' in printed


def test_evaluate_a_named_checkpoint(trained):
  config, workdir = trained
  metrics = runner.evaluate(config, workdir, 'val', checkpoint_step=1)
  assert metrics['step'] == 1 and os.path.isdir(os.path.join(workdir, 'eval_val_step1'))
  with pytest.raises(ValueError, match='no checkpoint 7'):
    runner.evaluate(config, workdir, 'val', checkpoint_step=7)


def test_training_keeps_the_best_checkpoint(trained):
  config, workdir = trained
  # 3 videos in batches of 2: epoch 1 ends at step 1, epoch 2 (the last) at step 3.
  top1 = {s: runner.evaluate(config, workdir, 'val', checkpoint_step=s)['top1'] for s in (1, 3)}
  expected = 1 if top1[1] >= top1[3] else 3  # A later tie does not replace the kept one.
  best = checkpointing.BestCheckpointer(workdir)
  try:
    assert best.best() == (expected, top1[expected])
    assert best.all_steps() == [expected]
  finally:
    best.close()
  metrics = runner.evaluate(config, workdir, 'val', checkpoint_step='best')
  assert metrics['step'] == expected and metrics['top1'] == top1[expected]


def test_a_run_records_its_config_and_class_names(trained):
  config, workdir = trained
  assert run_directory.read_config(workdir) == config
  # The names in the prepared dataset's info (tests/test_layouts.py checks them there).
  names = run_directory.read_class_names(workdir)
  assert names == datasets.class_names(config) and len(names) == 3 and names[0] != '0'


def test_evaluate_without_checkpoint(tmp_path):
  config = tiny.get_config()
  with pytest.raises(FileNotFoundError, match='no checkpoint'):
    runner.evaluate(config, str(tmp_path), 'val', source=[{'id': 'x'}])
