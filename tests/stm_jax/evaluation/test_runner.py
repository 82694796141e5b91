"""End-to-end `evaluate(...)` of a tiny trained checkpoint with both protocols; what it refuses
(another model, flipped bytes, another class count) leaving the run byte-identical; a corrupt best
checkpoint; results of other settings never overwriting each other."""

import json
import logging
import os
import shutil

import numpy as np
import pytest

from configs import tiny
from input_pipeline import datasets
from input_pipeline import errors
from input_pipeline import pipeline
from stm_jax.core import checkpointing
from stm_jax.core import run_directory
from stm_jax.core import weights
from stm_jax.evaluation import metrics as metrics_lib
from stm_jax.evaluation import reports
from stm_jax.evaluation import runner
from stm_jax.train import loop
from tests import disk
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
  stored = run_directory.read_config(workdir)
  assert config.model.dtype == 'auto' and stored.model.dtype == 'float32'  # What it computed in.
  stored.model.dtype = 'auto'
  assert stored == config
  # The names in the prepared dataset's info (tests/test_layouts.py checks them there).
  names = run_directory.read_class_names(workdir)
  assert names == datasets.class_names(config) and len(names) == 3 and names[0] != '0'


def test_evaluate_without_checkpoint(tmp_path):
  config = tiny.get_config()
  with pytest.raises(FileNotFoundError, match='no checkpoint'):
    runner.evaluate(config, str(tmp_path), 'val', source=[{'id': 'x'}])


# --- refusals, integrity, records ---------------------------------------------------------------

def _copy(workdir, tmp_path):
  """A copy of the run, for the tests that damage it."""
  return shutil.copytree(workdir, str(tmp_path / 'run'))


def test_another_model_is_refused_and_every_checkpoint_stays_byte_identical(trained):
  config, workdir = trained
  before = disk.digest(workdir)
  # launch.py takes a run's config.json (resolve_config): an override of its model is an error.
  with pytest.raises(errors.ConfigError,
                     match=r"--config.model.temporal_module='none': the run .* was trained with "
                           r"config.model.temporal_module='stm' \(.*config.json\)"):
    run_directory.resolve_config(workdir, tiny.get_config(), {'model.temporal_module': 'none'})
  # Past it (a config.json that does not describe its checkpoints), the checkpoints refuse.
  tsn = config.copy_and_resolve_references()
  tsn.model.temporal_module = 'none'
  for step in (weights.LATEST, weights.BEST, 1):
    with pytest.raises(checkpointing.CheckpointMismatchError,
                       match=r'is not of the model the config describes \(32 arrays differ: '
                             r'batch_stats/layer1_0/mb/.* is in the checkpoint, not in the model'):
      runner.evaluate(tsn, workdir, 'val', checkpoint_step=step)
  assert disk.digest(workdir) == before


def test_eval_on_a_dataset_of_another_class_count_is_refused(trained):
  config, workdir = trained
  config = config.copy_and_resolve_references()
  config.data.num_classes = 4
  before = disk.digest(workdir)
  with pytest.raises(errors.ConfigError,
                     match=r'config.data.num_classes=4: the prepared dataset in .* has 3 classes'):
    runner.evaluate(config, workdir, 'val')
  assert disk.digest(workdir) == before


def test_flipped_bytes_in_a_checkpoint_are_detected(trained, tmp_path):
  config, workdir = trained
  workdir = _copy(workdir, tmp_path)
  # In every array data file: evaluation reads the parameters only, not the optimizer state.
  data = os.path.join(workdir, 'checkpoints', '3', 'state', 'ocdbt.process_0', 'd')
  for name in os.listdir(data):
    disk.flip_bytes(os.path.join(data, name))
  before = disk.digest(workdir)
  with pytest.raises(checkpointing.UnreadableCheckpointError,
                     match=r'checkpoint 3 in .*checkpoints cannot be read: '):
    runner.evaluate(config, workdir, 'val')
  assert disk.digest(workdir) == before


def test_a_corrupt_best_checkpoint_falls_back_to_the_latest(trained, tmp_path, caplog):
  config, workdir = trained
  workdir = _copy(workdir, tmp_path)
  best_step = checkpointing.BestCheckpointer(workdir, read_only=True).all_steps()[0]
  data = os.path.join(workdir, 'best', str(best_step), 'state', 'ocdbt.process_0', 'd')
  for name in os.listdir(data):
    disk.flip_bytes(os.path.join(data, name))
  before = disk.digest(workdir)
  caplog.clear()
  with caplog.at_level(logging.WARNING):
    loaded = weights.load(workdir, config)  # What predict, visualize and export load.
  assert loaded.step == 3 and loaded.description.startswith('latest checkpoint')
  warned = [r.getMessage() for r in caplog.records if 'latest checkpoint instead' in r.getMessage()]
  assert len(warned) == 1 and '\n' not in warned[0] and 'best' in warned[0], warned
  with pytest.raises(checkpointing.UnreadableCheckpointError, match='best cannot be read'):
    weights.load(workdir, config, weights.BEST)  # Asked for by name: no substitute.
  assert disk.digest(workdir) == before


def test_evaluations_with_other_settings_never_overwrite_each_other(trained):
  config, workdir = trained
  own = runner.evaluate(config, workdir, 'val', checkpoint_step=2)
  other = config.copy_and_resolve_references()
  other.data.short_side = 2 * config.data.short_side
  changed = runner.evaluate(other, workdir, 'val', checkpoint_step=2)
  assert own['output_dir'] == os.path.join(workdir, 'eval_val_step2')
  assert changed['output_dir'] == f'{own["output_dir"]}_{runner.config_hash(other)[:8]}'
  saved = {}
  for name, result in (('own', own), ('changed', changed)):
    with open(os.path.join(result['output_dir'], 'metrics.json')) as f:
      saved[name] = json.load(f)
    assert {k: saved[name][k] for k in ('protocol', 'views_per_video', 'num_clips', 'num_crops',
                                        'crop', 'crop_size', 'checkpoint_step', 'split')} == {
        'protocol': 'val', 'views_per_video': 1, 'num_clips': 1, 'num_crops': 1,
        'crop': 'centre', 'crop_size': 32, 'checkpoint_step': 2, 'split': 'validation'}
    assert saved[name]['checkpoint'].startswith('step checkpoint (step 2)')
  assert saved['own']['short_side'] == config.data.short_side
  assert saved['changed']['short_side'] == 2 * config.data.short_side
  assert saved['own']['config_hash'] != saved['changed']['config_hash']
  assert saved['own']['config_changes'] == []
  assert saved['changed']['config_changes'] == [
      {'field': 'data.short_side', 'run': config.data.short_side,
       'eval': 2 * config.data.short_side}]
