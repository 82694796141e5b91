"""The training run's logs: TensorBoard events, metrics.jsonl, curves.png, the progress bar, and
resume without double logging."""

import json
import math
import os

import numpy as np
import pytest
from tensorboard.backend.event_processing import event_accumulator

from stm_jax.train import run_log


def _scalars(workdir):
  """{tag: [(step, value)]} as TensorBoard shows the run (purged events left out)."""
  acc = event_accumulator.EventAccumulator(os.path.join(workdir, 'tensorboard'),
                                           size_guidance={event_accumulator.SCALARS: 0})
  acc.Reload()
  return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()['scalars']}


def _run(workdir, start, stop, total=10, evals=(), offset=0.0):
  """Logs steps start+1..stop as a trainer would (train loss = step + offset)."""
  log = run_log.RunLog(str(workdir), total, start, enabled=True)
  for step in range(start + 1, stop + 1):
    log.train(step, {'loss': step + offset, 'top1': step / 100, 'lr': np.float32(0.5)})
    log.advance(step)
    if step in evals:
      log.eval(step, {'top1': step / 10 + offset, 'top5': 0.9, 'per_class': [0.1, 0.2],
                      'confusion': None})
  return log


def test_writes_tensorboard_scalars_jsonl_and_png(tmp_path):
  log = _run(tmp_path, 0, 4, evals=(2, 4))
  log.close()
  scalars = _scalars(tmp_path)
  assert set(scalars) == {'train/loss', 'train/top1', 'train/lr', 'val/top1', 'val/top5'}
  assert scalars['train/loss'] == [(1, 1.0), (2, 2.0), (3, 3.0), (4, 4.0)]
  assert dict(scalars['val/top1']) == pytest.approx({2: 0.2, 4: 0.4})
  records = run_log.read_metrics(str(tmp_path))
  assert [(r['step'], r['split']) for r in records] == [
      (1, 'train'), (2, 'train'), (2, 'val'), (3, 'train'), (4, 'train'), (4, 'val')]
  assert records[0]['loss'] == 1.0 and records[0]['lr'] == 0.5 and records[0]['top1'] == 0.01
  assert 'per_class' not in records[2] and 'confusion' not in records[2]
  assert all(isinstance(r['time'], float) for r in records)
  with open(tmp_path / 'curves.png', 'rb') as f:
    png = f.read()
  assert png.startswith(b'\x89PNG\r\n\x1a\n') and len(png) > 10_000
  assert not [n for n in os.listdir(tmp_path) if '.tmp' in n]  # Atomic writes left no temp file.


def test_resume_drops_lines_and_purges_events_after_the_checkpoint(tmp_path):
  # First run: logs up to step 6, "killed" after its checkpoint at step 4 (not closed cleanly:
  # only the writer's flush happened).
  first = _run(tmp_path, 0, 6, evals=(3, 6))
  first._writer.close()  # pylint: disable=protected-access
  first._file.close()  # pylint: disable=protected-access
  first.bar.close()
  # Second run resumes at 4 and redoes 5..8 with other values (loss = step + 100).
  second = _run(tmp_path, 4, 8, evals=(6, 8), offset=100.0)
  second.close()
  records = run_log.read_metrics(str(tmp_path))
  train = [(r['step'], r['loss']) for r in records if r['split'] == 'train']
  assert train == [(1, 1), (2, 2), (3, 3), (4, 4), (5, 105), (6, 106), (7, 107), (8, 108)]
  val = [(r['step'], r['top1']) for r in records if r['split'] == 'val']
  assert [s for s, _ in val] == [3, 6, 8]
  assert dict(val) == pytest.approx({3: 0.3, 6: 100.6, 8: 100.8})
  scalars = _scalars(tmp_path)
  assert scalars['train/loss'] == train
  assert [s for s, _ in scalars['val/top1']] == [3, 6, 8]
  assert dict(scalars['val/top1']) == pytest.approx(dict(val))
  assert len(os.listdir(tmp_path / 'tensorboard')) == 2  # One event file per run.


def test_a_restart_within_the_same_second_keeps_the_earlier_event_file(tmp_path, monkeypatch):
  monkeypatch.setattr(run_log.time, 'time', lambda: 1_700_000_000.5)  # Names event files.
  first = _run(tmp_path, 0, 3)
  first.close()
  second = _run(tmp_path, 2, 4, offset=100.0)
  second.close()
  assert _scalars(tmp_path)['train/loss'] == [(1, 1.0), (2, 2.0), (3, 103.0), (4, 104.0)]


def test_truncated_last_line_is_skipped_and_dropped_on_resume(tmp_path):
  _run(tmp_path, 0, 3).close()
  path = tmp_path / 'metrics.jsonl'
  with open(path, 'a', encoding='utf-8') as f:
    f.write('{"step": 4, "split": "train", "lo')  # Killed mid-write.
  assert [r['step'] for r in run_log.read_metrics(str(tmp_path))] == [1, 2, 3]
  _run(tmp_path, 3, 4).close()
  assert [r['step'] for r in run_log.read_metrics(str(tmp_path))] == [1, 2, 3, 4]
  assert path.read_text(encoding='utf-8').count('\n') == 4


def test_non_finite_values_are_written_as_null(tmp_path):
  log = run_log.RunLog(str(tmp_path), 10, 0, enabled=True)
  log.train(1, {'loss': float('nan'), 'grad_norm': np.float32('inf'), 'top1': 0.5})
  log.close()
  line = (tmp_path / 'metrics.jsonl').read_text(encoding='utf-8')
  assert 'NaN' not in line and 'Infinity' not in line
  record = json.loads(line)
  assert record['loss'] is None and record['grad_norm'] is None and record['top1'] == 0.5
  assert math.isnan(_scalars(tmp_path)['train/loss'][0][1])  # TensorBoard keeps the NaN.


def test_reserved_metric_names_are_refused(tmp_path):
  log = run_log.RunLog(str(tmp_path), 10, 0, enabled=True)
  with pytest.raises(ValueError, match="'step'"):
    log.train(1, {'step': 3.0})
  log.close()


def test_disabled_writes_nothing(tmp_path, capsys):
  workdir = tmp_path / 'run'
  log = _run(workdir, 0, 3, evals=(3,))
  log.close()
  disabled = tmp_path / 'other'
  log = run_log.RunLog(str(disabled), 10, 0, enabled=False)
  log.train(1, {'loss': 1.0})
  log.advance(1)
  log.eval(1, {'top1': 0.5})
  log.plot()
  log.close()
  assert not disabled.exists()
  capsys.readouterr()
  log = run_log.RunLog(str(workdir), 10, 3, enabled=False)
  log.close()
  assert capsys.readouterr().err == ''
  assert len(run_log.read_metrics(str(workdir))) == 4


def test_progress_bar_counts_from_the_start_step(tmp_path, capsys):
  log = run_log.RunLog(str(tmp_path), 20, 5, enabled=True)
  assert (log.bar.total, log.bar.n) == (20, 5)
  log.train(6, {'loss': 1.25, 'top1': 0.5})
  log.advance(6)
  log.advance(7)
  assert log.bar.n == 7
  assert log.bar.postfix == 'loss=1.25, top1=0.5'
  log.eval(7, {'top1': 0.75})
  log.close()
  captured = capsys.readouterr()
  assert captured.out == ''
  assert '7/20' in captured.err
  assert 'step 7 val: top1 0.75' in captured.err


def test_curves_need_something_to_draw(tmp_path):
  assert not run_log.plot_curves([], str(tmp_path / 'curves.png'))
  assert not (tmp_path / 'curves.png').exists()
  records = [{'step': 1, 'split': 'val', 'top1': 0.5, 'top5': None}]
  assert run_log.plot_curves(records, str(tmp_path / 'curves.png'))
