"""The recipes (every dataset at 8 and 16 frames, the paper's class counts, flip policy and
schedule) and the config schema: every field the code reads is declared, the check names fields."""

import importlib
import pathlib
import re

import pytest

from configs import default
from configs import demo
from configs import tiny
from input_pipeline import errors
from stm_jax.core import config_check
from tests import jax_subprocess

CLASSES = {'sthv1': 174, 'sthv2': 174, 'jester': 27, 'kinetics400': 400, 'ucf101': 101,
           'hmdb51': 51}
NO_FLIP = ('sthv1', 'sthv2', 'jester')


@pytest.mark.parametrize('name', sorted(CLASSES))
@pytest.mark.parametrize('frames', ['8', '16'])
def test_recipe(name, frames):
  config = importlib.import_module(f'configs.{name}').get_config(frames)
  assert config.data.dataset == name
  assert config.data.num_classes == CLASSES[name]
  assert config.data.num_frames == int(frames)
  assert config.data.random_flip == (name not in NO_FLIP)
  fine_tune = name in ('ucf101', 'hmdb51')
  assert config.optim.base_lr == (0.001 if fine_tune else 0.01)
  assert config.optim.epochs == (25 if fine_tune else 50)
  assert tuple(config.optim.decay_epochs) == ((15,) if fine_tune else (30, 40, 45))
  assert config.optim.momentum == 0.9 and config.optim.weight_decay == 5e-4
  assert config.model.dropout_rate == 0.5
  config_check.check(config)


# ConfigDict methods, not fields.
_METHODS = {'to_json', 'to_dict', 'copy_and_resolve_references', 'update_from_flattened_dict',
            'get_ref', 'items', 'keys', 'values', 'lock', 'unlock', 'get', 'demo',
            'json', 'x', 'py'}  # ...nor file names and placeholders in docstrings.


def _fields_read_by_the_code():
  """(file, dotted field) for every `config.<a>[.<b>]` the library code reads."""
  root = pathlib.Path(jax_subprocess.ROOT)
  found = set()
  for package in ('stm_jax', 'input_pipeline', 'launch.py'):
    paths = [root / package] if package.endswith('.py') else (root / package).rglob('*.py')
    for path in paths:
      for match in re.finditer(r'\bconfig\.(\w+)(?:\.(\w+))?', path.read_text()):
        first, second = match.groups()
        if first in _METHODS:
          continue
        field = first if first not in ('data', 'model', 'optim') else f'{first}.{second}'
        if second in _METHODS or second is None and first in ('data', 'model', 'optim'):
          continue
        found.add((path.name, field))
  return found


def test_every_field_the_code_reads_is_declared():
  declared = default.get_config()
  read = _fields_read_by_the_code()
  assert len(read) > 40  # The scan finds the fields (it is not vacuous).
  missing = []
  for where, field in sorted(read):
    node = declared
    for part in field.split('.'):
      if part not in node:
        missing.append(f'{where}: config.{field}')
        break
      node = node[part]
  assert not missing, missing


def test_demo_fields_are_declared_by_its_recipe():
  assert set(demo.get_config().demo) >= {'models', 'pairs', 'videos_per_class', 'seed'}


@pytest.mark.parametrize('field,value', [
    ('data.num_crops', 2), ('data.scales', ()), ('data.eval_split', 'dev'),
    ('data.raw_format', 'zip'), ('data.jpeg_quality', 0), ('model.dtype', 'float16'),
    ('optim.base_lr', float('inf')), ('log_every_steps', 0),
])
def test_the_check_names_the_field(field, value):
  config = tiny.get_config()
  config.update_from_flattened_dict({field: value})
  with pytest.raises(errors.ConfigError, match=f'config.{re.escape(field)}='):
    config_check.check(config)


def test_every_recipe_passes_the_check():
  for name in ('default', 'tiny', 'demo', *CLASSES):
    config_check.check(importlib.import_module(f'configs.{name}').get_config())
  # The custom recipe learns its class count when preparing (num_classes=0), so it is complete
  # for `prepare` only; a model needs the count.
  custom = importlib.import_module('configs.custom').get_config()
  config_check.check(custom, mode='prepare')
  with pytest.raises(errors.ConfigError, match='config.data.num_classes=0'):
    config_check.check(custom)
