"""The training loop's schedule of evaluations and fine-tuning from another run's weights
(resume, preemption and divergence: tests/test_checkpointing.py)."""

import jax
import numpy as np
import pytest

from configs import tiny
from stm_jax import models
from stm_jax.core import sharding
from stm_jax.core import weights
from stm_jax.train import loop
from stm_jax.train import optim
from stm_jax.train import train_state
from tests import clip_fixtures


def test_evaluations_fall_on_epoch_ends_and_the_last_step():
  config = tiny.get_config()
  config.batch_size = 4
  config.eval_every_epochs = 1
  # 10 videos in batches of 4: epochs end after 2.5, 5, 7.5 ... batches.
  assert loop.eval_steps(config, 10, total=10) == {2, 5, 7, 10}
  config.eval_every_epochs = 2
  assert loop.eval_steps(config, 10, total=10) == {5, 10}
  config.eval_every_epochs = 0.5
  assert loop.eval_steps(config, 8, total=4) == {1, 2, 3, 4}
  config.eval_every_epochs = 0
  assert loop.eval_steps(config, 10, total=10) == set()


def _flat(tree):
  return {jax.tree_util.keystr(p): np.asarray(x) for p, x in
          jax.tree_util.tree_leaves_with_path(jax.device_get(tree))}


def test_fine_tuning_from_a_run_with_other_classes_reinitialises_only_fc(tmp_path):
  source = tiny.get_config()
  source.data.num_classes = 5
  source.batch_size = 2
  source.optim.epochs = 1
  source.optim.decay_epochs = ()
  source.checkpoint_every_steps = 1
  records = clip_fixtures.source([6, 7, 8, 9])
  loop.train_and_evaluate(source, str(tmp_path / 'kinetics'), train_source=records)
  pretrained = _flat(weights.load(str(tmp_path / 'kinetics'), source).variables)

  config = tiny.get_config()
  config.data.num_classes = 3
  config.init_checkpoint = str(tmp_path / 'kinetics')
  mesh = sharding.make_mesh()
  model = models.create(config)
  tx = optim.create_optimizer(config, num_examples=8)
  state = train_state.init_train_state(model, tx, config, mesh, loop._initial_variables(config))
  got = _flat({'params': state.params, 'batch_stats': state.batch_stats})
  fresh = train_state.init_train_state(model, tx, config, mesh)
  fresh = _flat({'params': fresh.params, 'batch_stats': fresh.batch_stats})
  assert got.keys() == pretrained.keys()
  for key, value in got.items():
    if "['fc']" in key:
      assert value.shape[-1] == 3 and pretrained[key].shape[-1] == 5
      np.testing.assert_array_equal(value, fresh[key])  # The seed's init, not the source's.
    else:
      np.testing.assert_array_equal(value, pretrained[key], err_msg=key)
  # Anything else that does not fit stays an error naming the variable.
  config.model.width = 32
  model = models.create(config)
  with pytest.raises(ValueError,
                     match=r'initial variables do not fit the model: .*bn1.*has shape \(16,\)'):
    train_state.init_train_state(model, tx, config, mesh, loop._initial_variables(config))
