"""One command for an accelerator: model speed of TSN/CSTM/CMM/STM and the real training loop.

Writes one markdown report (and prints it): forward and train-step clips/s of each variant at two
batch sizes, each beside TSN's (rounds interleaved across variants, median reported, so a noisy
machine affects all alike), then the real loop (grain pipeline feeding the sharded jitted step) on
synthetic video records: clips/s, step time, the fraction of time spent waiting for data, peak
device memory.

  PYTHONPATH=. python benchmarks/accelerator_report.py --out=accelerator_report.md
      # full: STM-ResNet-50 family, 8 x 224^2, bfloat16, batches 16 and 32 (at most ~8 min on a GPU)
  PYTHONPATH=. python benchmarks/accelerator_report.py --reduced --out=/tmp/report.md
      # CPU: a width-16 one-block network, 4 x 32^2, batch 2 (the tests run this)
"""

import argparse
import datetime
import os
import platform
import statistics
import time

import jax

from benchmarks import model_speed
from benchmarks import train_speed
from configs import default
from input_pipeline import files
from input_pipeline import pipeline
from stm_jax import models
from stm_jax.models import temporal

VARIANTS = ('none', 'cstm', 'cmm', 'stm')


def _parse():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--reduced', action='store_true', help='tiny sizes, for CPUs and tests')
  parser.add_argument('--out', default='accelerator_report.md')
  parser.add_argument('--rounds', type=int, default=3)
  parser.add_argument('--steps', type=int, default=5, help='timed calls per round')
  return parser.parse_args()


def _config(reduced: bool, temporal_module: str, batch: int):
  config = default.get_config()
  config.model.temporal_module = temporal_module
  config.batch_size = batch
  if reduced:
    config.model.width, config.model.blocks, config.model.cmm_reduction = 16, (1, 1, 1, 1), 4
    config.model.dtype = 'float32'
    config.data.num_frames, config.data.crop_size, config.data.short_side = 4, 32, 40
  else:
    config.model.dtype = 'bfloat16'
  return config


def model_speed_rows(reduced: bool, batches: tuple[int, ...], rounds: int, steps: int):
  """(variant, batch) -> (forward clips/s, train clips/s), medians over interleaved rounds."""
  runners = {(v, b): model_speed.jax_runners(_config(reduced, v, b), b)
             for b in batches for v in VARIANTS}
  for fns in runners.values():  # Compile and warm up.
    for fn in fns:
      fn()
      fn()
  rates = {key: ([], []) for key in runners}
  for _ in range(rounds):
    for (variant, batch), fns in runners.items():
      for kind, fn in enumerate(fns):
        start = time.perf_counter()
        for _ in range(steps):
          fn()
        rates[(variant, batch)][kind].append(batch * steps / (time.perf_counter() - start))
  return {key: tuple(statistics.median(r) for r in pair) for key, pair in rates.items()}


def report(reduced: bool, rounds: int, steps: int) -> str:
  """The markdown report (see the module docstring)."""
  batches = (2,) if reduced else (16, 32)
  device = jax.devices()[0]
  example = _config(reduced, 'stm', batches[0])
  lines = [f'# accelerator_report {datetime.date.today()} | {platform.node()} | jax '
           f'{jax.__version__} | {device.platform}:{device.device_kind} x{jax.device_count()} | '
           f'{"reduced (width 16, 1 block a stage)" if reduced else "ResNet-50"} | '
           f'{example.data.num_frames} x {example.data.crop_size}^2 | {example.model.dtype} | '
           f'median of {rounds} rounds x {steps} calls', '',
           '| model | batch | forward clips/s | train clips/s | forward / TSN | train / TSN |',
           '|---|---:|---:|---:|---:|---:|']
  speed = model_speed_rows(reduced, batches, rounds, steps)
  for batch in batches:
    base = speed[('none', batch)]
    for variant in VARIANTS:
      fwd, train = speed[(variant, batch)]
      lines.append(f'| {temporal.TEMPORAL_MODULES[variant].display_name} | {batch} | {fwd:.2f} | '
                   f'{train:.2f} | {fwd / base[0]:.3f} | {train / base[1]:.3f} |')
  lines += ['', '| training loop | batch | clips/s | step time (s) | data-wait fraction | '
                'device peak |', '|---|---:|---:|---:|---:|---:|']
  for variant in ('none', 'stm'):
    config = _config(reduced, variant, batches[-1])
    source = train_speed.synthetic_source(16 if reduced else 64, 48, config.data.num_classes)
    m = train_speed.measure(config, source, warmup=2, steps=steps)
    lines.append(f'| {temporal.TEMPORAL_MODULES[variant].display_name} | {config.batch_size} | '
                 f'{m["clips_per_s"]:.2f} | {m["step_time_s"]:.3f} | '
                 f'{m["data_wait_fraction"]:.3f} | {m["device_peak"]} |')
  impl = models.create(example).channelwise_impl
  workers, threads = pipeline.loader_size(
      int(example.data.num_workers), int(example.data.num_threads),
      accelerator=jax.default_backend() != 'cpu', cores=os.cpu_count() or 1)
  lines += ['', f'channel-wise convs: {impl}; loader: data.num_workers='
            f'{example.data.num_workers}, data.num_threads={example.data.num_threads} '
            f'({workers} processes x {threads} threads on this {os.cpu_count()}-core host)']
  return '\n'.join(lines) + '\n'


def main():
  args = _parse()
  text = report(args.reduced, args.rounds, args.steps)
  with files.atomic_write(args.out, encoding='utf-8') as f:
    f.write(text)
  print(text, end='')


if __name__ == '__main__':
  main()
