"""`launch.py --mode=summary`: the table and its closing JSON line."""

import json
import subprocess
import sys

from configs import tiny
from stm_jax.models import counting
from tests import jax_subprocess


def test_summary_command_ends_with_the_json_counts():
  result = subprocess.run(
      [sys.executable, 'launch.py', '--mode=summary', '--config=configs/tiny.py',
       '--config.model.temporal_module=cstm'],
      cwd=jax_subprocess.ROOT, capture_output=True, text=True, check=True)
  last = json.loads(result.stdout.strip().splitlines()[-1])
  config = tiny.get_config()
  config.model.temporal_module = 'cstm'
  expected = counting.summarize(config)
  assert last == {'params': expected['params'], 'macs': expected['macs']}
  assert 'stage 2' in result.stdout
