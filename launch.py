"""The one entry point: `python launch.py --mode=<mode> --config=configs/<recipe>.py [--config.x=y ...]`.

With no flags it runs the demo (configs/demo.py): synthetic videos, TSN vs CSTM vs CMM vs STM.
`MODES` maps each mode to the function it runs. A user's mistake (a bad config field, path, layout
or checkpoint) ends in one line `error: ...` and exit status 2; a bug keeps its traceback.
Commands on a run (eval, predict, visualize, export) take the model from the run's own
`config.json`; the command line overrides only the fields it names.
"""

import atexit
import logging as python_logging
import os
import sys
import tempfile
import time

from absl import app
from absl import flags
from absl import logging
import jax
from ml_collections import config_flags

from configs import demo as demo_recipe
from input_pipeline import errors
from input_pipeline import files
from input_pipeline.prepare import converter
from stm_jax.core import checkpointing
from stm_jax.core import config_check
from stm_jax.core import run_directory
from stm_jax.core import sharding
from stm_jax.core import weights
from stm_jax.demo import comparison
from stm_jax.evaluation import runner
from stm_jax.tools import convert
from stm_jax.tools import export
from stm_jax.tools import predict
from stm_jax.tools import stream
from stm_jax.tools import summary
from stm_jax.tools import timeline
from stm_jax.tools import visualize
from stm_jax.train import loop
from stm_jax.train import preemption

# JAX logs at INFO each backend it does not find (e.g. "Unable to initialize backend 'tpu'").
python_logging.getLogger('jax._src.xla_bridge').setLevel(python_logging.WARNING)
# Orbax logs every step of every save at INFO through absl's logger; keep its warnings only, less
# the two it gives for every read-only manager (evaluation and prediction open runs read-only).
_ORBAX_READ_ONLY_NOTES = ('Given directory is read only', 'read_only=True, setting')
python_logging.getLogger('absl').addFilter(
    lambda record: '/orbax/' not in record.pathname or (
        record.levelno >= python_logging.WARNING
        and not any(note in str(record.msg) for note in _ORBAX_READ_ONLY_NOTES)))

DEMO_WORKDIR = 'stm_demo'
# The default --config, found beside this file whatever the current directory.
_DEFAULT_RECIPE = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'configs', 'sthv1.py')
USER_ERROR_EXIT_CODE = 2
MODE_NAMES = ('demo', 'summary', 'convert', 'prepare', 'train', 'eval', 'predict', 'stream',
              'visualize', 'export')

FLAGS = flags.FLAGS


def _flag_error(e: Exception, argv: list[str]) -> str:
  """The `error:` line for a flag absl or ml_collections could not parse."""
  if isinstance(e, OSError):  # The --config file could not be loaded.
    given = next((a for a in argv if a.startswith('--config=')), '--config')
    path = given.partition('=')[2].split(':')[0]
    if path and not os.path.isfile(path):
      return f'{given}: no such file (recipes are in configs/)'
    return f'{given}: cannot load it as a config file ({str(e).splitlines()[0]})'
  if isinstance(e, (KeyError, AttributeError)):  # An override names a field the config lacks.
    key = str(e).strip('\'"')
    given = next((a.split('=')[0] for a in argv
                  if a.startswith('--config.') and key in a.split('=')[0].split('.')), '--config')
    return f'{given}: the config has no field {key!r} (every field is declared in configs/default.py)'
  return str(e)


def _exit_with_flag_error(e: Exception, argv: list[str]):
  print(f'error: {_flag_error(e, argv)}', file=sys.stderr)
  sys.exit(USER_ERROR_EXIT_CODE)


_FLAG_ERRORS = (flags.Error, OSError, KeyError, AttributeError)
flags.DEFINE_enum('mode', 'demo', MODE_NAMES, 'What to run.')
try:  # ml_collections applies the command line's overrides to the default file right here.
  config_flags.DEFINE_config_file('config', _DEFAULT_RECIPE, 'Recipe file; fields '
                                  'overridable (demo: configs/demo.py unless given).',
                                  lock_config=True)
except _FLAG_ERRORS as error:
  _exit_with_flag_error(error, sys.argv)
flags.DEFINE_string('input', None, 'convert: a .pth, .safetensors or .npz state dict. predict: a '
                    'video file, a folder of JPEG frames, or a folder of videos (searched '
                    'recursively). stream: a video file or a capture device (/dev/video0). '
                    'visualize: a video file.')
flags.DEFINE_string('output', None, 'convert: the weights directory to write. predict: '
                    'the CSV to write (default: <folder>/predictions.csv for a folder, none for '
                    'one video); with --timeline, the folder of the timeline files (default: the '
                    'current directory). visualize: the PNG (default: <video name>_stm.png). '
                    'export: the directory to create (must not exist).')
flags.DEFINE_string('checkpoint', None, 'predict, visualize, export: a training run directory '
                    '(its best, else latest checkpoint, config and class names) or weights '
                    'written by --mode=convert (model from --config).')
flags.DEFINE_string('workdir', None, 'train: the run directory (checkpoints); a rerun resumes it. '
                    'eval: the run whose checkpoint is evaluated (results go there too). '
                    f'demo: where it writes everything (default: {DEMO_WORKDIR}).')
flags.DEFINE_enum('eval_protocol', 'val', ('val', 'test'),
                  'eval, predict: val (1 clip, centre crop) or test (num_clips x num_crops views).')
flags.DEFINE_bool('timeline', False, 'predict: slide a clip window along one video and write '
                  '<video stem>_timeline.csv (top-5 per window) and _timeline.png into --output '
                  '(stm_jax/tools/timeline.py).')
flags.DEFINE_bool('annotate', False, 'predict --timeline: also write <video stem>_annotated.mp4, '
                  'the video with each moment\'s top class drawn on it (no audio).')
flags.DEFINE_float('window_s', timeline.WINDOW_S, 'predict --timeline: window length, seconds. '
                   'stream: the seconds the running clip score covers (frames are taken at '
                   'num_frames / window_s per second).')
flags.DEFINE_bool('realtime', False, 'stream: read a video file at its own speed (as a camera '
                  'gives frames), not as fast as it decodes.')
flags.DEFINE_bool('streaming', False, 'export: serialise the online model\'s streaming step '
                  '(state and one frame in, logits and state out) instead of the clip model.')
flags.DEFINE_float('stride_s', timeline.STRIDE_S, 'predict --timeline: seconds from one window '
                   'to the next.')
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


def _required(name: str, what: str) -> str:
  """The value of flag `name`, or a UserError saying this mode needs it."""
  value = FLAGS[name].value
  if not value:
    raise errors.UserError(f'--mode={FLAGS.mode} needs --{name}={what}')
  return value


def _command_line_config():
  """The config the flags describe: `--config` (configs/demo.py for the demo) + overrides."""
  if FLAGS.mode == 'demo' and not FLAGS['config'].present:
    return demo_recipe.get_config()
  return FLAGS.config


def _run_config(path: str):
  """The config of the run (or weights) at `path`, with the command line's overrides."""
  return run_directory.resolve_config(path, FLAGS.config,
                                      config_flags.get_override_values(FLAGS['config']))


def _start_distributed() -> bool:
  return sharding.maybe_initialize_distributed(FLAGS.distributed, FLAGS.coordinator_address,
                                        FLAGS.num_processes, FLAGS.process_id)


def _prepare(config) -> None:
  hosts = converter.Hosts()
  if _start_distributed():  # Every host of a pod runs the command: they share the shards.
    hosts = converter.Hosts(jax.process_index(), jax.process_count(),
                            checkpointing.all_processes_agree)
  converter.main(config, hosts)


def _demo(config) -> None:
  comparison.main(config, FLAGS.workdir or DEMO_WORKDIR)


def _train(config) -> None:
  workdir = _required('workdir', '<run directory>')
  _start_distributed()
  try:
    result = loop.train_and_evaluate(config, workdir)
  except loop.NonFiniteLossError as e:
    raise SystemExit(f'error: {e}') from None
  if result.preempted:
    saved = (f'checkpoint {result.saved_step} in {workdir}' if result.saved_step is not None
             else f'nothing saved in {workdir}')
    print(f'preempted at step {result.step} of {result.total_steps}: {saved}; rerun the same '
          'command to resume')
    raise SystemExit(preemption.PREEMPTED_EXIT_CODE)
  print(f'trained {result.step} steps in {workdir}')


def _checkpoint_step() -> int | str:
  step = FLAGS.checkpoint_step
  if step is None:
    return weights.LATEST
  if step != weights.BEST and not step.isdigit():
    raise errors.UserError(f'--checkpoint_step={step}: expected a step number or best')
  return step if step == weights.BEST else int(step)


def _eval(config) -> None:
  workdir = _required('workdir', '<run directory>')
  _start_distributed()
  runner.evaluate(config, workdir, FLAGS.eval_protocol, _checkpoint_step())


def _predict(config) -> None:
  if FLAGS.timeline:
    timeline.main(config, FLAGS.checkpoint, _required('input', '<video file>'), FLAGS.output,
                  window_s=FLAGS.window_s, stride_s=FLAGS.stride_s, annotate=FLAGS.annotate,
                  protocol=FLAGS.eval_protocol)
    return
  given = [f'--{name}' for name in ('annotate', 'window_s', 'stride_s') if FLAGS[name].present]
  if given:
    raise errors.UserError(f'{", ".join(given)}: for the timeline of a video only; add --timeline')
  predict.main(config, FLAGS.checkpoint, _required('input', '<video file or folder>'),
               FLAGS.output, FLAGS.eval_protocol)


def _stream(config) -> None:
  stream.main(config, FLAGS.checkpoint, _required('input', '<video file or /dev/video<N>>'),
              window_s=FLAGS.window_s, realtime=FLAGS.realtime)


def _visualize(config) -> None:
  visualize.main(config, FLAGS.checkpoint, _required('input', '<video file>'), FLAGS.output)


def _export(config) -> None:
  export.main(config, FLAGS.checkpoint, _required('output', '<new directory>'),
              streaming_step=FLAGS.streaming)


def _convert(config) -> None:
  convert.main(config, _required('input', '<weights file>'),
               _required('output', '<new weights directory>'))


# mode -> (the function it runs, the flag naming the run whose config.json describes the model).
MODES = {
    'demo': (_demo, None),
    'summary': (summary.main, None),
    'convert': (_convert, None),
    'prepare': (_prepare, None),
    'train': (_train, None),
    'eval': (_eval, 'workdir'),
    'predict': (_predict, 'checkpoint'),
    'stream': (_stream, 'checkpoint'),
    'visualize': (_visualize, 'checkpoint'),
    'export': (_export, 'checkpoint'),
}


def _log_to_file() -> None:
  """absl's INFO lines go to `<workdir>/<mode>.log`; the console keeps warnings and errors,
  unless `--verbosity` is given. A bucket's object cannot be appended to: for a workdir in a
  bucket the lines go to a local file, added to the bucket's log when the program exits."""
  if not FLAGS['verbosity'].present:
    logging.get_absl_handler().setLevel(python_logging.WARNING)
  if FLAGS.mode not in ('train', 'eval', 'demo') or not (FLAGS.workdir or FLAGS.mode == 'demo'):
    return
  workdir = files.resolve(FLAGS.workdir or DEMO_WORKDIR)
  if FLAGS.mode == 'eval' and not workdir.is_dir():  # Evaluation only writes into a run.
    return
  workdir.mkdir(parents=True, exist_ok=True)
  name = FLAGS.mode if FLAGS.process_id in (None, 0) else f'{FLAGS.mode}.{FLAGS.process_id}'
  log_path = workdir / f'{name}.log'
  local = files.local_path(log_path)
  if local is None:
    local = tempfile.NamedTemporaryFile(prefix='stm_', suffix='.log', delete=False).name
    atexit.register(_upload_log, local, log_path)
  handler = python_logging.FileHandler(local)
  handler.setFormatter(python_logging.Formatter(
      '%(asctime)s %(levelname)s %(filename)s:%(lineno)d] %(message)s'))
  handler.setLevel(python_logging.INFO)
  logging.get_absl_logger().addHandler(handler)
  logging.info('%s: %s', time.strftime('%Y-%m-%d %H:%M:%S'), ' '.join(sys.argv))


def _upload_log(local: str, log_path) -> None:
  """Adds the local log file's lines to the log `log_path` in a bucket (one whole write)."""
  with open(local, 'rb') as f:
    new = f.read()
  old = log_path.read_bytes() if log_path.exists() else b''
  files.write_bytes(log_path, old + new)
  os.remove(local)


def main(argv) -> None:
  if len(argv) > 1:
    raise errors.UserError(f'unexpected arguments: {" ".join(argv[1:])} (flags are --name=value)')
  run, run_flag = MODES[FLAGS.mode]
  try:  # A --config file that failed to load raises when first read.
    config = _command_line_config()
    config.to_dict()
  except OSError as e:
    raise errors.UserError(_flag_error(e, sys.argv)) from None
  if run_flag is not None:
    config = _run_config(_required(run_flag, '<run or weights directory>'))
  config_check.check(config, FLAGS.mode)
  if FLAGS.mode == 'train':  # Its refusals come before anything, even the log, is written.
    loop.check_workdir(config, _required('workdir', '<run directory>'),
                       check_lock=FLAGS.process_id in (None, 0))
  _log_to_file()
  run(config)


def _parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, with a bad flag or config override reported as one `error:` line."""
  try:
    return FLAGS(argv)
  except _FLAG_ERRORS as e:
    _exit_with_flag_error(e, argv)


def run_main(argv) -> None:
  """`main`, with a UserError printed as one `error:` line and exit status 2."""
  try:
    main(argv)
  except errors.UserError as e:
    print(f'error: {e}', file=sys.stderr, flush=True)
    sys.exit(USER_ERROR_EXIT_CODE)


if __name__ == '__main__':
  app.run(run_main, flags_parser=_parse_flags)
