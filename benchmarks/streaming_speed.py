"""Online against offline inference at batch 1: the streaming step beside the clip models, one run.

For a label after each new frame an offline model must score the whole clip of the last T frames
again (T frames of work per frame); the online model's streaming step runs one frame through the
network with the previous frame's values carried in its state (models/streaming.py). Printed, as
a markdown table, per program: the frames a call takes in, the latency to a new frame's label
(one call run to completion: the median of the rounds, each the mean of `--calls` calls) and the
labels per second that sustains:

  stream step    causal model, 1 frame + state
  causal clip    causal model, the last T frames (the clip scored again)
  offline clip   offline STM, the last T frames (the clip scored again)

Rounds are interleaved across the programs, so a noisy shared machine slows all of them alike.

  PYTHONPATH=. python benchmarks/streaming_speed.py --depth=50 --frames=8 --size=224 --rounds=3
"""

import argparse
import datetime
import platform
import statistics
import time

import flax
import jax
import jax.numpy as jnp
import numpy as np

from configs import default
from stm_jax import models
from stm_jax.models import streaming


def _parse():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--depth', type=int, default=50)
  parser.add_argument('--frames', type=int, default=8)
  parser.add_argument('--size', type=int, default=224)
  parser.add_argument('--module', default='stm', help='temporal module (none, tsm, cstm, cmm, stm)')
  parser.add_argument('--dtype', default='auto', choices=('auto', 'float32', 'bfloat16'))
  parser.add_argument('--calls', type=int, default=5, help='timed calls per round')
  parser.add_argument('--rounds', type=int, default=3)
  return parser.parse_args()


def _config(args, causal):
  config = default.get_config()
  config.model.depth = args.depth
  config.model.temporal_module = args.module
  config.model.dtype = args.dtype
  config.model.causal = causal
  config.data.num_frames = args.frames
  config.data.crop_size = args.size
  return config


def runners(args):
  """{name: (a callable running one call to completion, frames it takes in)}."""
  rng = np.random.default_rng(0)
  t, size = args.frames, args.size
  clip = jnp.asarray(rng.integers(0, 256, (1, t, size, size, 3), np.uint8))
  frame = clip[:, 0]
  result = {}
  for name, causal in (('causal clip', True), ('offline clip', False)):
    config = _config(args, causal)
    model = models.create(config)
    variables = jax.jit(lambda m=model, c=config: models.init_variables(m, c))()
    forward = jax.jit(lambda v, x, m=model: m.apply(v, x, train=False))
    result[name] = (lambda f=forward, v=variables: f(v, clip).block_until_ready(), t)
    if causal:
      step = streaming.create_step(config)
      run = jax.jit(step)
      holder = {'state': step.initial_state(variables, 1, size)}

      def stream_call(run=run, v=variables, holder=holder):
        logits, _, holder['state'] = run(v, holder['state'], frame)
        logits.block_until_ready()
      result['stream step'] = (stream_call, 1)
  return dict(sorted(result.items(), key=lambda kv: ('stream step', 'causal clip',
                                                     'offline clip').index(kv[0])))


def main():
  args = _parse()
  programs = runners(args)
  for call, _ in programs.values():  # Compile and warm up.
    call()
    call()
  times = {name: [] for name in programs}
  for _ in range(args.rounds):
    for name, (call, _) in programs.items():
      start = time.perf_counter()
      for _ in range(args.calls):
        call()
      times[name].append((time.perf_counter() - start) / args.calls)
  dtype = models.compute_dtype(args.dtype)
  print(f'# Streaming speed, {datetime.date.today()}: {args.module.upper()}-ResNet-{args.depth}, '
        f'T={args.frames}, {args.size}^2, {dtype}, batch 1; {jax.default_backend()} '
        f'({jax.devices()[0].device_kind}), {platform.processor() or platform.machine()}; '
        f'jax {jax.__version__}, flax {flax.__version__}; median of {args.rounds} rounds of '
        f'{args.calls} calls\n')
  print('| program | frames per call | latency to a new frame\'s label (ms) | labels/s | '
        'vs stream step |')
  print('|---|---|---|---|---|')
  base = statistics.median(times['stream step'])
  for name, (_, frames) in programs.items():
    latency = statistics.median(times[name])
    print(f'| {name} | {frames} | {latency * 1e3:.1f} | {1 / latency:.1f} | '
          f'{latency / base:.2f}x |')


if __name__ == '__main__':
  main()
