"""The demo end to end, in its quick version (configs/demo.py:quick: the four models on two pairs,
each with its own budget: TSN, CMM and STM 10 epochs, CSTM 30).

It checks what the paper claims, in kind: a frame-order-blind TSN cannot tell a class from its
time reversal (within-pair accuracy near 50%) while every temporal module can. Measured here
(seed 0, deterministic on a given machine) within-pair: TSN 0.508, CSTM 0.984, CMM 0.914, STM
0.945 (top-1 0.375 / 0.984 / 0.883 / 0.898); earlier, over seeds 0-4, TSN 0.500-0.523 and STM
0.938-0.984 at this budget. About 4 minutes on 2 CPU cores.

The demo trains in a subprocess, `launch.py --mode=demo --config=configs/demo.py:quick`, the command a
user runs, at XLA's default optimisation: the rest of the session compiles at the cheapest level
(tests/conftest.py), which would make these many training steps several times slower. It is
started in the background as soon as the session has collected these tests (tests/conftest.py,
`start_quick_demo`), and the tests that need it run last, so that it trains on the core the
compile-bound tests leave idle. The rows the tests read come from a rerun in this process, which
finds every model done and reads its results back.
"""

import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import pytest

from configs import demo as demo_config
from input_pipeline import datasets
from stm_jax.demo import comparison
from tests import jax_subprocess

TSN_MAX_WITHIN_PAIR = 0.65
TEMPORAL_MIN_WITHIN_PAIR = 0.8  # CSTM, CMM and STM.


class QuickDemo:
  """The quick demo's command, running in the background into `workdir`."""

  def __init__(self, workdir: str, cache_dir: str):
    self.workdir = workdir
    env = jax_subprocess.env(cache_dir)
    del env['XLA_FLAGS']  # Default optimisation: this run is its training steps, not compiles.
    self.log = tempfile.TemporaryFile(mode='w+')
    self.process = subprocess.Popen(
        [sys.executable, 'launch.py', '--mode=demo', '--config=configs/demo.py:quick',
         f'--workdir={workdir}'], cwd=jax_subprocess.ROOT, env=env, stdout=self.log,
        stderr=subprocess.STDOUT, text=True)

  def wait(self) -> str:
    """Its output, once it has finished (a test failure if it failed)."""
    returncode = self.process.wait(timeout=1800)
    self.log.seek(0)
    output = self.log.read()
    assert returncode == 0, output[-6000:]
    return output


_STARTED: list[QuickDemo] = []


def start_quick_demo(workdir: str, cache_dir: str) -> None:
  """Starts the quick demo in the background (tests/conftest.py calls it after collection)."""
  if not _STARTED:
    _STARTED.append(QuickDemo(workdir, cache_dir))


@pytest.fixture(scope='module')
def quick_run(tmp_path_factory):
  if not _STARTED:  # Not started by the session (e.g. a run of this test alone).
    start_quick_demo(str(tmp_path_factory.mktemp('demo')),
                     str(tmp_path_factory.getbasetemp() / 'jax_cache'))
  demo = _STARTED[0]
  output = demo.wait()
  assert '| STM |' in output  # The command prints the table.
  rows = comparison.main(demo_config.get_config('quick'), demo.workdir)
  return demo.workdir, rows


def test_tsn_cannot_tell_time_reversed_pairs_apart_and_every_temporal_module_can(quick_run):
  _, rows = quick_run
  by_model = {r['model']: r for r in rows}
  assert list(by_model) == ['TSN', 'CSTM', 'CMM', 'STM']
  assert by_model['TSN']['within_pair'] <= TSN_MAX_WITHIN_PAIR, rows
  for model in ('CSTM', 'CMM', 'STM'):
    assert by_model[model]['within_pair'] >= TEMPORAL_MIN_WITHIN_PAIR, rows
    assert by_model[model]['top1'] > by_model['TSN']['top1'] + 0.2, rows
  assert by_model['CSTM']['epochs'] == 3 * by_model['TSN']['epochs']  # Its own budget.
  for r in rows:
    assert r['params'] > 0 and r['gflops'] > 0 and r['train_seconds'] > 0
    assert r['val_videos'] == 4 * 32


def test_tsn_scores_a_clip_and_its_time_reversal_alike_and_stm_does_not(quick_run):
  """Why TSN sits at chance within pairs: its logits are a mean over frames, so reversing a clip
  (which the demo's symmetric sampling maps to the reversed video's clip) changes nothing."""
  from input_pipeline import pipeline  # pylint: disable=g-import-not-at-top
  from stm_jax.core import weights  # pylint: disable=g-import-not-at-top
  workdir, _ = quick_run
  config = comparison.resolve(demo_config.get_config('quick'), workdir)
  source = datasets.open_source(config, 'validation')
  clips = next(iter(pipeline.create_dataset(source, config, 'val')))['clips'][:8]
  gaps = {}
  for module in ('none', 'stm'):
    loaded = weights.load(os.path.join(workdir, 'runs', module),
                            comparison.model_config(config, module))
    forward = np.asarray(loaded.logits(clips))
    backward = np.asarray(loaded.logits(clips[:, ::-1]))
    gaps[module] = np.abs(forward - backward).max() / np.abs(forward).max()
  assert gaps['none'] < 1e-5 and gaps['stm'] > 0.1, gaps


def test_writes_the_comparison_table_and_chart(quick_run):
  workdir, rows = quick_run
  with open(os.path.join(workdir, 'comparison.md')) as f:
    table = f.read()
  assert '| model | params | GFLOPs/clip | epochs | top-1 | within-pair | train time |' in table
  assert '| TSN |' in table and '| STM |' in table
  with open(os.path.join(workdir, 'comparison.png'), 'rb') as f:
    assert f.read(8) == b'\x89PNG\r\n\x1a\n'
  with open(os.path.join(workdir, 'comparison.json')) as f:
    assert [r['model'] for r in json.load(f)] == [r['model'] for r in rows]


def test_rerun_skips_everything_that_is_done(quick_run, capsys):
  workdir, rows = quick_run
  start = time.time()
  again = comparison.main(demo_config.get_config('quick'), workdir)
  assert time.time() - start < 30
  assert all(r['skipped'] for r in again)
  assert [r['within_pair'] for r in again] == [r['within_pair'] for r in rows]
  out = capsys.readouterr().out
  assert 'already there' in out and 'already prepared' in out


def test_a_run_of_other_settings_is_refused(quick_run):
  workdir, _ = quick_run
  config = comparison.resolve(demo_config.get_config('quick'), workdir)
  config.optim.base_lr = 0.2
  with pytest.raises(FileExistsError, match='other settings'):
    comparison.run_model(comparison.model_config(config, 'stm'), os.path.join(workdir, 'runs', 'stm'))


def test_within_pair_accuracy_compares_each_class_with_its_partner():
  scores = np.array([[0.5, 0.1, 0.4, 0.0],   # label 0 beats 1
                     [0.6, 0.3, 0.1, 0.0],   # label 1 loses to 0 (top-1 wrong too)
                     [0.7, 0.0, 0.1, 0.2],   # label 3 beats 2, though class 0 is top-1
                     [0.1, 0.1, 0.4, 0.4]])  # label 2 ties 3: not above
  assert comparison.within_pair_accuracy(scores, np.array([0, 1, 3, 2])) == 0.5


def test_resolve_points_the_config_into_the_workdir(tmp_path):
  config = comparison.resolve(demo_config.get_config('quick'), str(tmp_path))
  assert config.data.raw_dir == str(tmp_path / 'data' / 'raw')
  assert config.data.data_dir == str(tmp_path / 'data' / 'tfds')
  assert config.data.num_classes == 4
  assert config.data.short_side == config.demo.frame_size
  assert comparison.model_config(config, 'cmm').model.temporal_module == 'cmm'
  assert config.model.temporal_module == 'stm'  # copies, not changed in place
