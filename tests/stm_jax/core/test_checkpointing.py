"""Checkpoints: exact resume after SIGKILL and after SIGTERM, a corrupt latest checkpoint, a
diverging run that is never saved, and the config checks of a training run; what a restore does
with flipped bytes (checksum), two unreadable checkpoints, another model's checkpoint, non-finite
values, and the noise of a failed Orbax read.

The runs are `launch.py --mode=train` subprocesses of the tiny recipe on a prepared fixture
dataset (tests/video_fixtures.py through input_pipeline/prepare/converter.py), started together.
"""

import concurrent.futures
import logging
import os
import re
import signal
import subprocess
import sys
import types

import grain
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from configs import tiny
from input_pipeline.prepare import converter
from stm_jax import models
from stm_jax.core import checkpointing
from stm_jax.core import weights
from stm_jax.tools import convert
from stm_jax.train import loop
from stm_jax.train import run_log
from tests import disk
from tests import jax_subprocess
from tests import video_fixtures

TOTAL = 12  # 3 videos, batch 2, 8 epochs


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  """A prepared 3-video Something-Something v1 fixture."""
  tmp = tmp_path_factory.mktemp('data')
  _, config = video_fixtures.setup(tmp, 'sthv1')
  converter.prepare(config)
  return config.data.data_dir


@pytest.fixture(scope='module')
def tfrecord_data_dir(tmp_path_factory):
  """The same fixture videos prepared as DMVR TFRecord shards (data.output_format='tfrecord')."""
  tmp = tmp_path_factory.mktemp('tfrecord_data')
  _, config = video_fixtures.setup(tmp, 'sthv1')
  config.data.output_format = 'tfrecord'
  converter.prepare(config)
  return config.data.data_dir


@pytest.fixture(scope='module')
def init_checkpoint(tmp_path_factory):
  """Initial weights as `launch.py --mode=convert` writes them (random, shapes from the model)."""
  config = tiny.get_config()
  config.data.num_classes = 3
  shapes = jax.eval_shape(models.create(config).init, jax.random.key(0),
                          jnp.zeros((1, 4, 32, 32, 3), jnp.uint8))
  rng = np.random.RandomState(7)

  def value(path, x):
    name = path[-1].key
    if name in ('scale', 'var'):
      return np.ones(x.shape, np.float32)
    if name in ('bias', 'mean'):
      return np.zeros(x.shape, np.float32)
    return (0.1 * rng.randn(*x.shape)).astype(np.float32)
  variables = jax.tree_util.tree_map_with_path(
      value, {c: shapes[c] for c in ('params', 'batch_stats')})
  path = str(tmp_path_factory.mktemp('init') / 'imagenet')
  weights.save_converted(variables, path)
  return path


def command(data_dir, workdir, *overrides, init=''):
  # Dropout and two micro-batches: resuming must also restore the dropout keys.
  return [sys.executable, 'launch.py', '--mode=train', '--config=configs/tiny.py',
          f'--workdir={workdir}', f'--config.init_checkpoint={init}',
          '--config.data.dataset=sthv1', f'--config.data.data_dir={data_dir}',
          '--config.data.num_classes=3', '--config.batch_size=2', '--config.optim.epochs=8',
          '--config.optim.decay_epochs=(6,)', '--config.checkpoint_every_steps=4',
          '--config.log_every_steps=1', '--config.optim.grad_accum_steps=2',
          '--config.model.dropout_rate=0.5', *overrides]


def run(cmd, env, trigger=None, sig=None):
  """Runs `cmd`; sends `sig` when a line of its log matches `trigger`. Returns (rc, log)."""
  proc = subprocess.Popen(cmd, cwd=jax_subprocess.ROOT, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
  lines = []
  for line in proc.stdout:
    lines.append(line)
    if trigger and sig and re.search(trigger, line):
      proc.send_signal(sig)
      trigger = None
  proc.wait(timeout=300)
  return proc.returncode, ''.join(lines)


def final_variables(workdir, step=TOTAL):
  """The params and BN statistics of checkpoint `step` as numpy, by path."""
  path = os.path.join(workdir, checkpointing.CHECKPOINT_DIR, str(step), 'state')
  with ocp.StandardCheckpointer() as ckpt:
    tree = ckpt.restore(path)
  tree = {k: tree[k] for k in ('params', 'batch_stats', 'opt_state')}
  return {jax.tree_util.keystr(p): np.asarray(x)
          for p, x in jax.tree_util.tree_leaves_with_path(tree)}


def steps_on_disk(workdir):
  return sorted(int(d) for d in os.listdir(os.path.join(workdir, checkpointing.CHECKPOINT_DIR))
                if d.isdigit())


def test_interrupted_runs_resume_exactly(data_dir, tfrecord_data_dir, init_checkpoint, tmp_path,
                                         tmp_path_factory):
  env = jax_subprocess.env(tmp_path_factory.getbasetemp() / 'jax_cache')
  dirs = {name: str(tmp_path / name)
          for name in ('whole', 'killed', 'terminated', 'diverged', 'tfrecord')}
  # The same videos read from TFRecord shards, killed mid-run too: once resumed it must end
  # where the uninterrupted ArrayRecord run ends, bit for bit, with the same evaluations.
  from_tfrecord = ('--config.data.format=tfrecord',)
  data = {name: tfrecord_data_dir if name == 'tfrecord' else data_dir for name in dirs}
  first = {
      'whole': (None, None, ()),
      'tfrecord': (r'step 7/12', signal.SIGKILL, from_tfrecord),
      'killed': (r'step 6/12', signal.SIGKILL, ()),
      'terminated': (r'step 5/12', signal.SIGTERM, ()),
      'diverged': (None, None, ('--config.optim.base_lr=1e30',
                                '--config.checkpoint_every_steps=1')),
  }
  with concurrent.futures.ThreadPoolExecutor(len(first)) as pool:
    futures = {name: pool.submit(run, command(data[name], dirs[name], *extra,
                                              init=init_checkpoint), env, trigger, sig)
               for name, (trigger, sig, extra) in first.items()}
    results = {name: f.result() for name, f in futures.items()}

  rc, log = results['whole']
  assert rc == 0, log[-3000:]
  assert steps_on_disk(dirs['whole']) == [4, 8, 12]
  assert f'initial weights from {init_checkpoint}' in log

  rc, log = results['killed']
  assert rc == -signal.SIGKILL, log[-3000:]
  killed_at = steps_on_disk(dirs['killed'])
  assert killed_at and killed_at[-1] < TOTAL, killed_at

  rc, log = results['tfrecord']
  assert rc == -signal.SIGKILL, log[-3000:]
  tfrecord_at = steps_on_disk(dirs['tfrecord'])
  assert tfrecord_at and tfrecord_at[-1] < TOTAL, tfrecord_at

  rc, log = results['terminated']
  assert rc == 143, log[-3000:]
  preempted = int(re.search(r'preempted at step (\d+) of 12', log).group(1))
  assert 5 <= preempted < TOTAL and steps_on_disk(dirs['terminated'])[-1] == preempted

  rc, log = results['diverged']
  assert rc == 1 and 'at step 2: stopping without saving' in log, log[-3000:]
  assert 'non-finite' in log and 'Traceback' not in log
  assert steps_on_disk(dirs['diverged']) == [1]

  again = {'killed': (), 'terminated': (), 'tfrecord': from_tfrecord}
  with concurrent.futures.ThreadPoolExecutor(len(again)) as pool:
    futures = {name: pool.submit(run, command(data[name], dirs[name], *extra,
                                              init=init_checkpoint), env)
               for name, extra in again.items()}
    resumed = {name: f.result() for name, f in futures.items()}
  whole = final_variables(dirs['whole'])
  for name, start in (('killed', killed_at[-1]), ('terminated', preempted),
                      ('tfrecord', tfrecord_at[-1])):
    rc, log = resumed[name]
    assert rc == 0, log[-3000:]
    assert f'resuming at step {start} of 12' in log and 'initial weights' not in log
    other = final_variables(dirs[name])
    assert other.keys() == whole.keys()
    for key in whole:
      np.testing.assert_array_equal(other[key], whole[key], err_msg=f'{name}: {key}')
    # Evaluations during training (every epoch) keep the same best checkpoint either way.
    assert best_of(dirs[name]) == best_of(dirs['whole'])
    # The logs hold each step once, with the uninterrupted run's values.
    assert logged(dirs[name]) == logged(dirs['whole'])
  whole_log = logged(dirs['whole'])
  assert [s for s, split, *_ in whole_log if split == 'train'] == list(range(1, TOTAL + 1))
  assert [s for s, split, *_ in whole_log if split == 'val'] == [1, 3, 4, 6, 7, 9, 10, 12]
  assert os.path.getsize(os.path.join(dirs['whole'], 'curves.png')) > 10_000
  assert os.listdir(os.path.join(dirs['whole'], 'tensorboard'))
  assert 'eval at step 12: val top-1' in results['whole'][1]


def logged(workdir):
  """(step, split, loss, top1, lr) of every metrics.jsonl line (not the timings, which vary)."""
  return [(r['step'], r['split'], r.get('loss'), r.get('top1'), r.get('lr'))
          for r in run_log.read_metrics(workdir)]


def best_of(workdir):
  best = checkpointing.BestCheckpointer(workdir)
  try:
    return best.best()
  finally:
    best.close()


def small_state(value):
  return {'w': jnp.full((3,), value, jnp.float32), 'step': jnp.asarray(value, jnp.int32)}


def test_corrupt_latest_checkpoint_falls_back_with_a_warning(tmp_path, caplog):
  dataset = grain.MapDataset.range(100).to_iter_dataset()
  it = iter(dataset)
  ckpt = checkpointing.Checkpointer(str(tmp_path), keep=3)
  for step in (1, 2, 3):
    next(it)
    ckpt.save(step, small_state(step), it)
    ckpt.wait()
  ckpt.close()
  # A complete checkpoint 3 whose array data is gone, and a leftover of a killed save of 4.
  state_dir = tmp_path / 'checkpoints' / '3' / 'state'
  for root, _, files in os.walk(state_dir):
    for f in files:
      if 'ocdbt' in root or f.startswith('manifest'):
        os.remove(os.path.join(root, f))
  os.makedirs(tmp_path / 'checkpoints' / '4.orbax-checkpoint-tmp' / 'state')

  resumed = iter(dataset)
  ckpt = checkpointing.Checkpointer(str(tmp_path), keep=3)
  abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, small_state(0))
  with caplog.at_level(logging.WARNING):
    state = ckpt.restore_latest(abstract, resumed)
  ckpt.close()
  assert int(state['step']) == 2 and next(resumed) == 2
  assert any('checkpoint 3' in r.getMessage() and 'cannot be read' in r.getMessage()
             for r in caplog.records)
  names = os.listdir(tmp_path / 'checkpoints')
  assert any(n.startswith('corrupt-3-') for n in names) and '3' not in names
  assert not any('tmp' in n for n in names)


def test_keeps_the_last_k_and_restores_nothing_from_an_empty_dir(tmp_path):
  ckpt = checkpointing.Checkpointer(str(tmp_path), keep=2)
  abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, small_state(0))
  assert ckpt.restore_latest(abstract) is None
  for step in (1, 2, 3):
    ckpt.save(step, small_state(step))
  ckpt.wait()
  assert ckpt.all_steps() == [2, 3]
  assert int(ckpt.restore_latest(abstract)['step']) == 3
  ckpt.close()


def random_state(step):
  """A small state whose arrays do not compress: flipped bytes land in array data."""
  rng = np.random.RandomState(step)
  return {'w': jnp.asarray(rng.randn(64, 64).astype(np.float32)),
          'b': jnp.asarray(rng.randn(100).astype(np.float32)), 'step': jnp.asarray(step, jnp.int32)}


ABSTRACT = jax.tree.map(ocp.utils.to_shape_dtype_struct, random_state(0))


def saved(workdir, steps):
  ckpt = checkpointing.Checkpointer(str(workdir), keep=5)
  for step in steps:
    ckpt.save(step, random_state(step))
    ckpt.wait()
  ckpt.close()
  return workdir / 'checkpoints'


def test_flipped_bytes_fail_the_checksum_and_the_previous_checkpoint_is_used(tmp_path, caplog):
  directory = saved(tmp_path, (1, 2))
  disk.flip_bytes(disk.largest_file(directory / '2' / 'state'))
  before = disk.digest(tmp_path)
  reader = checkpointing.Checkpointer(str(tmp_path), read_only=True)
  with pytest.raises(checkpointing.UnreadableCheckpointError,
                     match=r'checkpoint 2 in .* cannot be read: its bytes do not match its '
                           r'checksum \(1 arrays, e.g. w\)'):
    reader.restore(2, ABSTRACT)
  reader.close()
  assert disk.digest(tmp_path) == before  # A reader changes nothing.

  ckpt = checkpointing.Checkpointer(str(tmp_path))
  caplog.clear()
  with caplog.at_level(logging.WARNING):
    state = ckpt.restore_latest(ABSTRACT)
  ckpt.close()
  assert int(state['step']) == 1
  np.testing.assert_array_equal(state['w'], random_state(1)['w'])
  warned = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
  assert len(warned) == 1 and '\n' not in warned[0], warned
  assert 'checkpoint 2' in warned[0] and 'do not match its checksum' in warned[0]
  assert 'resuming from checkpoint 1' in warned[0]
  names = sorted(os.listdir(directory))
  assert names[0] == '1' and names[1].startswith('corrupt-2-') and len(names) == 2


def test_a_tampered_checksum_is_detected(tmp_path):
  directory = saved(tmp_path, (1,))
  path = directory / '1' / checkpointing.CHECKSUM_ITEM / 'metadata'
  text = path.read_text()
  crc = str(checkpointing.checksums(jax.device_get(random_state(1)))['b'])
  assert crc in text
  path.write_text(text.replace(crc, str(int(crc) ^ 1)))
  reader = checkpointing.Checkpointer(str(tmp_path), read_only=True)
  with pytest.raises(checkpointing.UnreadableCheckpointError, match=r'e.g. b\)'):
    reader.restore(1, ABSTRACT)
  reader.close()


def test_unreadable_checkpoints_are_never_all_set_aside(tmp_path):
  directory = saved(tmp_path, (1, 2, 3))
  for step in (2, 3):
    disk.flip_bytes(disk.largest_file(directory / str(step) / 'state'))
  before = disk.digest(tmp_path)
  ckpt = checkpointing.Checkpointer(str(tmp_path))
  with pytest.raises(checkpointing.UnreadableCheckpointError,
                     match=r'the two newest checkpoints in .* cannot be read \(checkpoint 3: its '
                           r'bytes do not match .*; checkpoint 2: its bytes .*\); stopped without '
                           r'moving or deleting anything'):
    ckpt.restore_latest(ABSTRACT)
  ckpt.close()
  assert disk.digest(tmp_path) == before  # Checkpoint 1 is not used silently either.

  only = tmp_path / 'only'
  disk.flip_bytes(disk.largest_file(saved(only, (4,)) / '4' / 'state'))
  before = disk.digest(only)
  ckpt = checkpointing.Checkpointer(str(only))
  with pytest.raises(checkpointing.UnreadableCheckpointError,
                     match='the only checkpoint in .* cannot be read'):
    ckpt.restore_latest(ABSTRACT)  # Not None: the run would start over at step 0.
  ckpt.close()
  assert disk.digest(only) == before


def test_a_checkpoint_of_another_model_is_a_mismatch_not_corruption(tmp_path):
  saved(tmp_path, (1, 2))
  before = disk.digest(tmp_path)
  other = {'w': jax.ShapeDtypeStruct((64, 32), np.float32),
           'extra': jax.ShapeDtypeStruct((3,), np.float32),
           'step': jax.ShapeDtypeStruct((), np.int32)}
  ckpt = checkpointing.Checkpointer(str(tmp_path))
  with pytest.raises(checkpointing.CheckpointMismatchError,
                     match=r'checkpoint 2 in .* is not of the model the config describes \(3 '
                           r'arrays differ: b is in the checkpoint, not in the model; extra is '
                           r'not in the checkpoint; w is float32\[64, 64\] in the checkpoint, '
                           r'the model needs float32\[64, 32\]\)') as raised:
    ckpt.restore_latest(other)
  ckpt.close()
  assert len(raised.value.differences) == 3
  assert disk.digest(tmp_path) == before  # Both checkpoints stay, unrenamed.


def test_non_finite_values_are_never_saved_nor_restored(tmp_path):
  bad = random_state(1)
  bad['w'] = bad['w'].at[3, 5].set(jnp.inf)
  ckpt = checkpointing.Checkpointer(str(tmp_path))
  with pytest.raises(FloatingPointError,
                     match=r'checkpoint 1 not saved to .*: non-finite values in 1 arrays, e.g. w'):
    ckpt.save(1, bad)
  ckpt.close()
  assert ckpt.all_steps() == []
  # One written without these checks (an older version) is unreadable, not restored.
  with ocp.CheckpointManager(str(tmp_path / 'checkpoints')) as manager:
    manager.save(1, args=ocp.args.Composite(state=ocp.args.StandardSave(bad)))
    manager.wait_until_finished()
  reader = checkpointing.Checkpointer(str(tmp_path), read_only=True)
  with pytest.raises(checkpointing.UnreadableCheckpointError,
                     match=r'checkpoint 1 .* holds non-finite values \(1 arrays, e.g. w\)'):
    reader.restore(1, ABSTRACT)
  reader.close()


def test_the_reports_of_abandoned_orbax_reads_are_dropped(capsys):
  """A truncated STM-ResNet-50 checkpoint made Orbax's restore leave 120 failed read coroutines
  behind, each reported as 'Exception ignored in: <coroutine object
  _read_array_index_and_device_put>' with a TensorStore traceback (7,680 lines around the one
  useful warning). The filter drops those and passes every other unraisable exception on."""
  namespace = {}
  exec(compile('async def read():\n  pass\n', os.path.join('site', 'orbax', 'fake.py'),
               'exec'), namespace)
  coroutine = namespace['read']()
  seen = []
  previous = sys.unraisablehook
  sys.unraisablehook = seen.append
  try:
    with checkpointing._quiet_failed_read():
      pass
    for unraisable in (
        types.SimpleNamespace(exc_value=Exception('Encountered error while reading array'),
                              object=coroutine),
        types.SimpleNamespace(exc_value=RuntimeError('Event loop is closed'), object=None),
        types.SimpleNamespace(exc_value=ValueError('a bug of ours'), object=None)):
      sys.unraisablehook(unraisable)
  finally:
    sys.unraisablehook = previous
    coroutine.close()
  assert [str(u.exc_value) for u in seen] == ['a bug of ours']


@pytest.mark.parametrize('field,value', [
    ('checkpoint_every_steps', 0), ('keep_checkpoints', 0), ('log_every_steps', -1),
    ('eval_every_epochs', -1), ('init_checkpoint', '/no/such/dir'),
])
def test_training_config_checks_name_the_field(field, value):
  config = tiny.get_config()
  config[field] = value
  with pytest.raises(ValueError, match=f'config.{field}='):
    loop.check_config(config)


def test_training_config_checks_cover_model_and_optim():
  config = tiny.get_config()
  config.optim.base_lr = 0.0
  with pytest.raises(ValueError, match='config.optim.base_lr='):
    loop.check_config(config)
  config = tiny.get_config()
  config.model.dtype = 'float16'
  with pytest.raises(ValueError, match='config.model.dtype='):
    loop.check_config(config)
