"""`launch.py --mode=summary`: the parameter and MAC table of the configured model.

Counted without running the model (stm_jax/models/counting.py says what is counted).
"""

import json
from typing import Any

import ml_collections

from stm_jax.models import counting


def format_table(config: ml_collections.ConfigDict, summary: dict[str, Any]) -> str:
  """A readable table of the summary, ending with the JSON line `{"params": ..., "macs": ...}`."""
  m = config.model
  depth = f'R{m.depth}' if not m.blocks else f'blocks {tuple(m.blocks)}'
  lines = [
      f'STM-ResNet {depth}, width {m.width}: temporal_module={m.temporal_module} '
      f'temporal_conv={m.temporal_conv} stages={tuple(m.stages)} '
      f'first_block_only={m.first_block_only}',
      f'input: 1 clip x {config.data.num_frames} frames x {config.data.crop_size}x'
      f'{config.data.crop_size}, {config.data.num_classes} classes',
      '',
      f'{"part":<10}{"params":>14}{"of which temporal":>20}{"GMACs":>10}',
  ]
  for name, row in summary['rows'].items():
    lines.append(f'{name:<10}{row["params"]:>14,}{row["temporal_params"]:>20,}'
                 f'{row["macs"] / 1e9:>10.3f}')
  temporal_total = sum(r['temporal_params'] for r in summary['rows'].values())
  lines.append(f'{"total":<10}{summary["params"]:>14,}{temporal_total:>20,}'
               f'{summary["macs"] / 1e9:>10.3f}')
  lines.append('(MACs of conv and dense layers; BN, pooling and element-wise ops are not counted)')
  lines.append(json.dumps({'params': summary['params'], 'macs': summary['macs']}))
  return '\n'.join(lines)


def main(config: ml_collections.ConfigDict) -> None:
  """`--mode=summary`: prints the table and the JSON line."""
  print(format_table(config, counting.summarize(config)))
