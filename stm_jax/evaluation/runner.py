"""`launch.py --mode=eval`: a checkpoint of a run, evaluated under an eval protocol.

The protocols (val: 1 view; test: `num_clips x num_crops` views) are defined once, in
input_pipeline/protocols.py. The eval step (jitted, `train=False`) returns the softmax scores of
every view of the global batch, replicated, so every process sees every row; each process averages
them per video on the host (metrics.VideoScores).

Process 0 writes `<workdir>/eval_<protocol>_step<N>/`: `metrics.json`, `predictions.csv` and
`confusion.png` (reports.py), and prints the accuracy beside the protocol's cost. `metrics.json`
records every setting that changes the numbers: protocol, views (clips x crops, crop kind), crop
size, short side, frames, split, checkpoint step and which checkpoint, the config hash
(`config_hash`: every field but those that cannot change a score, e.g. the batch size or the
optimizer), and the fields that differ from the run's config.json. The folder is never another
combination's: the plain name holds the run's own settings, and an evaluation with other settings
(or whose plain folder holds other ones) goes to `eval_<protocol>_step<N>_<config hash[:8]>`;
rerunning the same combination rewrites its own folder.

The prepared split's class count (its info) must be the run's `data.num_classes`, and every label
read must be below it: both are errors naming the numbers, before any result is written.
"""

import functools
import hashlib
import json
import os
from typing import Any, Callable, Iterable, Sequence

from absl import logging
import flax.linen as nn
import jax
import ml_collections
import numpy as np

from input_pipeline import datasets
from input_pipeline import errors
from input_pipeline import files
from input_pipeline import pipeline
from input_pipeline import protocols
from stm_jax import models
from stm_jax.core import config_check
from stm_jax.core import run_directory
from stm_jax.core import sharding
from stm_jax.core import weights as weights_lib
from stm_jax.evaluation import metrics as metrics_lib
from stm_jax.evaluation import reports

Batch = dict[str, Any]
METRICS_FILE = 'metrics.json'
PREDICTIONS_FILE = 'predictions.csv'
CONFUSION_FILE = 'confusion.png'


# --- device ------------------------------------------------------------------------------------

def class_scores(variables: dict[str, Any], clips: jax.Array, *, model: nn.Module) -> jax.Array:
  """Softmax scores (float32, (B, classes)) of clips: what evaluation and prediction average."""
  logits = model.apply(variables, clips, train=False)
  return jax.nn.softmax(logits.astype(np.float32), axis=-1)


def eval_step(variables: dict[str, Any], batch: Batch, *, model: nn.Module) -> Batch:
  """Softmax scores of a batch's views, with their label/mask/video."""
  return {'scores': class_scores(variables, batch['clips'], model=model),
          'label': batch['label'], 'mask': batch['mask'], 'video_index': batch['video_index']}


def jit_eval_step(model: nn.Module, mesh: jax.sharding.Mesh) -> Callable[[Any, Batch], Batch]:
  """`eval_step` over `mesh`: variables replicated, batch on `data`, outputs replicated (every
  process gets every row of the global batch)."""
  replicated = sharding.replicated(mesh)
  return jax.jit(functools.partial(eval_step, model=model),
                 in_shardings=(replicated, sharding.data_sharded(mesh)),
                 out_shardings=replicated)


# --- host --------------------------------------------------------------------------------------

def video_scores(variables: dict[str, Any], model: nn.Module, config: ml_collections.ConfigDict,
                 mesh: jax.sharding.Mesh, source: Sequence, protocol: protocols.Protocol,
                 batches: Iterable[dict[str, np.ndarray]] | None = None
                 ) -> tuple[np.ndarray, np.ndarray]:
  """Runs `protocol` over `source`; returns per-video mean scores and labels.

  `variables` (`{'params', 'batch_stats'}`) must be replicated over `mesh`; `batches` defaults
  to this process's share of `pipeline.create_dataset(source, config, protocol.name)`.
  """
  sharding.check_batch_size(config.batch_size, mesh)
  steps = pipeline.num_eval_steps(len(source), protocol, config.batch_size)
  if batches is None:
    batches = pipeline.create_dataset(source, config, protocol.name)
  step_fn = jit_eval_step(model, mesh)
  acc = metrics_lib.VideoScores(len(source), config.data.num_classes, protocol.views_per_video)
  pending = None
  done = 0
  for local in batches:
    if done == steps:
      break
    out = step_fn(variables, sharding.global_batch(local, mesh))
    if pending is not None:  # Fetch the previous step while this one runs.
      acc.add(**sharding.to_host(pending))
    pending = out
    done += 1
    if done % 50 == 0:
      logging.info('eval %s: step %d/%d', protocol.name, done, steps)
  if pending is not None:
    acc.add(**sharding.to_host(pending))
  if done != steps:
    raise RuntimeError(f'the {protocol.name} pipeline gave {done} batches, expected {steps}')
  return acc.averaged()


def check_class_count(config: ml_collections.ConfigDict, run: str | None = None) -> None:
  """Raises a ConfigError unless `config.data.num_classes` is the prepared dataset's class count
  (from its info; a dataset without class names is checked label by label as it is read).
  `run`: the run directory whose model it is (evaluation), named in the message."""
  names = datasets.class_names(config)
  if names is None or len(names) == config.data.num_classes:
    return
  remedy = (f'the model of {run} has {config.data.num_classes}: evaluate it on the dataset it '
            'was trained on (or fix config.data.data_dir / data.dataset)' if run else
            f'pass --config.data.num_classes={len(names)}')
  raise errors.bad_field('data.num_classes', config.data.num_classes,
                         f'the prepared dataset in {datasets.dataset_dir(config)} has '
                         f'{len(names)} classes; {remedy}')


def open_eval_source(config: ml_collections.ConfigDict) -> Sequence:
  """The prepared split that evaluation reads (`config.data.eval_split`)."""
  return datasets.open_source(config, config.data.eval_split)


# Fields that cannot change a score: how fast, how data is prepared or loaded, how training runs.
_NOT_SCORING = ('batch_size', 'seed', 'checkpoint_every_steps', 'keep_checkpoints',
                'profile_steps', 'compilation_cache_dir',
                'log_every_steps', 'eval_every_epochs', 'init_checkpoint', 'allow_config_change',
                'model.channelwise_impl', 'model.dropout_rate', 'data.num_workers',
                'data.num_threads', 'data.raw_dir', 'data.raw_format', 'data.videos_per_shard',
                'data.format', 'data.output_format',
                'data.prepare_workers', 'data.overwrite', 'data.random_flip', 'data.scales',
                'data.max_distort', 'data.more_fix_crop', 'data.flip_label_map')
_NOT_SCORING_SECTIONS = ('optim.', 'convert.')


def scoring_fields(config: ml_collections.ConfigDict | dict[str, Any]) -> dict[str, Any]:
  """The flattened fields of `config` that may change an evaluation's numbers (all but
  `_NOT_SCORING`: a field added later counts until it is listed there). `model.dtype` counts as
  the dtype it computes in (`auto` resolved for this backend, as a run records it)."""
  fields = {k: v for k, v in run_directory.flatten(config).items()
            if k not in _NOT_SCORING and not k.startswith(_NOT_SCORING_SECTIONS)}
  if fields.get('model.dtype') == 'auto':
    fields['model.dtype'] = models.compute_dtype('auto')
  return fields


def config_hash(config: ml_collections.ConfigDict | dict[str, Any]) -> str:
  """SHA-256 (hex) of the canonical JSON of `scoring_fields(config)`."""
  text = json.dumps(scoring_fields(config), sort_keys=True, default=str)
  return hashlib.sha256(text.encode()).hexdigest()


def settings(config: ml_collections.ConfigDict, protocol: protocols.Protocol,
             step: int) -> dict[str, Any]:
  """What `metrics.json` records of how its numbers were made."""
  d = config.data
  return {'protocol': protocol.name, 'views_per_video': protocol.views_per_video,
          'num_clips': protocol.num_clips, 'num_crops': protocol.num_crops,
          'crop': protocol.crop, 'crop_size': int(d.crop_size), 'short_side': int(d.short_side),
          'num_frames': int(d.num_frames), 'dataset': d.dataset, 'split': d.eval_split,
          'checkpoint_step': step, 'config_hash': config_hash(config)}


def output_dir(workdir: str, config: ml_collections.ConfigDict, protocol: protocols.Protocol,
               step: int) -> str:
  """Where an evaluation of the run `workdir` writes: `eval_<protocol>_step<step>` for the run's
  own settings (its config.json) when that folder is free or holds the same settings, else
  `eval_<protocol>_step<step>_<config hash[:8]>`. Never another combination's folder."""
  ours = config_hash(config)
  plain = os.fspath(files.resolve(workdir) / f'eval_{protocol.name}_step{step}')
  own = (not run_directory.has_config(workdir)
         or config_hash(run_directory.read_config(workdir)) == ours)
  existing = files.resolve(plain) / METRICS_FILE
  if own and existing.is_file():
    try:
      own = files.read_json(existing).get('config_hash') == ours
    except (errors.UserError, AttributeError):
      own = False
  return plain if own else f'{plain}_{ours[:8]}'


def evaluate(config: ml_collections.ConfigDict, workdir: str, protocol_name: str = 'val',
             checkpoint_step: int | str = weights_lib.LATEST, source: Sequence | None = None
             ) -> dict[str, Any]:
  """Evaluates a checkpoint of the run `workdir` ('latest', 'best' or a step) under a protocol.

  `config` is the run's (`run_directory.resolve_config`). The split is `config.data.eval_split`;
  `source` replaces it (tests, custom sources). Writes `<workdir>/eval_<protocol>_step<N>/`
  (process 0) and returns the metrics (accuracies as fractions).
  """
  config_check.check(config)
  protocol = protocols.from_config(config, protocol_name)
  if not weights_lib.is_run_directory(workdir):
    raise errors.NotFoundError(f'no checkpoint in {workdir}: it is not a training run directory '
                               '(no config.json or checkpoints/); train first (launch.py '
                               '--mode=train) or pass the --workdir of a run')
  if source is None:
    check_class_count(config, run=workdir)
    source = open_eval_source(config)
  mesh = sharding.make_mesh()
  loaded = weights_lib.load(workdir, config, checkpoint_step, mesh)
  return evaluate_variables(config, loaded.model, loaded.variables, mesh, source, protocol,
                            loaded.step, workdir, checkpoint=loaded.description)


def evaluate_variables(config: ml_collections.ConfigDict, model: nn.Module,
                       variables: dict[str, Any], mesh: jax.sharding.Mesh, source: Sequence,
                       protocol: protocols.Protocol, step: int, workdir: str,
                       write_outputs: bool = True, checkpoint: str | None = None
                       ) -> dict[str, Any]:
  """Evaluates `variables` (replicated over `mesh`) on `source` under `protocol`.

  Shared by `--mode=eval` and the evaluations during training. With `write_outputs`, process 0
  writes `output_dir(workdir, ...)` (metrics.json with `settings` and `checkpoint`, the
  description of the weights) and prints the result line; without, only the metrics are
  returned (training logs them itself).
  """
  split = config.data.eval_split
  if len(source) == 0:
    raise errors.UserError(f'the {split!r} split is empty')
  logging.info('eval %s: step %d, %d videos of %r, %d views each', protocol.name, step,
               len(source), split, protocol.views_per_video)
  scores, labels = video_scores(variables, model, config, mesh, source, protocol)
  metrics = metrics_lib.compute_metrics(scores, labels)
  metrics.update(protocol=protocol.name, split=split, step=step)
  if not write_outputs:
    return metrics
  metrics['cost'] = reports.protocol_cost(config, protocol)  # Traces the model: reports only.
  metrics.update(settings(config, protocol, step))
  metrics['checkpoint'] = checkpoint
  if run_directory.has_config(workdir):
    found = run_directory.changes(scoring_fields(run_directory.read_config(workdir)),
                                  scoring_fields(config))
    metrics['config_changes'] = [{'field': k, 'run': old, 'eval': new} for k, old, new in found]
  out_dir = output_dir(workdir, config, protocol, step)
  metrics['output_dir'] = out_dir
  if jax.process_index() == 0:
    directory = files.resolve(out_dir)
    directory.mkdir(parents=True, exist_ok=True)
    ids = [_video_id(source[i]) for i in range(len(source))]
    reports.write_predictions(directory / PREDICTIONS_FILE, ids, scores, labels)
    reports.plot_confusion(directory / CONFUSION_FILE,
                           np.asarray(metrics['confusion']),
                           f'{config.data.dataset} {split}, {protocol.name} protocol, step {step}')
    files.write_json(directory / METRICS_FILE, metrics)
    print(reports.format_result(protocol.name, step, metrics), flush=True)
  return metrics


def _video_id(record: dict[str, Any]) -> str:
  vid = record['id']
  return vid.decode() if isinstance(vid, bytes) else str(vid)
