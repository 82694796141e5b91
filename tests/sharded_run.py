"""A few train steps of the tiny model on synthetic batches, on however many (fake) CPU devices,
then an evaluation of the result with the test protocol (views of every video, last batch padded).

Run as a program (`python -m tests.sharded_run --devices=8 --out=x.npz`, optionally with
`--num_processes=2 --process_id=i --coordinator=127.0.0.1:PORT`) so that the device count and
`jax.distributed` are set before jax starts; `run()` is also called in-process on one device.
Process 0 writes the per-step losses, the final parameters and BN statistics and the per-video
eval scores to `--out`; every other process writes its own eval scores to `--out` + `.p<i>.npz`.
"""

import argparse
import os

import numpy as np

GLOBAL_BATCH = 16
STEPS = 3
# 11 videos x (2 clips x 3 crops) = 66 views: 5 global batches of 16, the last one padded.
EVAL_VIDEOS = 11


def tiny_config(**optim):
  """The tiny recipe with a global batch of 16 and the given `optim` overrides."""
  from configs import tiny  # pylint: disable=g-import-not-at-top
  config = tiny.get_config()
  config.batch_size = GLOBAL_BATCH
  config.optim.weight_decay = 5e-4
  # lr 0.01 (the paper's): 3 steps lower the loss by ~0.25. At 10x that the loss rises and the
  # runs amplify rounding differences (float reassociation) to ~1e-3.
  config.optim.base_lr = 0.04
  for k, v in optim.items():
    config.optim[k] = v
  return config


def batches(config, steps: int = STEPS) -> list[dict[str, np.ndarray]]:
  """Deterministic global batches of uint8 clips and labels."""
  rng = np.random.RandomState(1)
  shape = (config.batch_size, config.data.num_frames, config.data.crop_size,
           config.data.crop_size, 3)
  return [{'clips': rng.randint(0, 256, shape).astype(np.uint8),
           'label': rng.randint(0, config.data.num_classes, config.batch_size).astype(np.int32)}
          for _ in range(steps)]


def run(config, steps: int = STEPS) -> dict[str, np.ndarray]:
  """Trains `steps` steps over all devices; returns losses and flattened final variables."""
  import jax  # pylint: disable=g-import-not-at-top
  # pylint: disable=g-import-not-at-top
  from stm_jax import models
  from stm_jax.core import sharding
  from stm_jax.train import optim
  from stm_jax.train import train_state
  # pylint: enable=g-import-not-at-top
  mesh = sharding.make_mesh()
  model = models.create(config)
  tx = optim.create_optimizer(config, num_examples=config.batch_size * 100)
  state = train_state.init_train_state(model, tx, config, mesh)
  step = train_state.jit_train_step(model, tx, config, mesh)
  rows = config.batch_size // jax.process_count()
  begin = jax.process_index() * rows
  losses = []
  for batch in batches(config, steps):
    local = {k: v[begin:begin + rows] for k, v in batch.items()}
    state, metrics = step(state, sharding.global_batch(local, mesh))
    losses.append(metrics['loss'])
  out = {'loss': np.asarray([np.asarray(l.addressable_data(0)) for l in losses])}
  tree = {'params': state.params, 'batch_stats': state.batch_stats}
  for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
    out[jax.tree_util.keystr(path)] = np.asarray(leaf.addressable_data(0))
  out.update(evaluate_run(config, model, tree, mesh))
  return out


def evaluate_run(config, model, variables, mesh) -> dict[str, np.ndarray]:
  """Per-video test-protocol scores and labels of in-memory videos (every process gets all)."""
  # pylint: disable=g-import-not-at-top
  from input_pipeline import protocols
  from stm_jax.evaluation import runner
  from tests import clip_fixtures
  # pylint: enable=g-import-not-at-top
  config = config.copy_and_resolve_references()
  config.data.num_clips, config.data.num_crops = 2, 3
  source = clip_fixtures.source([5 + 3 * v for v in range(EVAL_VIDEOS)])
  for v, record in enumerate(source):
    record['label'] = v % config.data.num_classes
  scores, labels = runner.video_scores(variables, model, config, mesh, source,
                                       protocols.from_config(config, 'test'))
  return {'eval_scores': scores, 'eval_labels': labels}


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('--devices', type=int, default=1)
  parser.add_argument('--num_processes', type=int, default=1)
  parser.add_argument('--process_id', type=int, default=0)
  parser.add_argument('--coordinator', default='')
  parser.add_argument('--grad_accum_steps', type=int, default=1)
  parser.add_argument('--out', required=True)
  args = parser.parse_args()
  os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') +
                             f' --xla_force_host_platform_device_count={args.devices}')
  import jax  # pylint: disable=g-import-not-at-top
  jax.config.update('jax_platforms', 'cpu')
  if args.num_processes > 1:
    jax.distributed.initialize(coordinator_address=args.coordinator,
                               num_processes=args.num_processes, process_id=args.process_id)
  assert jax.device_count() == args.devices * args.num_processes, jax.devices()
  out = run(tiny_config(grad_accum_steps=args.grad_accum_steps))
  if jax.process_index() == 0:
    np.savez(args.out, **out)
  else:
    np.savez(f'{args.out}.p{jax.process_index()}.npz',
             **{k: v for k, v in out.items() if k.startswith('eval_')})


if __name__ == '__main__':
  main()
