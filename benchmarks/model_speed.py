"""Forward and train-step throughput of TSN, TSM, CSTM, CMM and STM, side by side in one run.

Prints a markdown table of clips/s per variant, each variant's ratio to TSN, and (with
`--torch`) the ratio to a PyTorch eager implementation of the same network on the same
machine. Rounds are interleaved across variants and the median round is reported, so that
a noisy shared machine affects every variant alike.

  python benchmarks/model_speed.py --batch=2 --frames=8 --size=224 --rounds=3 --torch

A variant may name the form of its channel-wise convs, e.g. `--variants=none,stm,stm:grouped`
compares both forms in one run (PyTorch is timed for plain variants only).
"""

import argparse
import datetime
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from configs import default
from stm_jax import models

VARIANTS = ('none', 'tsm', 'cstm', 'cmm', 'stm')


def _parse():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--batch', type=int, default=2)
  parser.add_argument('--frames', type=int, default=8)
  parser.add_argument('--size', type=int, default=224)
  parser.add_argument('--depth', type=int, default=50)
  parser.add_argument('--dtype', default='float32', choices=('float32', 'bfloat16'))
  parser.add_argument('--impl', default='auto', choices=('auto', 'shift', 'grouped'))
  parser.add_argument('--variants', default=','.join(VARIANTS))
  parser.add_argument('--steps', type=int, default=3, help='timed calls per round')
  parser.add_argument('--rounds', type=int, default=3)
  parser.add_argument('--torch', action='store_true', help='also time PyTorch eager')
  return parser.parse_args()


def _config(args, variant):
  temporal_module, _, impl = variant.partition(':')
  config = default.get_config()
  config.model.depth = args.depth
  config.model.temporal_module = temporal_module
  config.model.dtype = args.dtype
  config.model.channelwise_impl = impl or args.impl
  config.data.num_frames = args.frames
  config.data.crop_size = args.size
  return config


def jax_runners(config, batch):
  """Returns (forward, train_step) callables that each run one jitted call to completion."""
  module = models.create(config)
  t, size, classes = config.data.num_frames, config.data.crop_size, config.data.num_classes
  rng = np.random.default_rng(0)
  clips = jnp.asarray(rng.integers(0, 256, (batch, t, size, size, 3), np.uint8))
  labels = jnp.asarray(rng.integers(0, classes, (batch,), np.int32))
  variables = jax.jit(module.init)(jax.random.key(0), clips)
  tx = optax.sgd(0.01, momentum=0.9)
  state = {'params': variables['params'], 'batch_stats': variables['batch_stats'],
           'opt': tx.init(variables['params'])}

  forward = jax.jit(lambda v, x: module.apply(v, x, train=False))

  @jax.jit
  def train_step(state, x, y):
    def loss_fn(params):
      logits, updates = module.apply(
          {'params': params, 'batch_stats': state['batch_stats']}, x, train=True,
          rngs={'dropout': jax.random.key(0)}, mutable=['batch_stats'])
      return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), updates
    (_, updates), grads = jax.value_and_grad(loss_fn, has_aux=True)(state['params'])
    deltas, opt = tx.update(grads, state['opt'], state['params'])
    return {'params': optax.apply_updates(state['params'], deltas),
            'batch_stats': updates['batch_stats'], 'opt': opt}

  holder = {'state': state}

  def run_forward():
    jax.block_until_ready(forward(variables, clips))

  def run_train():
    holder['state'] = train_step(holder['state'], clips, labels)
    jax.block_until_ready(holder['state'])

  return run_forward, run_train


def torch_runners(config, batch):
  """The same pair of callables for the PyTorch eager reference network (float32, CPU/GPU)."""
  import torch
  from tests import torch_stm
  m = config.model
  device = 'cuda' if torch.cuda.is_available() else 'cpu'
  net = torch_stm.TorchSTMResNet(
      num_classes=config.data.num_classes, num_frames=config.data.num_frames,
      blocks=models.resnet.BLOCKS_BY_DEPTH[m.depth], temporal_module=m.temporal_module,
      dropout_rate=m.dropout_rate).to(device)
  autocast = torch.autocast(device, dtype=torch.bfloat16, enabled=m.dtype == 'bfloat16')
  t, size = config.data.num_frames, config.data.crop_size
  clips = torch.randint(0, 256, (batch, t, size, size, 3), device=device).float()
  labels = torch.randint(0, config.data.num_classes, (batch,), device=device)
  optimizer = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
  sync = torch.cuda.synchronize if device == 'cuda' else (lambda: None)

  def run_forward():
    net.eval()
    with torch.no_grad(), autocast:
      net(clips)
    sync()

  def run_train():
    net.train()
    optimizer.zero_grad()
    with autocast:
      loss = torch.nn.functional.cross_entropy(net(clips), labels)
    loss.backward()
    optimizer.step()
    sync()

  return run_forward, run_train


def _clips_per_second(fn, batch, steps):
  start = time.perf_counter()
  for _ in range(steps):
    fn()
  return batch * steps / (time.perf_counter() - start)


def main():
  args = _parse()
  variants = args.variants.split(',')
  runners = {}
  for variant in variants:
    config = _config(args, variant)
    runners[('jax', variant)] = jax_runners(config, args.batch)
    if args.torch and ':' not in variant:
      runners[('torch', variant)] = torch_runners(config, args.batch)
  for fns in runners.values():  # Compile and warm up.
    for fn in fns:
      fn()
      fn()
  rates = {key: ([], []) for key in runners}
  for _ in range(args.rounds):
    for key, fns in runners.items():
      for kind, fn in enumerate(fns):
        rates[key][kind].append(_clips_per_second(fn, args.batch, args.steps))
  median = {key: tuple(statistics.median(r) for r in pair) for key, pair in rates.items()}

  device = jax.devices()[0]
  print(f'# model_speed {datetime.date.today()} | {platform.node()} | jax {jax.__version__} '
        f'{device.platform}:{device.device_kind} | batch {args.batch} x {args.frames} frames x '
        f'{args.size}^2 | R{args.depth} | {args.dtype} | impl {models.create(_config(args, "stm")).channelwise_impl} '
        f'| median of {args.rounds} rounds x {args.steps} calls')
  header = '| model | forward clips/s | train clips/s | forward / TSN | train / TSN |'
  if args.torch:
    header += ' torch fwd clips/s | torch train clips/s | jax/torch fwd | jax/torch train |'
  print(header)
  print('|' + '---|' * (header.count('|') - 1))
  base = median[('jax', 'none')] if 'none' in variants else None
  for variant in variants:
    fwd, train = median[('jax', variant)]
    row = f'| {variant.replace("none", "tsn")} | {fwd:.2f} | {train:.2f} |'
    row += (f' {fwd / base[0]:.3f} | {train / base[1]:.3f} |' if base else ' - | - |')
    if args.torch and ':' in variant:
      row += ' - | - | - | - |'
    elif args.torch:
      tfwd, ttrain = median[('torch', variant)]
      row += f' {tfwd:.2f} | {ttrain:.2f} | {fwd / tfwd:.2f} | {train / ttrain:.2f} |'
    print(row)


if __name__ == '__main__':
  main()
