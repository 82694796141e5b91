"""Parameters and multiply-accumulates of a model, counted without running it.

MACs are read off the jaxpr of one forward pass of one clip: every convolution and every
dot product (dense layer) is counted, by the module that issued it. This is the convention
of the paper's tables (thop/fvcore count conv and linear layers); BatchNorm, pooling and
element-wise work are not counted. Channel-wise convs are counted in their grouped form,
whatever form the config computes them in.
"""

import collections
from typing import Any

import jax
import ml_collections
import numpy as np

from stm_jax import models
from stm_jax.models import temporal


def count_params(params: Any) -> int:
  """Number of scalars in a parameter tree (arrays or ShapeDtypeStructs)."""
  return int(sum(np.prod(x.shape, dtype=np.int64) for x in jax.tree_util.tree_leaves(params)))


def _eqn_macs(eqn) -> int:
  """MACs of one conv_general_dilated or dot_general equation, else 0."""
  name = eqn.primitive.name
  out_size = int(np.prod(eqn.outvars[0].aval.shape, dtype=np.int64))
  if name == 'conv_general_dilated':
    kernel_shape = eqn.invars[1].aval.shape
    rhs_spec = eqn.params['dimension_numbers'].rhs_spec  # (out, in, *spatial)
    taps = int(np.prod([kernel_shape[d] for d in rhs_spec[2:]], dtype=np.int64))
    return out_size * taps * kernel_shape[rhs_spec[1]]
  if name == 'dot_general':
    (lhs_contract, _), _ = eqn.params['dimension_numbers']
    lhs_shape = eqn.invars[0].aval.shape
    return out_size * int(np.prod([lhs_shape[d] for d in lhs_contract], dtype=np.int64))
  return 0


def _sub_jaxprs(eqn):
  for value in eqn.params.values():
    for item in value if isinstance(value, (tuple, list)) else (value,):
      if isinstance(item, jax.extend.core.ClosedJaxpr):
        yield item.jaxpr
      elif isinstance(item, jax.extend.core.Jaxpr):
        yield item


def _macs_by_scope(jaxpr, prefix: str, totals: dict) -> None:
  for eqn in jaxpr.eqns:
    scope = '/'.join(s for s in (prefix, str(eqn.source_info.name_stack)) if s)
    macs = _eqn_macs(eqn)
    if macs:
      totals[scope] += macs
    for sub in _sub_jaxprs(eqn):
      _macs_by_scope(sub, scope, totals)


def count_macs(config: ml_collections.ConfigDict) -> dict[str, int]:
  """MACs for one clip `(1, T, crop, crop, 3)`, keyed by the module path that issued them."""
  module = models.create(config).clone(channelwise_impl='grouped')
  clip = models.example_clips(config)
  variables = jax.eval_shape(lambda: models.init_variables(module, config))
  jaxpr = jax.make_jaxpr(module.apply)(variables, clip).jaxpr
  totals = collections.defaultdict(int)
  _macs_by_scope(jaxpr, '', totals)
  return dict(totals)


def summarize(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """Params and MACs of the configured model, in total and per top-level part (stem, stages, fc)."""
  params = models.abstract_variables(config)['params']
  macs = count_macs(config)

  def part_of(name: str) -> str:
    if name.startswith('layer'):
      return f'stage {int(name[5]) + 1}'
    return 'fc' if name == 'fc' else 'stem'

  rows = collections.OrderedDict((p, {'params': 0, 'macs': 0, 'temporal_params': 0})
                                 for p in ('stem', 'stage 2', 'stage 3', 'stage 4', 'stage 5', 'fc'))
  for top, subtree in params.items():
    rows[part_of(top)]['params'] += count_params(subtree)
    if top.startswith('layer'):
      rows[part_of(top)]['temporal_params'] += sum(
          count_params(v) for k, v in subtree.items() if k in temporal.TEMPORAL_SCOPES)
  for scope, value in macs.items():
    parts = scope.split('/')
    rows[part_of(parts[1] if len(parts) > 1 else '')]['macs'] += value
  return {'params': count_params(params), 'macs': sum(macs.values()), 'rows': rows}


