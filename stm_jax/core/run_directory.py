"""What a run directory says about itself: `config.json`, `class_names.json`, and who writes it.

The trainer writes the first two when a run starts, so that evaluation, prediction, visualisation
and export of a run need only its directory: the model is rebuilt from the config it was trained
with (plus what the command line overrides, which may not change the architecture), and scores
are printed with the dataset's class names.

A run's identity is its architecture (`is_architecture_field`) and its dataset
(`DATASET_FIELDS`): `identity_changes` tells a trainer that would resume a run as another one.

`train.lock` (`WorkdirLock`) says which process trains the run: one writer per workdir.
"""

import json
from typing import Any

import ml_collections

from input_pipeline import errors
from input_pipeline import files
from input_pipeline import locks

CONFIG_FILE = 'config.json'
CLASS_NAMES_FILE = 'class_names.json'
LOCK_FILE = 'train.lock'
# Model fields that do not change the network's parameters or its function at inference: the
# compute dtype, how channel-wise convs are computed (same numbers), dropout (training only).
_NOT_ARCHITECTURE = ('model.dtype', 'model.channelwise_impl', 'model.dropout_rate')
# Config fields that say which dataset a run learns (its classes); with the architecture they are
# what a resumed run may not change.
DATASET_FIELDS = ('data.dataset', 'data.split', 'data.num_classes')
# Fields never compared between a run's config.json and a command line: how to start, not what.
_NOT_COMPARED = ('allow_config_change', 'init_checkpoint')


def _lists_to_tuples(value: Any) -> Any:
  """JSON turns the config's tuples (stages, decay epochs, label maps) into lists; undo it."""
  if isinstance(value, dict):
    return {k: _lists_to_tuples(v) for k, v in value.items()}
  if isinstance(value, list):
    return tuple(_lists_to_tuples(v) for v in value)
  return value


def write(workdir: str, config: ml_collections.ConfigDict,
          class_names: list[str] | None) -> None:
  """Writes the run's config (and class names, when the dataset has them) into `workdir`."""
  workdir = files.resolve(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  files.write_json(workdir / CONFIG_FILE, json.loads(config.to_json()))
  if class_names:
    files.write_json(workdir / CLASS_NAMES_FILE, list(class_names))


def has_config(directory: str) -> bool:
  """Whether `directory` is a run directory written by the trainer."""
  return (files.resolve(directory) / CONFIG_FILE).is_file()


def read_config(directory: str) -> ml_collections.ConfigDict:
  """The config a run was trained with. Raises a UserError naming the file."""
  return ml_collections.ConfigDict(
      _lists_to_tuples(files.read_json(files.resolve(directory) / CONFIG_FILE)))


def flatten(config: ml_collections.ConfigDict | dict[str, Any], prefix: str = '') -> dict[str, Any]:
  """`{'model.depth': 50, ...}`: every leaf field of a config by its dotted name."""
  items = config.items() if isinstance(config, dict) else config.to_dict().items()
  out = {}
  for key, value in items:
    name = f'{prefix}{key}'
    if isinstance(value, (dict, ml_collections.ConfigDict)):
      out.update(flatten(value if isinstance(value, dict) else value.to_dict(), f'{name}.'))
    else:
      out[name] = _lists_to_tuples(value)
  return out


def is_architecture_field(field: str) -> bool:
  """Whether `field` (dotted) describes the network: every `model.*` field that changes its
  parameters or what it computes, and the class count (the classifier's size)."""
  return ((field.startswith('model.') and field not in _NOT_ARCHITECTURE)
          or field == 'data.num_classes')


def changes(old: dict[str, Any], new: dict[str, Any]) -> list[tuple[str, Any, Any]]:
  """(field, old value, new value) of every field both flattened configs hold with different
  values (a field only one of them has is not a change: it was added or removed since)."""
  return [(k, old[k], new[k]) for k in sorted(set(old) & set(new))
          if k not in _NOT_COMPARED and old[k] != new[k]]


def format_changes(found: list[tuple[str, Any, Any]], old_name: str = "the run's config.json"
                   ) -> str:
  """`config.model.temporal_module='stm' (the run's config.json: 'none'), ...` for `changes`."""
  return ', '.join(f'config.{k}={new!r} ({old_name}: {old!r})' for k, old, new in found)


def identity_changes(workdir: str, config: ml_collections.ConfigDict
                     ) -> list[tuple[str, Any, Any]]:
  """The architecture and dataset fields (`is_architecture_field`, `DATASET_FIELDS`) in which
  `config` differs from the run in `workdir` (none when it has no config.json yet)."""
  if not has_config(workdir):
    return []
  found = changes(flatten(read_config(workdir)), flatten(config))
  return [c for c in found if is_architecture_field(c[0]) or c[0] in DATASET_FIELDS]


def resolve_config(path: str, config: ml_collections.ConfigDict,
                   overrides: dict[str, Any] | None = None) -> ml_collections.ConfigDict:
  """The config a command on the run or weights at `path` works with.

  A run directory: its own `config.json` with `overrides` (flattened `{'data.num_clips': 2}`,
  the fields the command line names) applied on top; fields declared since the run was trained
  take `config`'s values. An override may not change the architecture (`is_architecture_field`):
  the run's weights are of its own model, so that is a UserError naming the field. Anything else
  (converted weights): `config`.
  """
  if not has_config(path):
    return config
  resolved = read_config(path)
  known = flatten(resolved)
  missing = {k: v for k, v in flatten(config).items() if k not in known}
  if missing:
    resolved = ml_collections.ConfigDict(_with_fields(resolved.to_dict(), missing))
  stored = flatten(resolved)
  config_file = files.resolve(path) / CONFIG_FILE
  for field, value in (overrides or {}).items():
    if field not in stored and not any(k.startswith(f'{field}.') for k in stored):
      raise errors.UserError(f'--config.{field}: {config_file} has no such field')
    if is_architecture_field(field) and _lists_to_tuples(value) != stored.get(field):
      raise errors.ConfigError(
          f'--config.{field}={value!r}: the run {path} was trained with config.{field}='
          f'{stored.get(field)!r} ({config_file}), and a run is always scored with its own '
          f'model; drop the override (or train the other model: --mode=train in a new --workdir, '
          f'with --config.init_checkpoint={path} to start from these weights)')
    resolved.update_from_flattened_dict({field: value})
  return resolved


def _with_fields(tree: dict[str, Any], fields: dict[str, Any]) -> dict[str, Any]:
  """`tree` (a nested dict) with the flattened `fields` set."""
  for name, value in fields.items():
    node = tree
    *parents, leaf = name.split('.')
    for p in parents:
      node = node.setdefault(p, {})
    node[leaf] = value
  return tree


def read_class_names(directory: str) -> list[str] | None:
  """The dataset's class names saved with a run, or None when the dataset had none."""
  path = files.resolve(directory) / CLASS_NAMES_FILE
  if not path.is_file():
    return None
  names = files.read_json(path)
  if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
    raise errors.UserError(f'{path}: expected a JSON list of class names')
  return names


# --- one writer per workdir --------------------------------------------------------------------

class WorkdirLock(locks.FileLock):
  """`<workdir>/train.lock`: at most one training process writes a run (locks.FileLock: local or
  in a bucket). In a multi-process run only process 0 takes it (stm_jax/train/loop.py)."""

  def __init__(self, workdir: str):
    super().__init__(files.resolve(workdir) / LOCK_FILE, 'another training run is writing it',
                     'wait for it to finish, stop it, or train in another --workdir')
