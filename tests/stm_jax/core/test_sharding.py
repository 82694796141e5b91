"""Data parallelism: one device, eight fake devices and two processes of four train alike, and
evaluate alike (every video counted once, whatever the number of hosts).

The device count is fixed when jax starts, so the runs are subprocesses of tests/sharded_run.py
(started together; they share a compilation cache and a cheap XLA optimisation level).
"""

import subprocess
import sys

import jax
import numpy as np
import pytest

from stm_jax.core import sharding
from tests import jax_subprocess
from tests import sharded_run


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
  """Losses and final variables of 3 steps: 1 device, 8 devices, 2 processes x 4 devices."""
  tmp = tmp_path_factory.mktemp('sharded')
  env = jax_subprocess.env(tmp_path_factory.getbasetemp() / 'jax_cache')
  port = jax_subprocess.free_port()
  commands = {
      'one': ['--devices=1'],
      'eight': ['--devices=8'],
      'two_processes': ['--devices=4', '--num_processes=2', '--process_id=0',
                        f'--coordinator=127.0.0.1:{port}'],
      'second_process': ['--devices=4', '--num_processes=2', '--process_id=1',
                         f'--coordinator=127.0.0.1:{port}'],
  }
  procs = {name: subprocess.Popen(
      [sys.executable, '-m', 'tests.sharded_run', f'--out={tmp / name}.npz', *args],
      cwd=jax_subprocess.ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
      text=True) for name, args in commands.items()}
  for name, proc in procs.items():
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, f'{name}:\n{out[-4000:]}'
  result = {name: dict(np.load(f'{tmp / name}.npz')) for name in ('one', 'eight', 'two_processes')}
  result['second_process'] = dict(np.load(f'{tmp / "second_process"}.npz.p1.npz'))
  return result


def assert_same_training(a, b):
  assert a.keys() == b.keys()
  # The steps lower the loss, so the parameters moved; the runs differ by float reassociation
  # only (measured: <= 5e-6; per-device BN statistics or a summed gradient would differ by O(1)).
  assert a['loss'][0] - a['loss'][2] > 0.1
  np.testing.assert_allclose(a['loss'], b['loss'], rtol=1e-5)
  for key in a:
    np.testing.assert_allclose(a[key], b[key], rtol=1e-4, atol=5e-5, err_msg=key)


def test_eight_devices_train_like_one(runs):
  assert_same_training(runs['one'], runs['eight'])


def test_two_processes_train_like_one(runs):
  assert_same_training(runs['one'], runs['two_processes'])
  assert_same_training(runs['eight'], runs['two_processes'])


def test_evaluation_is_the_same_on_any_number_of_hosts(runs):
  one = runs['one']
  assert one['eval_scores'].shape == (sharded_run.EVAL_VIDEOS, 5)
  np.testing.assert_allclose(one['eval_scores'].sum(axis=1), 1, rtol=1e-5)
  assert one['eval_labels'].tolist() == [v % 5 for v in range(sharded_run.EVAL_VIDEOS)]
  # Per-video scores differ between videos (a mix-up of videos or views would show) ...
  assert np.abs(np.diff(one['eval_scores'], axis=0)).max() > 1e-4
  # ... and agree across layouts up to the trained weights' float differences.
  for name in ('eight', 'two_processes', 'second_process'):
    np.testing.assert_allclose(runs[name]['eval_scores'], one['eval_scores'], atol=2e-5,
                               err_msg=name)
    np.testing.assert_array_equal(runs[name]['eval_labels'], one['eval_labels'])
  # Both hosts of the two-process run hold the same result.
  np.testing.assert_array_equal(runs['second_process']['eval_scores'],
                                runs['two_processes']['eval_scores'])


def test_mesh_layouts_and_batch_checks():
  mesh = sharding.make_mesh()
  assert mesh.axis_names == ('data',) and mesh.devices.size == jax.device_count()
  assert mesh.axis_types == (jax.sharding.AxisType.Auto,)
  assert sharding.data_sharded(mesh).spec == jax.sharding.PartitionSpec('data')
  assert sharding.replicated(mesh).spec == jax.sharding.PartitionSpec()
  batch = sharding.global_batch({'label': np.arange(4, dtype=np.int32)}, mesh)
  np.testing.assert_array_equal(batch['label'], np.arange(4))
  sharding.check_batch_size(4, mesh, micro_batches=2)
  with pytest.raises(ValueError, match='config.batch_size=5'):
    sharding.check_batch_size(5, mesh, micro_batches=1 if mesh.devices.size > 1 else 2)


def test_cluster_detection(monkeypatch):
  for var in ('JAX_COORDINATOR_ADDRESS', 'SLURM_NTASKS', 'SLURM_STEP_NUM_TASKS',
              'OMPI_COMM_WORLD_SIZE', 'TPU_WORKER_HOSTNAMES', 'TPU_ACCELERATOR_TYPE',
              'TPU_WORKER_ID'):
    monkeypatch.delenv(var, raising=False)
  local = sharding.cluster_detected()  # False unless this machine is a TPU VM
  monkeypatch.setenv('SLURM_NTASKS', '1')
  assert sharding.cluster_detected() == local
  monkeypatch.setenv('SLURM_NTASKS', '16')
  assert sharding.cluster_detected()
  monkeypatch.delenv('SLURM_NTASKS')
  monkeypatch.setenv('TPU_WORKER_HOSTNAMES', 'w0,w1')
  assert sharding.cluster_detected()
  assert not sharding.maybe_initialize_distributed('no')
  with pytest.raises(ValueError, match='auto'):
    sharding.maybe_initialize_distributed('maybe')
