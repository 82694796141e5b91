"""The converter: quarantine, resumption, workers, TFRecord input, metadata, the command line."""

import dataclasses
import json
import os
import subprocess
import sys

import pytest
import tensorflow_datasets as tfds

from input_pipeline import datasets
from input_pipeline import errors
from input_pipeline import locks
from input_pipeline.prepare import converter
from input_pipeline.prepare import records
from input_pipeline.prepare.layouts import common
from input_pipeline import tfrecord
from tests import jax_subprocess
from tests import video_fixtures as vf

ROOT = jax_subprocess.ROOT


def _quarantine(config):
  path = os.path.join(datasets.dataset_dir(config), converter.QUARANTINE_FILE)
  with open(path) as f:
    header, *rows = [line.rstrip('\n').split('\t') for line in f]
  assert header == ['split', 'id', 'file', 'reason']
  return {r[1]: r for r in rows}


@pytest.mark.parametrize('name', ['sthv1', 'sthv2', 'kinetics400', 'ucf101', 'hmdb51',
                                  'custom_lists'])
def test_unusable_videos_are_quarantined_and_the_rest_converts(tmp_path, name):
  expected, config = vf.setup(tmp_path, name, corrupt=True)
  summary = converter.prepare(config)
  quarantined = _quarantine(config)
  assert set(quarantined) == set(expected.bad)
  for vid, word in expected.bad.items():
    split, _, file, reason = quarantined[vid]
    assert split == 'train' and word in reason, (vid, reason)
    assert file
  assert summary['skipped'] == len(expected.bad)
  assert summary['quarantine'].endswith(converter.QUARANTINE_FILE)
  for split, items in expected.splits.items():
    recs = vf.read_split(config, split)
    assert [(r['id'].decode(), int(r['label']), int(r['num_frames'])) for r in recs] == items


def test_summary_json(tmp_path):
  _, config = vf.setup(tmp_path, 'sthv1', corrupt=True)
  summary = converter.main(config)
  stored = json.load(open(os.path.join(datasets.dataset_dir(config), converter.SUMMARY_FILE)))
  assert stored == summary
  assert stored['splits']['train'] == {
      'converted': 3, 'skipped': 4, 'shards': 4,
      'frames_per_video': {'mean': 8.0, 'min': 4, 'max': 12},
      'bytes': stored['splits']['train']['bytes']}
  on_disk = sum(os.path.getsize(os.path.join(stored['dir'], f)) for f in os.listdir(stored['dir']))
  assert 0 < stored['bytes_on_disk'] <= on_disk
  assert stored['seconds'] >= 0 and stored['num_classes'] == 3
  assert not os.path.exists(os.path.join(stored['dir'], '.prepare'))


class _Killed(BaseException):
  """Stands for the process being killed (not an Exception: nothing may catch it)."""


def test_interrupted_conversion_resumes_without_redoing_finished_shards(tmp_path, monkeypatch):
  _, config = vf.setup(tmp_path, 'sthv1', videos_per_shard=1)
  ds_dir = datasets.dataset_dir(config)
  real = records.convert_entry
  calls = []

  def dies_on_103(entry, task):
    if entry.video_id == '103':
      raise _Killed()
    calls.append(entry.video_id)
    return real(entry, task)

  monkeypatch.setattr(records, 'convert_entry', dies_on_103)
  with pytest.raises(_Killed):
    converter.prepare(config)
  assert calls == ['101', '102']
  done = sorted(f for f in os.listdir(ds_dir) if '.array_record-' in f)
  assert done == ['stm_sthv1-train.array_record-00000-of-00003',
                  'stm_sthv1-train.array_record-00001-of-00003']
  # Nothing a reader could take: no dataset_info.json, the partial shard only in the work folder.
  assert not os.path.exists(os.path.join(ds_dir, 'dataset_info.json'))
  with pytest.raises(Exception):
    tfds.builder_from_directory(ds_dir)
  stats = {f: os.stat(os.path.join(ds_dir, f)) for f in done}
  stamps = {f: (st.st_ino, st.st_mtime_ns) for f, st in stats.items()}

  calls.clear()
  monkeypatch.setattr(records, 'convert_entry', lambda e, t: calls.append(e.video_id) or real(e, t))
  summary = converter.prepare(config)
  assert calls == ['103', '104', '105', '106']  # 101 and 102 were not converted again
  assert summary['shards_resumed'] == 2 and summary['shards_written'] == 4
  for f, stamp in stamps.items():
    st = os.stat(os.path.join(ds_dir, f))
    assert (st.st_ino, st.st_mtime_ns) == stamp
  assert [r['id'] for r in vf.read_split(config, 'train')] == [b'101', b'102', b'103']
  assert summary['splits']['train']['converted'] == 3


def test_parallel_workers_give_the_same_dataset(tmp_path):
  _, config = vf.setup(tmp_path, 'sthv2', corrupt=True)
  converter.prepare(config)
  parallel = vf.make_config('sthv2', config.data.raw_dir, tmp_path / 'out2',
                            num_classes=3, prepare_workers=2, videos_per_shard=1)
  summary = converter.prepare(parallel)
  assert summary['shards_written'] == 8
  for split in ('train', 'validation', 'test'):
    assert vf.read_split(parallel, split) == vf.read_split(config, split)
  assert _quarantine(parallel) == _quarantine(config)


def test_a_video_that_kills_its_worker_is_quarantined(tmp_path, monkeypatch):
  """A decoder crash (simulated: the worker process exits hard on video 102) stops nothing."""
  expected, config = vf.setup(tmp_path, 'sthv1', prepare_workers=2)
  monkeypatch.setenv(records.FAULT_ENV, 'crash:102')
  summary = converter.prepare(config)
  assert 'crashed the converter process' in _quarantine(config)['102'][3]
  assert summary['skipped'] == 1
  train = [(r['id'].decode(), int(r['label'])) for r in vf.read_split(config, 'train')]
  assert train == [(v, l) for v, l, _ in expected.splits['train'] if v != '102']
  assert len(vf.read_split(config, 'validation')) == len(expected.splits['validation'])


def test_rerun_is_a_no_op_and_other_settings_need_overwrite(tmp_path):
  _, config = vf.setup(tmp_path, 'jester')
  first = converter.prepare(config)
  assert converter.prepare(config) == first  # already prepared: the stored summary, nothing redone
  config.data.short_side = 16
  with pytest.raises(FileExistsError, match='overwrite=True'):
    converter.prepare(config)
  config.data.overwrite = True
  redone = converter.prepare(config)
  assert redone['settings']['short_side'] == 16 and redone['converted'] == first['converted']


def test_unfinished_conversion_with_other_settings_needs_overwrite(tmp_path, monkeypatch):
  _, config = vf.setup(tmp_path, 'jester')
  monkeypatch.setattr(records, 'convert_entry', lambda e, t: (_ for _ in ()).throw(_Killed()))
  with pytest.raises(_Killed):
    converter.prepare(config)
  monkeypatch.undo()
  config.data.jpeg_quality = 50
  with pytest.raises(FileExistsError, match='unfinished conversion'):
    converter.prepare(config)


def test_a_second_run_on_the_same_dataset_is_refused(tmp_path):
  _, config = vf.setup(tmp_path, 'jester')
  path = os.path.join(config.data.data_dir, '.stm_jester.prepare.lock')
  held = locks.FileLock(path, 'busy', 'wait')
  held.acquire()  # A live holder: this process.
  with pytest.raises(errors.InUseError, match='another prepare of stm_jester is running: pid '):
    converter.prepare(config)
  assert not os.path.exists(os.path.join(config.data.data_dir, 'stm_jester'))
  held.release()
  # A holder that is gone (a pid that runs nothing) does not block: its lock is replaced.
  dead = subprocess.run([sys.executable, '-c', 'import os; print(os.getpid())'],
                        capture_output=True, text=True, check=True)
  owner = dict(dataclasses.asdict(locks.LockOwner.this_process()), pid=int(dead.stdout))
  with open(path, 'w', encoding='utf-8') as f:
    json.dump(owner, f)
  assert converter.prepare(config)['converted'] == 6
  assert not os.path.exists(path)


def test_data_source_and_builder_from_directory_agree(tmp_path):
  expected, config = vf.setup(tmp_path, 'ucf101', split=2)
  converter.prepare(config)
  builder = tfds.builder_from_directory(datasets.dataset_dir(config))
  assert builder.info.features['label'].names == expected.classes
  source = builder.as_data_source('test')  # The video records: no frames, where they start.
  whole = vf.read_split(config, 'test')
  assert [{k: v for k, v in source[i].items() if k != 'first_frame'} for i in range(len(source))
          ] == [{k: v for k, v in r.items() if k != 'frames'} for r in whole]
  starts = [int(source[i]['first_frame']) for i in range(len(source))]
  for i in range(1, len(whole)):  # A shard's videos' frames follow each other in its frame file.
    assert starts[i] in (0, starts[i - 1] + whole[i - 1]['num_frames'])
  assert os.fspath(datasets.dataset_dir(config)).endswith(os.path.join('stm_ucf101', 'split2', '1.0.0'))


def test_tfds_download_and_prepare_is_refused_with_what_to_run(tmp_path):
  """TFDS's own (single-process) generation cannot write the frame files: it says to use prepare."""
  from input_pipeline.prepare import layouts  # pylint: disable=g-import-not-at-top
  _, config = vf.setup(tmp_path, 'sthv1')
  layout = layouts.read(config)
  settings = converter._settings(config)  # pylint: disable=protected-access
  builder = converter.make_builder(config, layout.class_names, settings, layout)
  with pytest.raises(errors.UserError, match='--mode=prepare'):
    builder.download_and_prepare()


# --- TFRecord input -------------------------------------------------------------------------------

def _tfrecord_setup(tmp_path, with_class_file=True):
  expected = vf.make_sthv1(str(tmp_path / 'raw'))
  vf.make_tfrecord_from_frames(str(tmp_path / 'tfr'),
                               str(tmp_path / 'raw' / '20bn-something-something-v1'), expected)
  if not with_class_file:
    os.remove(tmp_path / 'tfr' / 'classes.txt')
  native = vf.make_config('sthv1', tmp_path / 'raw', tmp_path / 'out_native', num_classes=3)
  from_tfr = vf.make_config('sthv1', tmp_path / 'tfr', tmp_path / 'out_tfr', num_classes=3,
                            raw_format='tfrecord')
  return expected, native, from_tfr


def test_tfrecord_input_converts_to_the_same_dataset(tmp_path):
  expected, native, from_tfr = _tfrecord_setup(tmp_path)
  converter.prepare(native)
  summary = converter.prepare(from_tfr)
  assert summary['dataset'] == 'stm_sthv1' and summary['skipped'] == 0
  for split in expected.splits:
    assert vf.read_split(from_tfr, split) == vf.read_split(native, split)
  names = tfds.builder_from_directory(datasets.dataset_dir(from_tfr)).info.features['label'].names
  assert names == expected.classes


def test_tfrecord_class_names_from_records(tmp_path):
  expected, _, from_tfr = _tfrecord_setup(tmp_path, with_class_file=False)
  converter.prepare(from_tfr)
  names = tfds.builder_from_directory(datasets.dataset_dir(from_tfr)).info.features['label'].names
  assert names == expected.classes  # every class occurs in the fixture, named by clip/label/text


def test_tfrecord_reader_framing(tmp_path):
  payloads = [b'a' * 5, b'', b'xyz' * 100]
  path = vf.write_tfrecord(str(tmp_path / 'x.tfrecord'), payloads)
  offsets = tfrecord.index_file(path)
  assert [tfrecord.read_record(path, o) for o in offsets] == payloads
  assert tfrecord.crc32c(b'123456789') == 0xE3069283  # the standard CRC-32C check value


def test_corrupt_tfrecords_are_quarantined(tmp_path):
  _, _, from_tfr = _tfrecord_setup(tmp_path)
  tfr = tmp_path / 'tfr'
  # A torn file (the second record cut short), a file that is not TFRecord, a record without frames.
  good = vf.sequence_example([vf.jpeg(0), vf.jpeg(1)], 1, 'x1')
  data = open(vf.write_tfrecord(str(tfr / 'x'), [good, good]), 'rb').read()
  (tfr / 'train-torn.tfrecord').write_bytes(data[:len(data) - 20])
  (tfr / 'train-junk.tfrecord').write_bytes(b'not a tfrecord at all' * 10)
  vf.write_tfrecord(str(tfr / 'train-empty.tfrecord'), [vf.sequence_example([], 0, 'no_frames')])
  os.remove(tfr / 'x')
  converter.prepare(from_tfr)
  reasons = {row[2].rsplit('/', 1)[-1]: row[3] for row in _quarantine(from_tfr).values()}
  assert 'truncated TFRecord' in reasons['train-torn.tfrecord@' + str(len(data) // 2)]
  assert 'not a TFRecord' in reasons['train-junk.tfrecord@0']
  assert 'no frames' in reasons['train-empty.tfrecord@0']
  ids = [r['id'] for r in vf.read_split(from_tfr, 'train')]
  assert ids == [b'x1', b'101', b'102', b'103']  # file name order: 'train-torn' < 'train.tfrecord'


def test_tfrecord_label_out_of_range_is_an_error(tmp_path):
  tfr = tmp_path / 'tfr'
  path = vf.write_tfrecord(str(tfr / 'train.tfrecord'),
                           [vf.sequence_example([vf.jpeg(0)], 7, 'v7')])
  config = vf.make_config('sthv1', tfr, tmp_path / 'out', num_classes=3, raw_format='tfrecord')
  (tfr / 'classes.txt').write_text('a\nb\nc\n')
  with pytest.raises(common.AnnotationError, match=f'{path}:record at byte 0 .*label/index 7'):
    converter.prepare(config)


# --- the command line -----------------------------------------------------------------------------

def test_launch_prepare_command(tmp_path):
  vf.make_sthv2(str(tmp_path / 'raw'), corrupt=True)
  cmd = [sys.executable, 'launch.py', '--mode=prepare', '--config=configs/sthv2.py',
         f'--config.data.raw_dir={tmp_path / "raw"}', f'--config.data.data_dir={tmp_path / "out"}',
         '--config.data.num_classes=3', '--config.data.prepare_workers=2']
  result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'stm_sthv2 in' in result.stdout and '| train | 2 | 4 |' in result.stdout
  assert 'quarantine.tsv' in result.stdout
  assert len(tfds.data_source('stm_sthv2', data_dir=str(tmp_path / 'out'), split='train')) == 2


def test_benchmark_conversion_rows_smoke():
  import argparse  # pylint: disable=g-import-not-at-top
  from benchmarks import input_speed  # pylint: disable=g-import-not-at-top
  parser = argparse.ArgumentParser()
  input_speed.add_conversion_args(parser)
  args = parser.parse_args(['--conv-videos=1', '--conv-frames=3', '--conv-rounds=1',
                            '--conv-workers=-1'])
  rows = input_speed.conversion_rows(args)
  assert len(rows) == len(input_speed.SOURCES)
  assert all(r['videos_per_s'] > 0 and r['kib_per_frame'] > 0 for r in rows)
  assert '| Kinetics-400 |' in input_speed.storage_table(rows)
