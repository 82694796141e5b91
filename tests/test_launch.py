"""launch.py as a user runs it: a mistake in any mode is one `error:` line and exit status 2, and
commands on a run take the model from the run's own config.json."""

import concurrent.futures
import os
import subprocess
import sys

import pytest

from stm_jax.train import loop
from tests import jax_subprocess
from tests import video_fixtures


@pytest.fixture(scope='module')
def tsn_run(tmp_path_factory):
  """The prepared sthv1 fixture and a tiny TSN run on it (not the default STM model)."""
  tmp = tmp_path_factory.mktemp('launch')
  data, config = video_fixtures.prepared_sthv1(
      tmp, **{'model.temporal_module': 'none', 'optim.epochs': 1, 'eval_every_epochs': 0.0})
  workdir = str(tmp / 'tsn')
  loop.train_and_evaluate(config, workdir)
  return data, workdir, tmp


def _launch(*args, cache):
  return subprocess.run([sys.executable, 'launch.py', *args], cwd=jax_subprocess.ROOT,
                        env=jax_subprocess.env(cache), capture_output=True, text=True,
                        timeout=300, check=False)


def _run_all(commands, cache):
  with concurrent.futures.ThreadPoolExecutor(4) as pool:
    futures = {name: pool.submit(_launch, *args, cache=cache) for name, args in commands.items()}
    return {name: f.result() for name, f in futures.items()}


def _assert_user_error(result, *words):
  output = result.stdout + result.stderr
  errors = [line for line in output.splitlines() if line.startswith('error: ')]
  assert result.returncode == 2, output[-3000:]
  assert 'Traceback' not in output and len(errors) == 1, output[-3000:]
  for word in words:
    assert word in errors[0], errors[0]


def test_every_kind_of_mistake_is_one_error_line(tsn_run, tmp_path, tmp_path_factory):
  data, workdir, _ = tsn_run
  empty = tmp_path / 'empty'
  empty.mkdir()
  commands = {
      'bad value': ('--mode=summary', '--config.model.temporal_module=bogus'),
      'unknown field': ('--mode=summary', '--config.model.no_such_field=1'),
      'missing recipe': ('--mode=summary', '--config=configs/no_such_recipe.py'),
      'class count': ('--mode=prepare', '--config=configs/sthv1.py',
                      f'--config.data.raw_dir={data.data.raw_dir}',
                      f'--config.data.data_dir={tmp_path / "new_tfds"}',
                      '--config.data.num_classes=5'),
      'no dataset': ('--mode=train', '--config=configs/tiny.py', f'--workdir={tmp_path / "w"}',
                     f'--config.data.data_dir={empty}'),
      'no run': ('--mode=eval', f'--workdir={tmp_path / "no_run"}'),
      'no weights': ('--mode=predict', f'--checkpoint={empty}', f'--input={empty}'),
      'no video': ('--mode=predict', f'--checkpoint={workdir}', f'--input={tmp_path / "x.mp4"}'),
      'missing flag': ('--mode=convert', '--output=/tmp/never'),
  }
  results = _run_all(commands, tmp_path_factory.getbasetemp() / 'jax_cache')
  _assert_user_error(results['bad value'], 'config.model.temporal_module=', "'stm'")
  _assert_user_error(results['unknown field'], '--config.model.no_such_field', 'configs/default.py')
  _assert_user_error(results['missing recipe'], 'configs/no_such_recipe.py', 'no such file')
  _assert_user_error(results['class count'], 'num_classes=5', '--config.data.num_classes=3')
  assert not os.path.exists(tmp_path / 'new_tfds')  # Refused before anything was written.
  _assert_user_error(results['no dataset'], str(empty), '--mode=prepare')
  _assert_user_error(results['no run'], 'no checkpoint', str(tmp_path / 'no_run'))
  assert not os.path.exists(tmp_path / 'no_run')  # Evaluation creates nothing.
  _assert_user_error(results['no weights'], str(empty), '--mode=convert')
  _assert_user_error(results['no video'], 'x.mp4', 'no such file')
  _assert_user_error(results['missing flag'], '--mode=convert needs --input=')


def test_eval_takes_the_model_from_the_run(tsn_run, tmp_path_factory):
  """A TSN run evaluated without naming its model (the default config is STM) and with one
  override: the run's config.json describes the model, the command line only what it names."""
  _, workdir, _ = tsn_run
  result = _launch('--mode=eval', f'--workdir={workdir}', '--eval_protocol=test',
                   '--config.data.num_clips=2', '--config.data.num_crops=1',
                   cache=tmp_path_factory.getbasetemp() / 'jax_cache')
  assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
  assert 'x 2 views' in result.stdout, result.stdout
  assert 'INFO' not in result.stderr  # absl's INFO lines go to <workdir>/eval.log.
  with open(os.path.join(workdir, 'eval.log'), encoding='utf-8') as f:
    assert '--mode=eval' in f.read()
