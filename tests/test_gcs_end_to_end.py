"""A run that lives in a bucket from start to end, against the GCS emulator on 127.0.0.1.

The user's commands, as `launch.py` subprocesses: a tiny dataset prepared to `gs://`, trained with
its workdir on `gs://` and killed with SIGKILL after its first checkpoint, trained again (it
resumes there), evaluated, predicted with the CSV written to the bucket, and exported to the
bucket; the trainer's compilation cache and a profile of one step are in the bucket too.
Afterwards the bucket holds every file of the run and no local file or folder named
`gs:` exists (the mistake of treating a bucket URL as a relative local path). Then the same
preparation on two hosts at once (jax.distributed on 127.0.0.1), which share the shards, and one
refused while another holds the dataset's lock.
"""

import os
import re
import signal
import subprocess
import sys

import pytest

from input_pipeline import errors
from input_pipeline import files
from input_pipeline import locks
from stm_jax.core import checkpointing
from stm_jax.core import run_directory
from tests import jax_subprocess
from tests import video_fixtures

TOTAL = 6  # 3 videos, batch 2, 4 epochs (steps per epoch rounded up to whole global batches)


def _launch(*flags, env, kill_after=None, cwd):
  """Runs `launch.py` with `flags`; with `kill_after` (a regex), SIGKILLs it when a line of its
  output matches. Returns (exit status, output)."""
  proc = subprocess.Popen([sys.executable, os.path.join(jax_subprocess.ROOT, 'launch.py'),
                           *flags], cwd=cwd, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
  lines = []
  for line in proc.stdout:
    lines.append(line)
    if kill_after and re.search(kill_after, line):
      proc.send_signal(signal.SIGKILL)
      kill_after = None
  proc.wait(timeout=600)
  return proc.returncode, ''.join(lines)


def _local_gs_entries(*roots):
  """Every local file or folder whose name starts with 'gs:' below `roots`."""
  found = []
  for root in roots:
    for dirpath, dirnames, filenames in os.walk(root):
      found += [os.path.join(dirpath, n) for n in dirnames + filenames if n.startswith('gs:')]
  return found


def test_prepare_train_resume_eval_predict_export_on_a_bucket(gcs_bucket, tmp_path,
                                                              tmp_path_factory):
  _, data_config = video_fixtures.setup(tmp_path, 'sthv1')
  raw_dir = data_config.data.raw_dir
  data_dir, workdir = f'{gcs_bucket}/tfds', f'{gcs_bucket}/runs/tiny'
  cwd = tmp_path / 'cwd'  # Where a relative 'gs:' folder would appear.
  cwd.mkdir()
  env = jax_subprocess.env(tmp_path_factory.getbasetemp() / 'jax_cache')
  data = ['--config.data.dataset=sthv1', f'--config.data.data_dir={data_dir}',
          '--config.data.num_classes=3']

  rc, out = _launch('--mode=prepare', f'--config={jax_subprocess.ROOT}/configs/sthv1.py',
                    f'--config.data.raw_dir={raw_dir}',
                    '--config.data.short_side=32', '--config.data.videos_per_shard=2',
                    '--config.data.prepare_workers=1', *data, env=env, cwd=cwd)
  assert rc == 0, out[-3000:]
  dataset = files.resolve(f'{data_dir}/stm_sthv1/1.0.0')
  assert (dataset / 'dataset_info.json').is_file() and (dataset / 'prepare_summary.json').is_file()
  assert not (dataset / '.prepare').exists()

  train = ['--mode=train', f'--config={jax_subprocess.ROOT}/configs/tiny.py', f'--workdir={workdir}',
           *data, '--config.batch_size=2', '--config.optim.epochs=4', '--config.optim.decay_epochs=()',
           '--config.checkpoint_every_steps=2', '--config.log_every_steps=1']
  # The compilation cache goes with the run (into the bucket), not the test session's cache.
  train_env = {k: v for k, v in env.items() if k != 'JAX_COMPILATION_CACHE_DIR'}
  rc, out = _launch(*train, env=train_env, cwd=cwd, kill_after=r'step 5/6')
  assert rc == -signal.SIGKILL, out[-3000:]
  assert 'starting at step 0 of 6' in out and 'float32 (model.dtype=auto on cpu)' in out
  run = files.resolve(workdir)
  steps = checkpointing.Checkpointer(workdir, read_only=True).all_steps()  # Committed ones.
  assert steps and steps[-1] < TOTAL, (steps, [p.name for p in (run / 'checkpoints').iterdir()])
  assert (run / run_directory.LOCK_FILE).exists()  # Left by the killed trainer.

  rc, out = _launch(*train, '--config.profile_steps=(5,5)', env=train_env, cwd=cwd)
  assert rc == 0, out[-3000:]
  assert f'resuming at step {steps[-1]} of {TOTAL}' in out, out[-3000:]
  loaded = re.search(rf'compilation cache {workdir}/compilation_cache: (\d+) programs loaded', out)
  assert loaded and int(loaded.group(1)) >= 1, out[-3000:]  # Compiled by the killed run.
  traces = list((run / 'tensorboard' / 'plugins' / 'profile').glob('*/*.xplane.pb'))
  assert traces, 'no profile of step 5'
  assert files.read_json(run / 'config.json')['model']['dtype'] == 'float32'  # auto, resolved.
  for name in ('config.json', 'class_names.json', 'metrics.jsonl', 'curves.png', 'train.log'):
    assert (run / name).is_file(), name
  assert any((run / 'tensorboard').iterdir())
  assert (run / 'best').is_dir() and not (run / run_directory.LOCK_FILE).exists()
  logged = [line for line in (run / 'metrics.jsonl').read_text().splitlines() if '"train"' in line]
  assert len(logged) == TOTAL  # Each step once, across the kill.

  rc, out = _launch('--mode=eval', f'--workdir={workdir}', env=env, cwd=cwd)
  assert rc == 0, out[-3000:]
  evaluations = [p for p in run.iterdir() if p.name.startswith('eval_val_step')]
  assert evaluations and (evaluations[0] / 'metrics.json').is_file()

  video = sorted(p for p in (tmp_path / 'raw').rglob('*') if p.is_dir() and any(p.glob('*.jpg')))[0]
  rc, out = _launch('--mode=predict', f'--checkpoint={workdir}', f'--input={video}',
                    f'--output={gcs_bucket}/predictions.csv', env=env, cwd=cwd)
  assert rc == 0, out[-3000:]
  assert files.resolve(f'{gcs_bucket}/predictions.csv').read_text().startswith('path,num_frames')

  rc, out = _launch('--mode=export', f'--checkpoint={workdir}', f'--output={gcs_bucket}/export',
                    env=env, cwd=cwd)
  assert rc == 0, out[-3000:]
  exported = files.resolve(f'{gcs_bucket}/export')
  assert {p.name for p in exported.iterdir()} == {'model.stablehlo', 'signature.json'}

  assert not _local_gs_entries(cwd, jax_subprocess.ROOT, tmp_path)


def test_the_workdir_lock_works_on_a_bucket(gcs_bucket):
  first = run_directory.WorkdirLock(f'{gcs_bucket}/run')
  first.acquire()
  second = run_directory.WorkdirLock(f'{gcs_bucket}/run')
  with pytest.raises(errors.InUseError, match=f'pid {os.getpid()} on host'):
    second.acquire()
  first.release()
  second.acquire()
  assert second.holder().pid == os.getpid()
  second.release()
  assert not files.resolve(f'{gcs_bucket}/run/{run_directory.LOCK_FILE}').exists()


def test_two_hosts_share_the_shards_and_a_third_prepare_is_refused(gcs_bucket, tmp_path,
                                                                   tmp_path_factory):
  _, data_config = video_fixtures.setup(tmp_path, 'sthv1')
  data_dir = f'{gcs_bucket}/tfds'
  env = jax_subprocess.env(tmp_path_factory.getbasetemp() / 'jax_cache')
  prepare = [sys.executable, os.path.join(jax_subprocess.ROOT, 'launch.py'), '--mode=prepare',
             f'--config={jax_subprocess.ROOT}/configs/sthv1.py',
             f'--config.data.raw_dir={data_config.data.raw_dir}', f'--config.data.data_dir={data_dir}',
             '--config.data.num_classes=3', '--config.data.short_side=32',
             '--config.data.videos_per_shard=1', '--config.data.prepare_workers=1']

  # A live holder of the dataset's lock (this process): a prepare is refused, naming it.
  held = locks.FileLock(f'{data_dir}/.stm_sthv1.prepare.lock', 'busy', 'wait')
  held.acquire()
  refused = subprocess.run(prepare, cwd=tmp_path, env=env, capture_output=True, text=True,
                           timeout=300, check=False)
  held.release()
  errors_printed = [l for l in refused.stderr.splitlines() if l.startswith('error: ')]
  assert refused.returncode == 2 and len(errors_printed) == 1, refused.stdout + refused.stderr
  assert f'another prepare of stm_sthv1 is running: pid {os.getpid()}' in errors_printed[0]
  assert not files.resolve(f'{data_dir}/stm_sthv1').exists()

  # Two hosts (jax.distributed on 127.0.0.1) run the same command: 6 shards, 3 each.
  port = jax_subprocess.free_port()
  procs = [subprocess.Popen(prepare + [f'--coordinator_address=127.0.0.1:{port}',
                                       '--num_processes=2', f'--process_id={i}'],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True) for i in range(2)]
  outputs = [p.communicate(timeout=300)[0] for p in procs]
  for i, (p, out) in enumerate(zip(procs, outputs)):
    assert p.returncode == 0, '\n'.join(o[-3000:] for o in outputs)
    assert f'host {i} of 2' in out and '3/3' in out, out[-3000:]
    assert '6 videos converted' in out  # Every host prints the one summary.
  dataset = files.resolve(f'{data_dir}/stm_sthv1/1.0.0')
  summary = files.read_json(dataset / 'prepare_summary.json')
  assert summary['shards_written'] == 6 and summary['converted'] == 6
  shards = sorted(p.name for p in dataset.iterdir() if '.array_record-' in p.name)
  assert len(shards) == 6 and not (dataset / '.prepare').exists()
  assert not files.resolve(f'{data_dir}/.stm_sthv1.prepare.lock').exists()
