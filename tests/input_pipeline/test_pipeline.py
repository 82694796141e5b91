"""grain pipelines: determinism, exact resume (direct and through Orbax), host shards, eval padding,
worker processes, and the assembly of per-host batches into global arrays."""

import os
import socket
import subprocess
import sys
import textwrap

import grain
import numpy as np
import orbax.checkpoint as ocp
import pytest
from absl import flags

from configs import tiny
from input_pipeline import datasets
from input_pipeline import pipeline
from input_pipeline import protocols
from input_pipeline import sampling
from stm_jax.core import sharding
from tests import clip_fixtures
from tests import jax_subprocess

T = 4
SPEC = pipeline.ClipSpec(num_frames=T, crop_size=32, short_side=40)
LENGTHS = [5, 8, 12, 3, 20, 9, 7, 10, 11, 6, 4, 13]  # below, at and above T; label = position


@pytest.fixture(scope='module')
def source():
  return clip_fixtures.source(LENGTHS)


def take(ds_or_it, n):
  it = iter(ds_or_it)
  return [next(it) for _ in range(n)]


def assert_same_batches(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert x.keys() == y.keys()
    for k in x:
      np.testing.assert_array_equal(x[k], y[k])


def train(source, **kwargs):
  kwargs = {'seed': 0, 'global_batch_size': 4, 'shard_index': 0, 'shard_count': 1, **kwargs}
  return pipeline.train_dataset(source, SPEC, **kwargs)


# --- train ------------------------------------------------------------------------------------

def test_train_batch_format(source):
  batch = take(train(source, shard_count=2), 1)[0]
  assert set(batch) == {'clips', 'label'}
  assert batch['clips'].shape == (2, T, 32, 32, 3) and batch['clips'].dtype == np.uint8
  assert batch['label'].shape == (2,) and batch['label'].dtype == np.int32


def test_train_deterministic_for_a_seed(source):
  a = take(train(source, seed=5), 4)
  assert_same_batches(a, take(train(source, seed=5), 4))
  other = take(train(source, seed=6), 4)
  assert any(not np.array_equal(x['clips'], y['clips']) for x, y in zip(a, other))


def test_train_reshuffles_and_reaugments_each_epoch(source):
  batches = take(train(source, global_batch_size=12), 2)
  first, second = (b['label'].tolist() for b in batches)
  assert sorted(first) == sorted(second) == list(range(12))
  assert first != second


def test_train_sampled_frames_match_the_video(source):
  # Every clip shows frames of its own video at TSN positions (one per segment, in order).
  for batch in take(train(source), 3):
    for clip, label in zip(batch['clips'], batch['label']):
      n = LENGTHS[label]
      idx = np.array(clip_fixtures.clip_indices(clip))
      if n < T:
        np.testing.assert_array_equal(idx, sampling.val_indices(n, T))
      else:
        bounds = np.arange(T + 1) * n // T
        assert ((idx >= bounds[:-1]) & (idx < bounds[1:])).all()


def test_train_state_round_trip(source):
  it = iter(train(source))
  take(it, 3)
  state = it.get_state()
  expected = take(it, 4)
  resumed = iter(train(source))
  resumed.set_state(state)
  assert_same_batches(take(resumed, 4), expected)


def test_train_state_round_trip_through_orbax(source, tmp_path):
  it = iter(train(source, shard_count=2, global_batch_size=4))
  take(it, 2)
  with ocp.CheckpointManager(tmp_path / 'ckpt') as manager:
    manager.save(7, args=ocp.args.Composite(data_iter=grain.checkpoint.CheckpointSave(it)))
    manager.wait_until_finished()
  expected = take(it, 3)
  resumed = iter(train(source, shard_count=2, global_batch_size=4))
  take(resumed, 5)  # wherever it is, the restore puts it back
  with ocp.CheckpointManager(tmp_path / 'ckpt') as manager:
    assert manager.latest_step() == 7
    manager.restore(7, args=ocp.args.Composite(
        data_iter=grain.checkpoint.CheckpointRestore(resumed)))
  assert_same_batches(take(resumed, 3), expected)


def shard_labels(source, shard_index, steps, **kwargs):
  batches = take(train(source, shard_index=shard_index, shard_count=2, **kwargs), steps)
  return [b['label'].tolist() for b in batches]


def test_two_hosts_shards_disjoint_and_complete(source):
  # 12 videos, global batch 4 (2 a host): each epoch is 3 steps; per epoch the hosts together see
  # every video exactly once.
  host0 = shard_labels(source, 0, 6)
  host1 = shard_labels(source, 1, 6)
  for epoch in range(2):
    seen0 = sum(host0[3 * epoch:3 * epoch + 3], [])
    seen1 = sum(host1[3 * epoch:3 * epoch + 3], [])
    assert not set(seen0) & set(seen1)
    assert sorted(seen0 + seen1) == list(range(12))


def test_two_hosts_uneven_dataset(source):
  # 11 videos: the global stream still holds each video once per epoch; a finite run is cut to
  # whole global batches so both hosts run the same number of steps.
  src = source[:11]
  host0 = shard_labels(src, 0, 11)
  host1 = shard_labels(src, 1, 11)
  counts = np.bincount(sum(host0 + host1, []), minlength=11)
  assert (counts == 4).all()  # 44 = 4 epochs of 11
  for shard in range(2):
    it = iter(train(src, shard_index=shard, shard_count=2, num_epochs=1))
    assert len(list(it)) == 2  # 11 // 4 global steps


def test_global_batch_must_split_over_hosts(source):
  with pytest.raises(ValueError, match='multiple'):
    train(source, global_batch_size=5, shard_count=2)


# --- eval -------------------------------------------------------------------------------------

def eval_batches(source, spec, protocol, global_batch_size, shard_count):
  per_host = []
  steps = pipeline.num_eval_steps(len(source), protocol, global_batch_size)
  for shard in range(shard_count):
    ds = pipeline.eval_dataset(source, spec, protocol, global_batch_size=global_batch_size,
                               shard_index=shard, shard_count=shard_count)
    batches = list(ds)
    assert len(batches) == steps  # every host runs the same number of steps
    per_host.append(batches)
  # The global batch is the hosts' rows in process order.
  return [{k: np.concatenate([h[s][k] for h in per_host]) for k in per_host[0][s]}
          for s in range(steps)]


def test_test_views_each_once_with_padding(source):
  src = source[:5]  # lengths 5, 8, 12, 3, 20
  spec = pipeline.ClipSpec(num_frames=T, crop_size=32, short_side=40)
  batches = eval_batches(src, spec, protocols.test_protocol(num_clips=2, num_crops=3),
                         global_batch_size=8, shard_count=2)
  assert len(batches) == 4  # ceil(5 videos x 6 views / 8)
  rows = {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}
  assert rows['mask'].dtype == rows['video_index'].dtype == rows['label'].dtype == np.int32
  np.testing.assert_array_equal(rows['mask'], [1] * 30 + [0] * 2)
  videos = [v for v in range(5) for _ in range(6)] + [-1] * 2
  np.testing.assert_array_equal(rows['video_index'], videos)
  np.testing.assert_array_equal(rows['label'], videos)  # label = video number; -1 for padding
  assert not rows['clips'][30:].any()
  for g in range(30):
    video, view = divmod(g, 6)
    expected = sampling.test_indices(LENGTHS[video], T, 2)[view // 3]
    assert clip_fixtures.clip_indices(rows['clips'][g]) == expected.tolist()


def test_val_every_video_once(source):
  batches = eval_batches(source, SPEC, protocols.VAL, global_batch_size=10, shard_count=2)
  assert len(batches) == 2
  rows = {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}
  valid = rows['mask'] == 1
  assert valid.sum() == 12
  np.testing.assert_array_equal(rows['video_index'][valid], np.arange(12))
  np.testing.assert_array_equal(rows['label'][valid], np.arange(12))
  for clip, v in zip(rows['clips'][valid], rows['video_index'][valid]):
    assert clip_fixtures.clip_indices(clip) == sampling.val_indices(LENGTHS[v], T).tolist()


# --- config, workers --------------------------------------------------------------------------

def test_create_dataset_from_config(source):
  config = tiny.get_config()
  config.batch_size = 4
  config.data.short_side = 40
  config.data.num_clips, config.data.num_crops = 2, 3
  batch = take(pipeline.create_dataset(source, config, 'train', shard_index=0, shard_count=1), 1)[0]
  assert batch['clips'].shape == (4, config.data.num_frames, 32, 32, 3)
  ds = pipeline.create_dataset(source[:1], config, 'test', shard_index=0, shard_count=1)
  assert [b['mask'].tolist() for b in ds] == [[1] * 4, [1, 1, 0, 0]]


def test_worker_processes_give_the_same_batches_and_resume(source):
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()  # grain's worker processes read absl flags
  expected = take(train(source), 6)
  it = iter(train(source, num_workers=2))
  try:
    assert_same_batches(take(it, 3), expected[:3])
    state = it.get_state()
  finally:
    it.close()
  resumed = iter(train(source, num_workers=2))
  try:
    resumed.set_state(state)
    assert_same_batches(take(resumed, 3), expected[3:])
  finally:
    resumed.close()


# --- global arrays ----------------------------------------------------------------------------

GLOBAL_ARRAYS_SCRIPT = textwrap.dedent('''
    import jax
    import numpy as np
    from jax.sharding import PartitionSpec as P
    from stm_jax.core import sharding

    assert jax.device_count() == 8, jax.devices()
    batch = {'clips': np.arange(16 * 2 * 4 * 4 * 3, dtype=np.uint8).reshape(16, 2, 4, 4, 3),
             'label': np.arange(16, dtype=np.int32), 'mask': np.ones(16, np.int32)}
    for shape, names, rows in [((8,), ('data',), 2), ((4, 2), ('data', 'model'), 4)]:
      mesh = jax.make_mesh(shape, names)
      out = sharding.global_batch(batch, mesh)
      for k, v in out.items():
        assert isinstance(v, jax.Array) and v.shape == batch[k].shape and v.dtype == batch[k].dtype
        assert v.sharding.spec == P('data'), v.sharding
        assert len(v.addressable_shards) == 8
        assert {s.data.shape[0] for s in v.addressable_shards} == {rows}
        for s in v.addressable_shards:
          np.testing.assert_array_equal(np.asarray(s.data), batch[k][s.index])
        np.testing.assert_array_equal(np.asarray(v), batch[k])
    print('GLOBAL_ARRAYS_OK')
''')


def test_global_batch_on_8_cpu_devices():
  root = jax_subprocess.ROOT
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=8',
             JAX_PLATFORMS='cpu', PYTHONPATH=root)
  result = subprocess.run([sys.executable, '-c', GLOBAL_ARRAYS_SCRIPT], cwd=root, env=env,
                          capture_output=True, text=True, timeout=120, check=False)
  assert 'GLOBAL_ARRAYS_OK' in result.stdout, result.stderr[-3000:]


TWO_PROCESS_SCRIPT = textwrap.dedent('''
    import sys
    import jax
    import numpy as np
    process_id, port = int(sys.argv[1]), int(sys.argv[2])
    jax.distributed.initialize(f'127.0.0.1:{port}', num_processes=2, process_id=process_id)
    from jax.experimental import multihost_utils
    from input_pipeline import pipeline
    from input_pipeline import protocols
    from stm_jax.core import sharding
    from tests import clip_fixtures

    assert jax.process_count() == 2 and jax.device_count() == 8
    mesh = jax.make_mesh((8,), ('data',))
    gather = lambda x: multihost_utils.process_allgather(x, tiled=True)
    # Shards default to this JAX process. Eval: global batches in view order, padded at the end.
    source = clip_fixtures.source([3, 8, 12, 5, 20])
    spec = pipeline.ClipSpec(num_frames=4, crop_size=32, short_side=40)
    rows = []
    test = protocols.test_protocol(num_clips=2, num_crops=3)
    for batch in pipeline.eval_dataset(source, spec, test, global_batch_size=8):
      g = sharding.global_batch(batch, mesh)
      assert g['clips'].shape == (8, 4, 32, 32, 3) and g['clips'].dtype == np.uint8
      rows.append((gather(g['video_index']), gather(g['mask'])))
    video_index = np.concatenate([r[0] for r in rows])
    assert video_index.tolist() == [v for v in range(5) for _ in range(6)] + [-1, -1], video_index
    assert np.concatenate([r[1] for r in rows]).tolist() == [1] * 30 + [0, 0]
    # Train: one epoch of 16 videos in 2 global batches of 8, every video once.
    source = clip_fixtures.source([5, 8, 12, 3, 20, 9, 7, 10, 11, 6, 4, 13, 8, 9, 2, 30])
    spec = pipeline.ClipSpec(num_frames=4, crop_size=32, short_side=40)
    it = iter(pipeline.train_dataset(source, spec, seed=0, global_batch_size=8))
    labels = [gather(sharding.global_batch(next(it), mesh)['label']) for _ in range(2)]
    assert sorted(np.concatenate(labels).tolist()) == list(range(16)), labels
    print('TWO_PROCESSES_OK')
''')


def test_two_jax_processes_assemble_global_batches():
  root = jax_subprocess.ROOT
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    port = s.getsockname()[1]
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=4',
             JAX_PLATFORMS='cpu', PYTHONPATH=root)
  procs = [subprocess.Popen([sys.executable, '-c', TWO_PROCESS_SCRIPT, str(i), str(port)],
                            cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True) for i in range(2)]
  outputs = []
  for p in procs:
    try:
      outputs.append(p.communicate(timeout=120)[0])
    except subprocess.TimeoutExpired:
      for q in procs:
        q.kill()
      raise
  for out in outputs:
    assert 'TWO_PROCESSES_OK' in out, out[-3000:]


# --- a prepared dataset, end to end -----------------------------------------------------------

def test_prepared_dataset_end_to_end(tmp_path):
  """The converter's TFDS dataset, opened by `open_source`, through every mode and 2 workers."""
  from input_pipeline.prepare import converter  # pylint: disable=g-import-not-at-top
  from tests import video_fixtures  # pylint: disable=g-import-not-at-top
  expected, config = video_fixtures.setup(tmp_path, 'sthv1')
  converter.prepare(config)
  config.batch_size = 2
  config.data.num_clips, config.data.num_crops = 2, 3
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()

  def frame_numbers(clip):
    # Fixture frame i is grey level 10 + 20 * (i % 12) with a white bar: the median is the grey.
    return [int(round((np.median(f) - 10) / 20)) for f in clip]

  for split, items in expected.splits.items():
    source = datasets.open_source(config, split)
    assert len(source) == len(items)
    lengths = [n for _, _, n in items]
    batches = list(pipeline.create_dataset(source, config, 'test', shard_index=0, shard_count=1,
                                           num_workers=2))
    rows = {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}
    views = 6 * len(items)
    assert rows['mask'].sum() == views
    np.testing.assert_array_equal(rows['video_index'][:views], np.repeat(np.arange(len(items)), 6))
    np.testing.assert_array_equal(rows['label'][:views], np.repeat([l for _, l, _ in items], 6))
    for g in range(views):
      video, view = divmod(g, 6)
      idx = sampling.test_indices(lengths[video], config.data.num_frames, 2)[view // 3]
      assert frame_numbers(rows['clips'][g]) == [i % 12 for i in idx]
  source = datasets.open_source(config, 'train')
  batch = take(pipeline.create_dataset(source, config, 'train', shard_index=0, shard_count=1), 1)[0]
  assert batch['clips'].shape == (2, config.data.num_frames, 224, 224, 3)


def test_the_loader_sizes_itself_to_the_host():
  # Accelerators run the step: the loader takes every core but the trainer's two.
  assert pipeline.loader_size(-1, 0, accelerator=True, cores=16) == (14, 2)
  assert pipeline.loader_size(-1, 0, accelerator=True, cores=2) == (1, 2)
  # CPU-only: the cores compute the step, so the loader stays in the training process.
  assert pipeline.loader_size(-1, 0, accelerator=False, cores=16) == (0, 2)
  # Numbers given are kept.
  assert pipeline.loader_size(3, 5, accelerator=True, cores=16) == (3, 5)
  assert pipeline.loader_size(0, 1, accelerator=True, cores=16) == (0, 1)
