"""Train state and the pure, jitted SGD step (softmax cross-entropy, top-1, global-batch BN).

The step is one XLA program over the `data` mesh (sharding.py): the state is replicated, the
batch is split over devices, and BatchNorm's batch statistics are those of the whole global
batch (XLA all-reduces them; no `axis_name` needed). Compute runs in `config.model.dtype`;
parameters, gradients, optimiser state and BatchNorm statistics stay float32.

With `optim.grad_accum_steps = k > 1` the global batch is cut into k micro-batches (rows
`i, i + k, i + 2k, ...` form micro-batch i, so each one still spans every device), run one after
the other in a `lax.scan`; their gradients are averaged and applied once. For a network whose
output for a clip does not depend on the rest of the batch this is exactly the big batch's
update; with BatchNorm, as in PyTorch, each micro-batch is normalised by its own statistics and
the running statistics are updated once per micro-batch.
"""

import functools
from typing import Any, Callable

from absl import logging

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax

from stm_jax import models
from stm_jax.core import sharding
from stm_jax.core import weights

Batch = dict[str, jax.Array]
Metrics = dict[str, jax.Array]


@flax.struct.dataclass
class TrainState:
  """Everything a step changes: step count, parameters, BN statistics, optimiser state."""
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any


def create_train_state(variables: dict[str, Any], tx: optax.GradientTransformation) -> TrainState:
  """A step-0 state from model variables (fresh, or converted ImageNet weights)."""
  params = variables['params']
  return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                    batch_stats=variables['batch_stats'], opt_state=tx.init(params))


def _loss_fn(model: nn.Module, params, batch_stats, clips, labels, rng):
  """Mean softmax cross-entropy of one (micro-)batch; aux: new BN statistics, #correct."""
  logits, updates = model.apply({'params': params, 'batch_stats': batch_stats}, clips,
                                train=True, mutable=['batch_stats'], rngs={'dropout': rng})
  loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
  correct = jnp.sum(jnp.argmax(logits, axis=-1) == labels)
  return loss, (updates['batch_stats'], correct)


def _split_micro(x: jax.Array, k: int) -> jax.Array:
  """(B, ...) -> (k, B/k, ...): micro-batch i is rows i, i+k, ... (each spans all devices)."""
  return jnp.swapaxes(x.reshape((x.shape[0] // k, k) + x.shape[1:]), 0, 1)


def gradients(model: nn.Module, params, batch_stats, batch: Batch, rng: jax.Array,
              micro_batches: int = 1):
  """Loss, #correct, new BN statistics and mean gradient over `micro_batches` micro-batches."""
  grad_fn = jax.value_and_grad(functools.partial(_loss_fn, model), has_aux=True)
  if micro_batches == 1:
    (loss, (batch_stats, correct)), grads = grad_fn(params, batch_stats, batch['clips'],
                                                    batch['label'], rng)
    return loss, correct, batch_stats, grads

  def micro(carry, xs):
    grad_sum, stats, loss_sum, correct_sum = carry
    clips, labels, index = xs
    (loss, (stats, correct)), grads = grad_fn(params, stats, clips, labels,
                                              jax.random.fold_in(rng, index))
    grad_sum = jax.tree.map(jnp.add, grad_sum, grads)
    return (grad_sum, stats, loss_sum + loss, correct_sum + correct), None

  zeros = jax.tree.map(jnp.zeros_like, params)
  xs = (_split_micro(batch['clips'], micro_batches), _split_micro(batch['label'], micro_batches),
        jnp.arange(micro_batches))
  init = (zeros, batch_stats, jnp.zeros((), jnp.float32), jnp.zeros((), jnp.int32))
  (grad_sum, batch_stats, loss_sum, correct), _ = jax.lax.scan(micro, init, xs)
  grads = jax.tree.map(lambda g: g / micro_batches, grad_sum)
  return loss_sum / micro_batches, correct, batch_stats, grads


def all_finite(tree: Any) -> jax.Array:
  """Whether every floating-point value of `tree` is finite: one boolean, reduced on device.

  Inside the jitted step this is part of the same XLA program as the update: one `all(isfinite)`
  reduction per leaf (which XLA may fuse with the update writing that leaf), and-ed into one
  scalar that travels to the host with the other metrics, when the loop fetches them anyway (no
  extra host sync, no extra dispatch).
  """
  leaves = [x for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.inexact)]
  if not leaves:
    return jnp.asarray(True)
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]))


def train_step(state: TrainState, batch: Batch, *, model: nn.Module,
               tx: optax.GradientTransformation, seed: int,
               micro_batches: int = 1) -> tuple[TrainState, Metrics]:
  """One SGD update on a global batch `{'clips': uint8 (B,T,H,W,3), 'label': int32 (B,)}`.

  Pure: the dropout key is `fold_in(key(seed), step)`, so a resumed run draws the same masks.
  Metrics (scalars): `loss` (mean cross-entropy), `top1` (fraction correct, before the update),
  `grad_norm` (global L2 norm of the mean gradient, before clipping); for the loop's checks
  (never logged): `finite` (the updated parameters, BatchNorm statistics and optimizer state
  are all finite, `all_finite`), `label_min` / `label_max` (of the batch, so that a label outside
  the classifier is caught before it turns into a NaN loss).
  """
  rng = jax.random.fold_in(jax.random.key(seed), state.step)
  loss, correct, batch_stats, grads = gradients(model, state.params, state.batch_stats, batch,
                                                rng, micro_batches)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  metrics = {'loss': loss, 'top1': correct / batch['label'].shape[0],
             'grad_norm': optax.tree.norm(grads),
             'finite': all_finite((params, batch_stats, opt_state)),
             'label_min': jnp.min(batch['label']), 'label_max': jnp.max(batch['label'])}
  new_state = TrainState(step=state.step + 1, params=params, batch_stats=batch_stats,
                         opt_state=opt_state)
  return new_state, metrics


def jit_train_step(model: nn.Module, tx: optax.GradientTransformation,
                   config: ml_collections.ConfigDict,
                   mesh: jax.sharding.Mesh) -> Callable[[TrainState, Batch],
                                                        tuple[TrainState, Metrics]]:
  """`train_step` for `config`, jitted over `mesh`: state replicated, donated; batch on `data`."""
  micro_batches = config.optim.grad_accum_steps
  sharding.check_batch_size(config.batch_size, mesh, micro_batches)
  step = functools.partial(train_step, model=model, tx=tx, seed=config.seed,
                           micro_batches=micro_batches)
  replicated = sharding.replicated(mesh)
  return jax.jit(step, in_shardings=(replicated, sharding.data_sharded(mesh)),
                 out_shardings=(replicated, replicated), donate_argnums=0)


def _fresh_state_fn(model: nn.Module, tx: optax.GradientTransformation,
                    config: ml_collections.ConfigDict) -> Callable[[], TrainState]:
  """A function building the step-0 state from `config.seed` (for jit or eval_shape)."""
  return lambda: create_train_state(models.init_variables(model, config), tx)


def abstract_train_state(model: nn.Module, tx: optax.GradientTransformation,
                         config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh) -> TrainState:
  """Shapes, dtypes and (replicated) shardings of the state, computed without running anything.

  The target a checkpoint is restored into.
  """
  replicated = sharding.replicated(mesh)
  shapes = jax.eval_shape(_fresh_state_fn(model, tx, config))
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated),
                      shapes)


def init_train_state(model: nn.Module, tx: optax.GradientTransformation,
                     config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh,
                     variables: dict[str, Any] | None = None) -> TrainState:
  """The step-0 state, replicated over `mesh`: from `variables` (e.g. ImageNet weights) or fresh.

  A classifier (`fc`) of another class count is re-initialised with a warning (fine-tuning);
  any other mismatch is an error naming the variable.

  Every process must pass the same `variables` (they are read from the same checkpoint).
  """
  replicated = sharding.replicated(mesh)
  if variables is None:
    return jax.jit(_fresh_state_fn(model, tx, config), out_shardings=replicated)()
  fresh_fn = _fresh_state_fn(model, tx, config)
  expected = jax.eval_shape(fresh_fn)
  variables = {c: variables[c] for c in models.VARIABLE_COLLECTIONS}
  theirs = variables['params'].get('fc', {}).get('kernel')
  ours = expected.params.get('fc', {}).get('kernel')
  if (theirs is not None and ours is not None and theirs.shape != ours.shape
      and theirs.shape[0] == ours.shape[0]):
    # Fine-tuning on another dataset (e.g. Kinetics-400 -> UCF-101): a new classifier.
    logging.warning('fc: the initial weights have %d classes, the model %d: fc re-initialised',
                    theirs.shape[1], ours.shape[1])
    fresh_fc = jax.device_get(jax.jit(fresh_fn)().params['fc'])
    variables = {**variables, 'params': {**variables['params'], 'fc': fresh_fc}}
  weights.check_variables(variables, {'params': expected.params, 'batch_stats': expected.batch_stats},
                          'initial variables')
  variables = jax.device_put(jax.device_get(variables), replicated)
  return jax.jit(lambda v: create_train_state(v, tx), out_shardings=replicated)(variables)
