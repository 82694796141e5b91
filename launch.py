"""The one entry point: `python launch.py --mode=<mode> --config=configs/<recipe>.py [--config.x=y ...]`.

With no flags it runs the demo (configs/demo.py): synthetic videos, TSN vs CSTM vs CMM vs STM.
"""

import logging

from absl import app
from absl import flags
from ml_collections import config_flags

# JAX logs at INFO each backend it does not find (e.g. "Unable to initialize backend 'tpu'").
logging.getLogger('jax._src.xla_bridge').setLevel(logging.WARNING)
# Orbax logs every step of every save at INFO through absl's logger; keep its warnings only.
logging.getLogger('absl').addFilter(
    lambda record: record.levelno >= logging.WARNING or '/orbax/' not in record.pathname)

MODES = ('demo', 'summary', 'convert', 'prepare', 'train', 'eval', 'predict', 'visualize',
         'export')
DEMO_WORKDIR = 'stm_demo'
# Exit status of a run stopped by SIGTERM after its checkpoint (128 + SIGTERM): rerun to resume.
PREEMPTED_EXIT_CODE = 143

FLAGS = flags.FLAGS
flags.DEFINE_enum('mode', 'demo', MODES, 'What to run.')
config_flags.DEFINE_config_file('config', 'configs/sthv1.py', 'Recipe file; fields overridable '
                                '(demo: configs/demo.py unless given).', lock_config=True)
flags.DEFINE_string('input', None, 'convert: a .pth, .safetensors or .npz state dict. predict: a '
                    'video file, a folder of JPEG frames, or a folder of videos (searched '
                    'recursively). visualize: a video file.')
flags.DEFINE_string('output', None, 'convert: the Orbax checkpoint directory to write. predict: '
                    'the CSV to write (default: <folder>/predictions.csv for a folder, none for '
                    'one video). visualize: the PNG (default: <video name>_stm.png). export: the '
                    'directory to create (must not exist).')
flags.DEFINE_string('checkpoint', None, 'predict, visualize, export: a training run directory '
                    '(its best, else latest checkpoint, config and class names) or weights '
                    'written by --mode=convert (model from --config).')
flags.DEFINE_string('workdir', None, 'train: the run directory (checkpoints); a rerun resumes it. '
                    'eval: the run whose checkpoint is evaluated (results go there too). '
                    f'demo: where it writes everything (default: {DEMO_WORKDIR}).')
flags.DEFINE_enum('eval_protocol', 'val', ('val', 'test'),
                  'eval, predict: val (1 clip, centre crop) or test (num_clips x num_crops views).')
flags.DEFINE_string('checkpoint_step', None, 'eval: the checkpoint to evaluate: a step number, '
                   'or best (the best validation top-1 kept during training); default: latest.')
flags.DEFINE_enum('distributed', 'auto', ('auto', 'yes', 'no'),
                  'jax.distributed.initialize() before training: yes, no, or auto (when the '
                  'environment shows several processes: SLURM, Open MPI, TPU VMs, '
                  'JAX_COORDINATOR_ADDRESS).')
flags.DEFINE_string('coordinator_address', None,
                    'Multi-process runs outside SLURM/TPU/MPI: host:port of process 0 (on all).')
flags.DEFINE_integer('num_processes', None, 'Multi-process runs: how many processes in all.')
flags.DEFINE_integer('process_id', None, 'Multi-process runs: this process (0 .. num_processes-1).')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  config = FLAGS.config
  if FLAGS.mode == 'demo':
    from stm_jax import demo
    if not FLAGS['config'].present:
      from configs import demo as demo_config
      config = demo_config.get_config()
    demo.main(config, FLAGS.workdir or DEMO_WORKDIR)
  elif FLAGS.mode in ('predict', 'visualize', 'export'):
    _inference_mode(config)
  elif FLAGS.mode == 'summary':
    from stm_jax import summary
    summary.main(config)
  elif FLAGS.mode == 'convert':
    from stm_jax import convert
    if not FLAGS.input or not FLAGS.output:
      raise app.UsageError('--mode=convert needs --input=<weights> and --output=<checkpoint dir>')
    convert.main(config, FLAGS.input, FLAGS.output)
  elif FLAGS.mode == 'prepare':
    from input_pipeline import prepare
    prepare.main(config)
  elif FLAGS.mode in ('train', 'eval'):
    if not FLAGS.workdir:
      raise app.UsageError(f'--mode={FLAGS.mode} needs --workdir=<run directory>')
    from stm_jax import sharding
    sharding.maybe_initialize_distributed(FLAGS.distributed, FLAGS.coordinator_address,
                                          FLAGS.num_processes, FLAGS.process_id)
    if FLAGS.mode == 'eval':
      from stm_jax import evaluate
      step = FLAGS.checkpoint_step
      if step is not None and step != 'best':
        if not step.isdigit():
          raise app.UsageError(f'--checkpoint_step={step}: expected a step number or best')
        step = int(step)
      evaluate.main(config, FLAGS.workdir, FLAGS.eval_protocol, step)
      return
    from stm_jax import trainer
    try:
      result = trainer.train_and_evaluate(config, FLAGS.workdir)
    except trainer.NonFiniteLossError as e:
      raise SystemExit(f'error: {e}') from None
    if result.preempted:
      print(f'preempted at step {result.step} of {result.total_steps}: checkpoint saved in '
            f'{FLAGS.workdir}; rerun the same command to resume')
      raise SystemExit(PREEMPTED_EXIT_CODE)
    print(f'trained {result.step} steps in {FLAGS.workdir}')


def _inference_mode(config) -> None:
  """predict / visualize / export: a trained model applied to videos, or serialised."""
  needs_input = FLAGS.mode in ('predict', 'visualize')
  if not FLAGS.checkpoint or (needs_input and not FLAGS.input) or (
      FLAGS.mode == 'export' and not FLAGS.output):
    what = '--input=<video file or folder>' if needs_input else '--output=<new directory>'
    raise app.UsageError(f'--mode={FLAGS.mode} needs --checkpoint=<run or weights directory> '
                         f'and {what}')
  try:
    if FLAGS.mode == 'predict':
      from stm_jax import predict
      predict.main(config, FLAGS.checkpoint, FLAGS.input, FLAGS.output, FLAGS.eval_protocol)
    elif FLAGS.mode == 'visualize':
      from stm_jax import visualize
      visualize.main(config, FLAGS.checkpoint, FLAGS.input, FLAGS.output)
    else:
      from stm_jax import export
      export.main(config, FLAGS.checkpoint, FLAGS.output)
  except (FileNotFoundError, FileExistsError, ValueError) as e:
    raise SystemExit(f'error: {e}') from None


if __name__ == '__main__':
  app.run(main)
