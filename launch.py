"""The one entry point: `python launch.py --mode=<mode> --config=configs/<recipe>.py [--config.x=y ...]`."""

import logging

from absl import app
from absl import flags
from ml_collections import config_flags

# JAX logs at INFO each backend it does not find (e.g. "Unable to initialize backend 'tpu'").
logging.getLogger('jax._src.xla_bridge').setLevel(logging.WARNING)

MODES = ('summary', 'convert', 'prepare')

FLAGS = flags.FLAGS
flags.DEFINE_enum('mode', 'summary', MODES, 'What to run.')
config_flags.DEFINE_config_file('config', 'configs/sthv1.py', 'Recipe file; fields overridable.',
                                lock_config=True)
flags.DEFINE_string('input', None, 'convert: a .pth, .safetensors or .npz state dict.')
flags.DEFINE_string('output', None, 'convert: the Orbax checkpoint directory to write.')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  config = FLAGS.config
  if FLAGS.mode == 'summary':
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


if __name__ == '__main__':
  app.run(main)
