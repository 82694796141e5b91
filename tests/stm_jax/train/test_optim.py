"""The optimiser: PyTorch SGD parity (momentum, coupled decay, clipping), schedule, checks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import default
from stm_jax.core import config_check
from stm_jax.train import optim


def config(**optim_fields):
  c = default.get_config()
  for k, v in optim_fields.items():
    if k == 'batch_size':
      c.batch_size = v
    else:
      c.optim[k] = v
  return c


def test_paper_schedule_scaled_and_stepped():
  # 640 videos, batch 128: 5 steps an epoch; lr 0.01 * 128 / 64.
  c = config(batch_size=128)
  schedule = optim.learning_rate_schedule(c, 640)
  lr = lambda s: float(schedule(s))
  assert optim.total_steps(c, 640) == 250
  assert lr(0) == pytest.approx(0.02) and lr(149) == pytest.approx(0.02)
  assert lr(150) == pytest.approx(0.002) and lr(199) == pytest.approx(0.002)
  assert lr(200) == pytest.approx(2e-4) and lr(225) == pytest.approx(2e-5)
  assert lr(249) == pytest.approx(2e-5)


def test_fractional_epochs_and_warmup():
  # 100 videos, batch 64: epoch e starts at floor(e * 100 / 64).
  c = config(decay_epochs=(3,), epochs=4, warmup_epochs=1.0)
  assert optim.epoch_start_step(3, 100, 64) == 4
  schedule = optim.learning_rate_schedule(c, 100)
  assert float(schedule(0)) == pytest.approx(0.01 / 1)  # warmup lasts one step (floor(100/64))
  c = config(decay_epochs=(), epochs=10, warmup_epochs=4.0)
  schedule = optim.learning_rate_schedule(c, 64)  # one step an epoch: 4 warmup steps
  assert [float(schedule(s)) for s in range(6)] == pytest.approx(
      [0.0025, 0.005, 0.0075, 0.01, 0.01, 0.01])


def test_decay_mask_kernels_only_by_default():
  params = {'conv1': {'kernel': 1}, 'bn1': {'scale': 1, 'bias': 1}, 'fc': {'kernel': 1, 'bias': 1}}
  assert optim.decay_mask(params) == {'conv1': {'kernel': True},
                                      'bn1': {'scale': False, 'bias': False},
                                      'fc': {'kernel': True, 'bias': False}}
  assert all(jax.tree.leaves(optim.decay_mask(params, decay_all=True)))


@pytest.mark.parametrize('clip,nesterov,decay_all', [(0.0, False, False), (0.5, False, True),
                                                     (0.5, True, False)])
def test_matches_pytorch_sgd(clip, nesterov, decay_all):
  torch = pytest.importorskip('torch')
  rng = np.random.RandomState(0)
  params = {'conv': {'kernel': rng.randn(3, 4).astype(np.float32)},
            'bn': {'scale': rng.randn(4).astype(np.float32)}}
  grads = [jax.tree.map(lambda p: rng.randn(*p.shape).astype(np.float32), params)
           for _ in range(4)]
  # 64 videos, batch 32: 2 steps an epoch; decay at epoch 1 (step 2).
  c = config(batch_size=32, epochs=3, decay_epochs=(1,), clip_grad_norm=clip, nesterov=nesterov,
             decay_all_params=decay_all)
  tx = optim.create_optimizer(c, 64)
  state = tx.init(params)
  p = jax.tree.map(jnp.asarray, params)
  for g in grads:
    updates, state = tx.update(g, state, p)
    p = jax.tree.map(lambda a, u: a + u, p, updates)

  kernel = torch.tensor(params['conv']['kernel'], requires_grad=True)
  scale = torch.tensor(params['bn']['scale'], requires_grad=True)
  groups = [{'params': [kernel], 'weight_decay': 5e-4},
            {'params': [scale], 'weight_decay': 5e-4 if decay_all else 0.0}]
  sgd = torch.optim.SGD(groups, lr=0.005, momentum=0.9, nesterov=nesterov)
  for step, g in enumerate(grads):
    for group in sgd.param_groups:
      group['lr'] = 0.005 * (0.1 if step >= 2 else 1.0)
    kernel.grad = torch.tensor(g['conv']['kernel'])
    scale.grad = torch.tensor(g['bn']['scale'])
    if clip:
      torch.nn.utils.clip_grad_norm_([kernel, scale], clip)
    sgd.step()
  np.testing.assert_allclose(p['conv']['kernel'], kernel.detach().numpy(), rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(p['bn']['scale'], scale.detach().numpy(), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize('field,value,word', [
    ('batch_size', 0, 'batch_size'),
    ('base_lr', -1.0, 'optim.base_lr'),
    ('momentum', 1.0, 'optim.momentum'),
    ('decay_epochs', (40, 30), 'optim.decay_epochs'),
    ('decay_epochs', (50,), 'optim.decay_epochs'),
    ('warmup_epochs', 60.0, 'optim.warmup_epochs'),
    ('clip_grad_norm', -1.0, 'optim.clip_grad_norm'),
    ('grad_accum_steps', 3, 'optim.grad_accum_steps'),
])
def test_check_names_the_field(field, value, word):
  with pytest.raises(ValueError, match=f'config.{word}='):
    config_check.check_optim(config(**{field: value}))


def test_too_few_videos_for_a_batch():
  with pytest.raises(ValueError, match='no batch'):
    optim.total_steps(config(epochs=1), 10)
