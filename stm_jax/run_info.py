"""What a run directory says about itself: `config.json` and `class_names.json`.

The trainer writes both when a run starts, so that evaluation, prediction, visualisation and
export of a run need only its directory: the model is rebuilt from the config it was trained
with, and scores are printed with the dataset's class names.
"""

import json
import os
from typing import Any

import ml_collections

from stm_jax import files

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
  """The config a run was trained with. Raises FileNotFoundError / ValueError naming the file."""
  path = os.path.join(directory, CONFIG_FILE)
  try:
    with open(path, encoding='utf-8') as f:
      value = json.load(f)
  except FileNotFoundError:
    raise FileNotFoundError(f'{path}: no such file; {directory} is not a training run '
                            'directory (launch.py --mode=train writes it)') from None
  except json.JSONDecodeError as e:
    raise ValueError(f'{path}: not valid JSON ({e.msg}, line {e.lineno})') from None
  return ml_collections.ConfigDict(_lists_to_tuples(value))


def read_class_names(directory: str) -> list[str] | None:
  """The dataset's class names saved with a run, or None when the dataset had none."""
  path = os.path.join(directory, CLASS_NAMES_FILE)
  if not os.path.isfile(path):
    return None
  with open(path, encoding='utf-8') as f:
    names = json.load(f)
  if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
    raise ValueError(f'{path}: expected a JSON list of class names')
  return names
