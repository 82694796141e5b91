"""Training throughput of the real loop: the sharded train step fed by the real grain pipeline.

Builds an in-memory source of synthetic videos (256x340 JPEG frames, as the converter stores them),
the train pipeline of `input_pipeline/pipeline.py` and the jitted step of `stm_jax/train/train_state.py`, then
times `--steps` steps after `--warmup` and prints one markdown row: clips/s, step time, the
fraction of time spent waiting for data, and peak memory (host RSS; device peak where the
backend reports it).

  PYTHONPATH=. python benchmarks/train_speed.py --batch=2 --frames=8 --size=224 --steps=5
"""

import argparse
import datetime
import resource
import time

import jax
import numpy as np

from benchmarks import input_pipeline_speed
from configs import default
from input_pipeline import pipeline
from stm_jax import models
from stm_jax.core import sharding
from stm_jax.train import optim
from stm_jax.train import train_state


def _parse():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--batch', type=int, default=2)
  parser.add_argument('--frames', type=int, default=8)
  parser.add_argument('--size', type=int, default=224)
  parser.add_argument('--module', default='stm')
  parser.add_argument('--dtype', default='float32', choices=('float32', 'bfloat16'))
  parser.add_argument('--videos', type=int, default=16)
  parser.add_argument('--frames_per_video', type=int, default=48)
  parser.add_argument('--workers', type=int, default=0, help='grain worker processes')
  parser.add_argument('--warmup', type=int, default=2)
  parser.add_argument('--steps', type=int, default=5)
  return parser.parse_args()


def synthetic_source(num_videos: int, frames_per_video: int, num_classes: int) -> list[dict]:
  """Video records as the converter stores them (256x340 JPEG frames), in memory."""
  rng = np.random.default_rng(0)
  return [{'id': str(i), 'label': i % num_classes, 'num_frames': frames_per_video, 'fps': 12.0,
           'frames': input_pipeline_speed.synthetic_frames(frames_per_video, rng)}
          for i in range(num_videos)]


def measure(config, source, warmup: int, steps: int) -> dict[str, float | str]:
  """Times `steps` steps of the real loop (grain pipeline + jitted sharded step) after
  `warmup`: clips/s, step time, data-wait fraction, peak host and device memory."""
  mesh = sharding.make_mesh()
  model = models.create(config)
  tx = optim.create_optimizer(config, len(source))
  state = train_state.init_train_state(model, tx, config, mesh)
  step_fn = train_state.jit_train_step(model, tx, config, mesh)
  data = iter(pipeline.create_dataset(source, config, 'train'))
  wait = compute = 0.0
  for i in range(warmup + steps):
    start = time.perf_counter()
    batch = sharding.global_batch(next(data), mesh)
    loaded = time.perf_counter()
    state, metrics = step_fn(state, batch)
    jax.block_until_ready(metrics)
    done = time.perf_counter()
    if i >= warmup:
      wait += loaded - start
      compute += done - loaded
  total = wait + compute
  stats = jax.devices()[0].memory_stats() or {}
  return {'clips_per_s': config.batch_size * steps / total, 'step_time_s': total / steps,
          'data_wait_fraction': wait / total,
          'host_peak_gib': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
          'device_peak': (f'{stats["peak_bytes_in_use"] / 2**30:.2f} GiB'
                          if 'peak_bytes_in_use' in stats else 'n/a')}


def main():
  args = _parse()
  config = default.get_config()
  config.batch_size = args.batch
  config.model.temporal_module = args.module
  config.model.dtype = args.dtype
  config.data.num_frames = args.frames
  config.data.crop_size = args.size
  config.data.num_workers = args.workers
  source = synthetic_source(args.videos, args.frames_per_video, config.data.num_classes)
  m = measure(config, source, args.warmup, args.steps)
  device = jax.devices()[0]
  print(f'# train_speed {datetime.date.today()} | jax {jax.__version__} '
        f'{device.platform}:{device.device_kind} x{jax.device_count()} | {args.module} R50 | '
        f'batch {args.batch} x {args.frames} x {args.size}^2 | {args.dtype} | '
        f'{args.workers} grain workers | {args.steps} steps after {args.warmup}')
  print('| clips/s | step time (s) | data-wait fraction | host peak RSS | device peak |')
  print('|---|---|---|---|---|')
  print(f'| {m["clips_per_s"]:.3f} | {m["step_time_s"]:.3f} | {m["data_wait_fraction"]:.4f} | '
        f'{m["host_peak_gib"]:.2f} GiB | {m["device_peak"]} |')


if __name__ == '__main__':
  main()
