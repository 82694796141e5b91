"""benchmarks/accelerator_report.py in its reduced (CPU) form: the report's table is complete."""

import re
import subprocess
import sys

from tests import jax_subprocess


def test_reduced_report_has_every_row(tmp_path, tmp_path_factory):
  out = tmp_path / 'report.md'
  result = subprocess.run(
      [sys.executable, 'benchmarks/accelerator_report.py', '--reduced', '--rounds=1',
       '--steps=2', f'--out={out}'], cwd=jax_subprocess.ROOT,
      env=jax_subprocess.env(tmp_path_factory.getbasetemp() / 'jax_cache'),
      capture_output=True, text=True, timeout=600, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  text = out.read_text()
  assert text in result.stdout
  speed_part, loop_part = text.split('| training loop |')
  speed = re.findall(r'^\| (TSN|CSTM|CMM|STM) \| (\d+) \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \| '
                     r'([\d.]+) \|$', speed_part, re.M)
  assert sorted((m, int(b)) for m, b, *_ in speed) == sorted(
      (m, 2) for m in ('TSN', 'CSTM', 'CMM', 'STM'))
  for model, _, fwd, train, fwd_ratio, train_ratio in speed:
    assert float(fwd) > 0 and float(train) > 0
    if model == 'TSN':
      assert fwd_ratio == train_ratio == '1.000'
  loop = re.findall(r'^\| (TSN|STM) \| 2 \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \| (.+) \|$',
                    loop_part, re.M)
  assert [m for m, *_ in loop] == ['TSN', 'STM']
  for _, clips, step, wait, _ in loop:
    assert float(clips) > 0 and float(step) > 0 and 0 <= float(wait) <= 1
