"""The train step: one update of the tiny STM (float32 and bfloat16), gradient accumulation."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from stm_jax import models
from stm_jax.core import sharding
from stm_jax.train import optim
from stm_jax.train import train_state
from tests import sharded_run


@pytest.fixture(scope='module')
def setup():
  """The tiny config, its fresh variables (initialised once) and one synthetic batch."""
  config = sharded_run.tiny_config()
  variables = jax.jit(models.create(config).init)(
      jax.random.key(0), jnp.zeros((1, 4, 32, 32, 3), jnp.uint8))
  variables = {c: variables[c] for c in ('params', 'batch_stats')}
  return config, variables, sharded_run.batches(config, 1)[0]


def one_step(config, variables, batch):
  mesh = sharding.make_mesh()
  model = models.create(config)
  tx = optim.create_optimizer(config, num_examples=1600)
  state = train_state.init_train_state(model, tx, config, mesh, variables)
  step = train_state.jit_train_step(model, tx, config, mesh)
  new_state, metrics = step(state, sharding.global_batch(batch, mesh))
  return state, new_state, jax.device_get(metrics)


def test_step_updates_everything_in_float32(setup):
  config, variables, batch = setup
  state, new_state, metrics = one_step(config, variables, batch)
  assert int(new_state.step) == 1
  assert np.isfinite(metrics['loss']) and metrics['loss'] > 0 and metrics['grad_norm'] > 0
  assert 0 <= metrics['top1'] <= 1
  assert state.params['fc']['kernel'].is_deleted()  # donated
  for a, b in zip(jax.tree.leaves(variables), jax.tree.leaves(
      {'params': new_state.params, 'batch_stats': new_state.batch_stats})):
    assert b.dtype == jnp.float32 and not np.array_equal(a, b)
  # First SGD step: momentum buffer = gradient + decay * kernel.
  trace = new_state.opt_state[-1][0].trace['fc']['kernel']
  lr = optim.peak_lr(config)
  np.testing.assert_allclose(new_state.params['fc']['kernel'],
                             variables['params']['fc']['kernel'] - lr * trace, rtol=1e-6,
                             atol=1e-7)


def test_bfloat16_compute_float32_state(setup):
  config, variables, batch = setup
  config = config.copy_and_resolve_references()
  config.model.dtype = 'bfloat16'
  _, new_state, metrics = one_step(config, variables, batch)
  assert {x.dtype for x in jax.tree.leaves(new_state.params)} == {jnp.dtype(jnp.float32)}
  assert {x.dtype for x in jax.tree.leaves(new_state.batch_stats)} == {jnp.dtype(jnp.float32)}
  assert metrics['loss'] == pytest.approx(1.8825, abs=0.02)  # float32 loss: 1.88248


class Toy(nn.Module):
  """A batch-independent classifier with a counter in `batch_stats` (as BN's running stats)."""

  @nn.compact
  def __call__(self, clips, train=False):
    count = self.variable('batch_stats', 'count', jnp.zeros, (), jnp.int32)
    if train:
      count.value += 1
    x = clips.reshape(clips.shape[0], -1).astype(jnp.float32) / 255.0
    return nn.Dense(3)(nn.tanh(nn.Dense(8)(x)))


def toy_batch(n=8):
  """Clips of the tiny config's shape (T=4, 32x32), which the train state is checked against."""
  rng = np.random.RandomState(0)
  return {'clips': jnp.asarray(rng.randint(0, 256, (n, 4, 32, 32, 3)), jnp.uint8),
          'label': jnp.asarray(rng.randint(0, 3, n), jnp.int32)}


@pytest.mark.parametrize('micro_batches', [2, 4])
def test_accumulated_gradient_is_the_big_batch_gradient(micro_batches):
  model, batch = Toy(), toy_batch()
  variables = model.init(jax.random.key(0), batch['clips'])
  rng = jax.random.key(1)
  big = train_state.gradients(model, variables['params'], variables['batch_stats'], batch, rng, 1)
  acc = train_state.gradients(model, variables['params'], variables['batch_stats'], batch, rng,
                        micro_batches)
  np.testing.assert_allclose(acc[0], big[0], rtol=1e-6)  # loss
  assert int(acc[1]) == int(big[1])  # correct
  assert int(acc[2]['count']) == micro_batches and int(big[2]['count']) == 1
  for a, b in zip(jax.tree.leaves(acc[3]), jax.tree.leaves(big[3])):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_accumulating_train_step_over_the_mesh():
  config = sharded_run.tiny_config(grad_accum_steps=2)
  config.batch_size = 8
  model, batch = Toy(), toy_batch()
  tx = optim.create_optimizer(config, num_examples=800)
  mesh = sharding.make_mesh()
  variables = model.init(jax.random.key(0), batch['clips'])
  results = []
  for k in (1, 2):
    config.optim.grad_accum_steps = k
    state = train_state.init_train_state(model, tx, config, mesh, variables)
    step = train_state.jit_train_step(model, tx, config, mesh)
    for _ in range(2):
      state, metrics = step(state, sharding.global_batch(batch, mesh))
    results.append((state.params, metrics['loss']))
  np.testing.assert_allclose(results[0][1], results[1][1], rtol=1e-6)
  for a, b in zip(jax.tree.leaves(results[0][0]), jax.tree.leaves(results[1][0])):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
  with pytest.raises(ValueError, match='config.batch_size=8'):
    config.optim.grad_accum_steps = 3
    train_state.jit_train_step(model, tx, config, mesh)


def test_micro_batches_interleave_rows():
  x = jnp.arange(8)
  np.testing.assert_array_equal(train_state._split_micro(x, 2), [[0, 2, 4, 6], [1, 3, 5, 7]])


def test_initial_variables_must_fit_the_model():
  config = sharded_run.tiny_config()
  model, batch = Toy(), toy_batch()
  variables = model.init(jax.random.key(0), batch['clips'][:, :, :16])
  tx = optim.create_optimizer(config, num_examples=1600)
  with pytest.raises(ValueError, match=r'has shape \(6144, 8\), the model needs \(12288, 8\)'):
    train_state.init_train_state(model, tx, config, sharding.make_mesh(), variables)


@pytest.mark.filterwarnings('ignore:overflow encountered in cast')
def test_the_step_reports_a_non_finite_update_at_a_finite_loss_and_its_label_range():
  """A weight decay of 1e39 (infinite in float32) leaves step 1's loss and gradient finite but
  makes the updated kernels and momentum infinite: `finite` says so, in the same metrics."""
  model, batch = Toy(), toy_batch()
  variables = model.init(jax.random.key(0), batch['clips'])
  mesh = sharding.make_mesh()
  for decay, finite in ((5e-4, True), (1e39, False)):
    config = sharded_run.tiny_config()
    config.batch_size = 8
    config.optim.weight_decay = decay
    tx = optim.create_optimizer(config, num_examples=800)
    state = train_state.init_train_state(model, tx, config, mesh, variables)
    step = train_state.jit_train_step(model, tx, config, mesh)
    new_state, metrics = step(state, sharding.global_batch(batch, mesh))
    metrics = jax.device_get(metrics)
    assert np.isfinite(metrics['loss']) and np.isfinite(metrics['grad_norm'])
    assert bool(metrics['finite']) is finite
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(new_state)) is finite
    assert (metrics['label_min'], metrics['label_max']) == (batch['label'].min(),
                                                            batch['label'].max())


def test_all_finite_looks_at_every_floating_leaf():
  tree = {'a': jnp.ones(3), 'b': (jnp.zeros(2, jnp.bfloat16), jnp.arange(3))}
  assert bool(jax.jit(train_state.all_finite)(tree))
  for bad in (jnp.nan, jnp.inf, -jnp.inf):
    broken = {**tree, 'b': (tree['b'][0].at[1].set(bad), tree['b'][1])}
    assert not bool(jax.jit(train_state.all_finite)(broken))
