"""What a run directory says about itself: `config.json` and `class_names.json`.

The trainer writes both when a run starts, so that evaluation, prediction, visualisation and
export of a run need only its directory: the model is rebuilt from the config it was trained
with (plus what the command line overrides), and scores are printed with the dataset's class
names.
"""

import json
import os
from typing import Any

import ml_collections

from input_pipeline import errors
from input_pipeline import files

CONFIG_FILE = 'config.json'
CLASS_NAMES_FILE = 'class_names.json'


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
  os.makedirs(workdir, exist_ok=True)
  files.write_json(os.path.join(workdir, CONFIG_FILE), json.loads(config.to_json()))
  if class_names:
    files.write_json(os.path.join(workdir, CLASS_NAMES_FILE), list(class_names))


def has_config(directory: str) -> bool:
  """Whether `directory` is a run directory written by the trainer."""
  return os.path.isfile(os.path.join(directory, CONFIG_FILE))


def read_config(directory: str) -> ml_collections.ConfigDict:
  """The config a run was trained with. Raises a UserError naming the file."""
  return ml_collections.ConfigDict(
      _lists_to_tuples(files.read_json(os.path.join(directory, CONFIG_FILE))))


def resolve_config(path: str, config: ml_collections.ConfigDict,
                   overrides: dict[str, Any] | None = None) -> ml_collections.ConfigDict:
  """The config a command on the run or weights at `path` works with.

  A run directory: its own `config.json` with `overrides` (flattened `{'data.num_clips': 2}`,
  the fields the command line names) applied on top. Anything else (converted weights): `config`.
  """
  if not has_config(path):
    return config
  resolved = read_config(path)
  for field, value in (overrides or {}).items():
    try:
      resolved.update_from_flattened_dict({field: value})
    except (KeyError, AttributeError):
      raise errors.UserError(f'--config.{field}: {os.path.join(path, CONFIG_FILE)} has no such '
                             'field') from None
  return resolved


def read_class_names(directory: str) -> list[str] | None:
  """The dataset's class names saved with a run, or None when the dataset had none."""
  path = os.path.join(directory, CLASS_NAMES_FILE)
  if not os.path.isfile(path):
    return None
  names = files.read_json(path)
  if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
    raise errors.UserError(f'{path}: expected a JSON list of class names')
  return names
