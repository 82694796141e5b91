"""The recipes: every dataset at 8 and 16 frames, with the paper's class counts, flip policy and schedule."""

import importlib

import pytest

from stm_jax import models

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
  models.check_model_config(config)
