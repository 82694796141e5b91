"""The training loop's schedule of evaluations, fine-tuning from another run's weights, and what
it refuses before any compute: a second trainer of a workdir (a real second process), a workdir
of another model, a class count other than the dataset's, labels outside the classes, a
non-finite update; SIGTERM before the first step and during the final save (resume, preemption
and divergence: tests/stm_jax/core/test_checkpointing.py)."""

import os
import signal
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import tiny
from input_pipeline import errors
from stm_jax import models
from stm_jax.core import checkpointing
from stm_jax.core import run_directory
from stm_jax.core import sharding
from stm_jax.core import weights
from stm_jax.train import loop
from stm_jax.train import optim
from stm_jax.train import train_state
from tests import clip_fixtures
from tests import disk
from tests import jax_subprocess
from tests import video_fixtures


def test_evaluations_fall_on_epoch_ends_and_the_last_step():
  config = tiny.get_config()
  config.batch_size = 4
  config.eval_every_epochs = 1
  # 10 videos in batches of 4: epochs end after 2.5, 5, 7.5 ... batches.
  assert loop.eval_steps(config, 10, total=10) == {2, 5, 7, 10}
  config.eval_every_epochs = 2
  assert loop.eval_steps(config, 10, total=10) == {5, 10}
  config.eval_every_epochs = 0.5
  assert loop.eval_steps(config, 8, total=4) == {1, 2, 3, 4}
  config.eval_every_epochs = 0
  assert loop.eval_steps(config, 10, total=10) == set()


def _flat(tree):
  return {jax.tree_util.keystr(p): np.asarray(x) for p, x in
          jax.tree_util.tree_leaves_with_path(jax.device_get(tree))}


def test_fine_tuning_from_a_run_with_other_classes_reinitialises_only_fc(tmp_path):
  source = tiny.get_config()
  source.data.num_classes = 5
  source.batch_size = 2
  source.optim.epochs = 1
  source.optim.decay_epochs = ()
  source.checkpoint_every_steps = 1
  records = clip_fixtures.source([6, 7, 8, 9])
  loop.train_and_evaluate(source, str(tmp_path / 'kinetics'), train_source=records)
  pretrained = _flat(weights.load(str(tmp_path / 'kinetics'), source).variables)

  config = tiny.get_config()
  config.data.num_classes = 3
  config.init_checkpoint = str(tmp_path / 'kinetics')
  mesh = sharding.make_mesh()
  model = models.create(config)
  tx = optim.create_optimizer(config, num_examples=8)
  state = train_state.init_train_state(model, tx, config, mesh, loop._initial_variables(config))
  got = _flat({'params': state.params, 'batch_stats': state.batch_stats})
  fresh = train_state.init_train_state(model, tx, config, mesh)
  fresh = _flat({'params': fresh.params, 'batch_stats': fresh.batch_stats})
  assert got.keys() == pretrained.keys()
  for key, value in got.items():
    if "['fc']" in key:
      assert value.shape[-1] == 3 and pretrained[key].shape[-1] == 5
      np.testing.assert_array_equal(value, fresh[key])  # The seed's init, not the source's.
    else:
      np.testing.assert_array_equal(value, pretrained[key], err_msg=key)
  # Anything else that does not fit stays an error naming the variable.
  config.model.width = 32
  model = models.create(config)
  with pytest.raises(ValueError,
                     match=r'initial variables do not fit the model: .*bn1.*has shape \(16,\)'):
    train_state.init_train_state(model, tx, config, mesh, loop._initial_variables(config))


# --- refusals before any compute ---------------------------------------------------------------

@pytest.fixture(scope='module')
def prepared(tmp_path_factory):
  """The prepared sthv1 fixture (3 classes) and the tiny recipe pointed at it."""
  _, config = video_fixtures.prepared_sthv1(tmp_path_factory.mktemp('loop_data'))
  return config


_HOLDER = """
import sys, time
from stm_jax.core import run_directory
run_directory.WorkdirLock(sys.argv[1]).acquire()
print('locked', flush=True)
time.sleep(600)
"""


def test_a_second_trainer_is_refused_and_a_killed_ones_lock_is_not(prepared, tmp_path,
                                                                   tmp_path_factory, caplog):
  workdir = tmp_path / 'run'
  holder = subprocess.Popen([sys.executable, '-c', _HOLDER, str(workdir)], cwd=jax_subprocess.ROOT,
                            env=jax_subprocess.env(tmp_path_factory.getbasetemp() / 'jax_cache'),
                            stdout=subprocess.PIPE, text=True)
  try:
    assert holder.stdout.readline().strip() == 'locked'
    before = disk.digest(workdir)
    second = subprocess.run(
        [sys.executable, 'launch.py', '--mode=train', '--config=configs/tiny.py',
         f'--workdir={workdir}', f'--config.data.data_dir={prepared.data.data_dir}',
         '--config.data.dataset=sthv1', '--config.data.num_classes=3'],
        cwd=jax_subprocess.ROOT, env=jax_subprocess.env(tmp_path_factory.getbasetemp() /
                                                        'jax_cache'),
        capture_output=True, text=True, timeout=300, check=False)
    output = second.stdout + second.stderr
    lines = [line for line in output.splitlines() if line.startswith('error: ')]
    assert second.returncode == 2 and len(lines) == 1 and 'Traceback' not in output, output
    assert f'{workdir}: another training run is writing it: pid {holder.pid} on host' in lines[0]
    assert disk.digest(workdir) == before  # Not even a log line.
    with pytest.raises(errors.InUseError, match=f'pid {holder.pid}'):
      loop.train_and_evaluate(prepared, str(workdir))  # In-process: the same refusal.
    assert disk.digest(workdir) == before
  finally:
    holder.kill()
    holder.wait()
  # A lock whose process was killed does not block a rerun; it is replaced with one warning.
  loop.check_workdir(prepared, str(workdir))
  lock = run_directory.WorkdirLock(str(workdir))
  with caplog.at_level('WARNING'):
    lock.acquire()
  assert lock.holder().pid == os.getpid()
  assert any(f'replacing the lock of pid {holder.pid}' in r.getMessage() for r in caplog.records)
  lock.release()
  assert os.listdir(workdir) == []


def test_a_workdir_of_another_model_refuses_to_train(prepared, tmp_path):
  tsn = prepared.copy_and_resolve_references()
  tsn.model.temporal_module = 'none'
  workdir = str(tmp_path / 'tsn')
  run_directory.write(workdir, tsn, None)
  before = disk.digest(workdir)
  pattern = (r"config.json: this run is another model or dataset than the config: "
             r"config.data.num_classes=4 \(the run's config.json: 3\), "
             r"config.model.temporal_module='stm' \(the run's config.json: 'none'\)\. .*"
             r"--config.allow_config_change=True")
  stm = prepared.copy_and_resolve_references()
  stm.data.num_classes = 4
  with pytest.raises(errors.ConfigError, match=pattern):
    loop.check_workdir(stm, workdir, train_source=[])
  stm.data.num_classes = 3
  with pytest.raises(errors.ConfigError, match='temporal_module'):
    loop.train_and_evaluate(stm, workdir)
  assert disk.digest(workdir) == before
  stm.allow_config_change = True  # Then the checkpoints decide (core/test_checkpointing.py).
  loop.check_workdir(stm, workdir)
  stm.allow_config_change = False
  stm.optim.epochs = 9  # Not another model: a resumed run may train longer.
  loop.check_workdir(tsn.copy_and_resolve_references(), workdir)


def test_the_class_count_is_the_prepared_datasets(prepared, tmp_path):
  config = prepared.copy_and_resolve_references()
  config.data.num_classes = 5
  with pytest.raises(errors.ConfigError,
                     match=r'config.data.num_classes=5: the prepared dataset in .* has 3 classes; '
                           r'pass --config.data.num_classes=3'):
    loop.train_and_evaluate(config, str(tmp_path / 'run'))
  assert not os.path.exists(tmp_path / 'run')


def _pending(step, **values):
  metrics = {'loss': 1.0, 'top1': 0.5, 'grad_norm': 2.0, 'finite': True, 'label_min': 0,
             'label_max': 2}
  metrics.update(values)
  return [(step, {k: jnp.asarray(v) for k, v in metrics.items()})]


def test_the_steps_checks_stop_before_a_save():
  assert loop._check_finite(_pending(1), 'ckpts', None, 3) == {'loss': 1.0, 'top1': 0.5,
                                                                'grad_norm': 2.0}
  with pytest.raises(errors.ConfigError,
                     match=r'config.data.num_classes=3: the batch of step 4 holds label 5, '
                           r'outside \[0, 3\)'):
    loop._check_finite(_pending(4, label_max=5, loss=float('nan')), 'ckpts', 2, 3)
  with pytest.raises(errors.ConfigError, match='holds label -1'):
    loop._check_finite(_pending(4, label_min=-1), 'ckpts', 2, 3)
  with pytest.raises(loop.NonFiniteLossError,
                     match=r'\(the loss, 1, was finite\) after the update at step 4: stopping '
                           r'without saving \(the last checkpoint is step 2 in ckpts\)'):
    loop._check_finite(_pending(4, finite=False), 'ckpts', 2, 3)


def _tiny_tsn(**fields):
  config = tiny.get_config()
  config.model.temporal_module = 'none'
  config.batch_size = 2
  config.optim.epochs = 1
  config.optim.decay_epochs = ()
  config.update_from_flattened_dict(fields)
  return config


@pytest.fixture(scope='module')
def tsn_weights(tmp_path_factory):
  """Random weights of the tiny TSN as --mode=convert writes them: a run initialised from them
  compiles no model initialisation (the train step is the only compile)."""
  shapes = models.abstract_variables(_tiny_tsn())
  rng = np.random.RandomState(0)

  def value(path, x):
    if path[-1].key in ('scale', 'var'):
      return np.ones(x.shape, np.float32)
    if path[-1].key in ('bias', 'mean'):
      return np.zeros(x.shape, np.float32)
    return (0.1 * rng.randn(*x.shape)).astype(np.float32)
  path = str(tmp_path_factory.mktemp('tsn_weights') / 'weights')
  weights.save_converted(jax.tree_util.tree_map_with_path(value, shapes), path)
  return path


@pytest.mark.filterwarnings('ignore:overflow encountered in cast')
def test_a_non_finite_update_at_a_finite_loss_is_never_saved(tmp_path, tsn_weights):
  # Decay 1e39 is infinite in float32: step 1's loss and gradient (before decay) are finite, the
  # updated kernels and momentum are not.
  config = _tiny_tsn(**{'optim.weight_decay': 1e39, 'checkpoint_every_steps': 1,
                        'init_checkpoint': tsn_weights})
  workdir = tmp_path / 'run'
  with pytest.raises(loop.NonFiniteLossError,
                     match=r'non-finite parameters, BatchNorm statistics or optimizer state \(the '
                           r'loss, [0-9.]+, was finite\) after the update at step 1: stopping '
                           r'without saving \(no checkpoint was saved\)'):
    loop.train_and_evaluate(config, str(workdir), train_source=clip_fixtures.source([5, 6, 7, 8]))
  assert os.listdir(workdir / checkpointing.CHECKPOINT_DIR) == []
  assert not os.path.exists(workdir / run_directory.LOCK_FILE)


def test_sigterm_before_the_first_step_and_during_the_final_save(tmp_path, monkeypatch,
                                                                tsn_weights):
  config = _tiny_tsn(checkpoint_every_steps=100, init_checkpoint=tsn_weights)
  workdir = str(tmp_path / 'run')
  records = clip_fixtures.source([5, 6, 7, 8])
  unhandled = []
  previous = signal.signal(signal.SIGTERM, lambda *_: unhandled.append(1))
  init = train_state.init_train_state
  close = checkpointing.Checkpointer.close

  def init_then_sigterm(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGTERM)
    return init(*args, **kwargs)

  def sigterm_then_close(self):
    if self.directory.name == checkpointing.CHECKPOINT_DIR:
      os.kill(os.getpid(), signal.SIGTERM)  # While the final save may still be writing.
    close(self)

  try:
    monkeypatch.setattr(train_state, 'init_train_state', init_then_sigterm)
    result = loop.train_and_evaluate(config, workdir, train_source=records)
    assert result.preempted and result.step == 0 and result.saved_step is None
    assert checkpointing.Checkpointer(workdir).all_steps() == []  # Nothing new.
    monkeypatch.setattr(train_state, 'init_train_state', init)
    monkeypatch.setattr(checkpointing.Checkpointer, 'close', sigterm_then_close)
    result = loop.train_and_evaluate(config, workdir, train_source=records)
  finally:
    signal.signal(signal.SIGTERM, previous)
  assert unhandled == []  # The trainer's own handler got both.
  assert not result.preempted and result.step == result.total_steps == 2
  assert result.saved_step == 2
  monkeypatch.setattr(checkpointing.Checkpointer, 'close', close)
  assert weights.load(workdir, config).step == 2  # The final checkpoint is whole.


def test_a_starving_loader_is_named_with_the_settings_to_change(monkeypatch):
  config = tiny.get_config()
  # A CPU-only host: the step and the loader share the cores, so nothing is said.
  assert loop.data_wait_warning(0.42, config) is None
  monkeypatch.setattr(os, 'cpu_count', lambda: 16)
  monkeypatch.setattr(jax, 'default_backend', lambda: 'gpu')
  assert loop.data_wait_warning(0.10, config) is None  # Keeping up: nothing said.
  text = loop.data_wait_warning(0.42, config)
  assert text.startswith('the input pipeline is the bottleneck: 42% of the time is spent waiting')
  assert '(14 loader processes x 2 threads on a 16-core host)' in text
  assert '--config.data.num_workers' in text
