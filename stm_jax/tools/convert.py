"""Weight import: PyTorch state dicts (torchvision ResNet, or the authors' STM layout) to Flax.

Flax module names mirror PyTorch's with `_` for `.` (`layer1_0` is `layer1.0`;
`downsample_conv`/`downsample_bn` are `downsample.0`/`downsample.1`), so the mapping is
derived by walking the Flax variable tree; only array layouts differ.

Two cases, told apart by the keys:
- backbone only (torchvision ImageNet ResNet, TSN/TSM checkpoints): no `.shift.`, `.mb.` or
  `.fuse.` keys. Fills the backbone of any variant; temporal modules keep their init; `fc`
  is copied when its shape matches, else re-initialised.
- a whole STM checkpoint: every variable of the model must be there, `fc` included.
Either way a missing key, a wrong shape or a key left unused is an error naming it.
"""

import os
import re
from typing import Any

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from input_pipeline import errors
from stm_jax import models
from stm_jax.core import weights
from stm_jax.models import temporal

# A key inside one of these scopes belongs to a temporal module (models/temporal.py's table).
TEMPORAL_MARKERS = tuple(f'.{scope}.' for scope in temporal.TEMPORAL_SCOPES)
# Flax leaf name -> PyTorch leaf name.
_LEAF_NAMES = {'kernel': 'weight', 'scale': 'weight', 'bias': 'bias', 'mean': 'running_mean',
               'var': 'running_var'}
_MODULE_NAMES = {'downsample_conv': 'downsample.0', 'downsample_bn': 'downsample.1'}
# Layout kind -> (axis of PyTorch's size-1 group dim to drop or None, permutation to Flax's
# layout after dropping it). Flax = transpose(squeeze(torch, axis), perm).
_LAYOUTS = {
    'conv': (None, (2, 3, 1, 0)),  # (out, in, kh, kw) -> (kh, kw, in, out)
    'dense': (None, (1, 0)),  # (out, in) -> (in, out)
    'channelwise_temporal': (1, (1, 0)),  # (C, 1, 3) -> (3, C)
    'full_temporal': (None, (2, 1, 0)),  # (out, in, 3) -> (3, in, out)
    'depthwise': (1, (1, 2, 0)),  # (C, 1, 3, 3) -> (3, 3, C)
    'vector': (None, (0,)),
}


def _torch_key(names: tuple[str, ...]) -> str:
  """The PyTorch key of a Flax variable path, e.g. ('layer1_0', 'bn1', 'mean')."""
  modules = [_MODULE_NAMES.get(n, re.sub(r'^(layer\d+)_(\d+)$', r'\1.\2', n)) for n in names[:-1]]
  return '.'.join(modules + [_LEAF_NAMES[names[-1]]])


def _layout(names: tuple[str, ...], ndim: int) -> str:
  """Which array layout a Flax variable has, from its path and rank."""
  if names[-1] != 'kernel':
    return 'vector'
  if ndim == 4:
    return 'conv'
  if names[-2] == 'shift':  # CSTM's temporal conv, or CMM's depthwise 3x3 under `mb`.
    if len(names) > 2 and names[-3] == 'mb':
      return 'depthwise'
    return 'channelwise_temporal' if ndim == 2 else 'full_temporal'
  return 'dense'


def _torch_shape(shape: tuple[int, ...], layout: str) -> tuple[int, ...]:
  """The PyTorch shape of a Flax variable of `shape` and `layout`."""
  axis, perm = _LAYOUTS[layout]
  torch_shape = [shape[i] for i in np.argsort(perm)]
  if axis is not None:
    torch_shape.insert(axis, 1)
  return tuple(torch_shape)


def _from_torch_layout(w: np.ndarray, layout: str) -> np.ndarray:
  """A PyTorch array in Flax's layout; the caller has checked its shape."""
  axis, perm = _LAYOUTS[layout]
  return np.transpose(w if axis is None else np.squeeze(w, axis), perm)


def _normalise_key(key: str) -> str:
  """Strips wrapper prefixes (`module.`, `base_model.`) and TSM's renamings."""
  while key.startswith(('module.', 'base_model.')):
    key = key.split('.', 1)[1]
  if key.startswith('new_fc.'):
    key = 'fc.' + key[len('new_fc.'):]
  return key.replace('.conv1.net.', '.conv1.')


def _is_temporal(key: str) -> bool:
  """Whether a PyTorch key belongs to a temporal module (CSTM, CMM or the concat fusion)."""
  return any(marker in '.' + key for marker in TEMPORAL_MARKERS)


def _convert(state_dict: dict[str, np.ndarray], config: ml_collections.ConfigDict,
             init_variables: dict[str, Any] | None) -> tuple[dict[str, Any], str]:
  """`from_torch`, also returning a one-line account of what was loaded."""
  state = {}
  for key, value in state_dict.items():
    name = _normalise_key(key)
    if name in state:
      raise errors.UserError(f'two keys normalise to {name!r} (one is {key!r})')
    if not name.endswith('num_batches_tracked'):
      state[name] = np.asarray(value)
  backbone_only = not any(_is_temporal(k) for k in state)

  module = models.create(config)
  # Shapes suffice unless some variable keeps its init; initialising compiles the model.
  target = init_variables
  if target is None:
    target = jax.eval_shape(lambda: models.init_variables(module, config))
  target = {c: target[c] for c in models.VARIABLE_COLLECTIONS}
  classes = target['params']['fc']['kernel'].shape[1]
  drop_fc = backbone_only and 'fc.weight' in state and state['fc.weight'].shape[0] != classes
  fc_status = 'copied'
  if drop_fc:
    fc_status = f're-initialised (the checkpoint has {state["fc.weight"].shape[0]} classes)'
    logging.warning('fc: %s; keeping the init', fc_status)

  def keeps_init(key):
    return (backbone_only and _is_temporal(key)) or (drop_fc and key.startswith('fc.'))

  keys = {_torch_key(tuple(p.key for p in path)[1:])
          for path, _ in jax.tree_util.tree_leaves_with_path(target)}
  if init_variables is None and any(keeps_init(k) for k in keys):
    target = jax.jit(lambda: models.init_variables(module, config))()

  loaded = []

  def load(path, init):
    names = tuple(p.key for p in path)[1:]  # Drop the collection name.
    key = _torch_key(names)
    layout = _layout(names, len(init.shape))
    if keeps_init(key):
      return init
    expected = _torch_shape(init.shape, layout)
    if key not in state:
      raise errors.UserError(f'{key!r} (shape {expected}) is missing from the state dict')
    value = state[key]
    if value.shape != expected:
      raise errors.UserError(f'{key!r} has shape {value.shape}, the model expects {expected}')
    loaded.append(key)
    return jnp.asarray(_from_torch_layout(value, layout), init.dtype)

  variables = jax.tree_util.tree_map_with_path(load, target)
  unused = sorted(k for k in set(state) - set(loaded) if not keeps_init(k))
  if unused:
    raise errors.UserError(f'{len(unused)} key(s) of the state dict fit no variable of the model '
                           f'(wrong depth or variant?): {", ".join(unused[:10])}'
                     + (' ...' if len(unused) > 10 else ''))
  case = ('backbone only (temporal modules keep their init)' if backbone_only
          else 'whole STM checkpoint')
  return variables, f'{case}: {len(loaded)} tensors loaded, fc {fc_status}'


def from_torch(state_dict: dict[str, np.ndarray], config: ml_collections.ConfigDict,
               init_variables: dict[str, Any] | None = None) -> dict[str, Any]:
  """Converts a PyTorch state dict (name -> numpy array) into the model's Flax variables.

  Returns `{'params', 'batch_stats'}` for `models.create(config)`. Variables the state dict
  does not fill (temporal modules, and a class-count-mismatched `fc`, when it holds a
  backbone only) come from `init_variables`, by default a fresh init with `config.seed`.
  Raises a ValueError naming any missing, wrongly shaped or unused key, so a checkpoint of
  another depth or variant never loads silently.
  """
  variables, account = _convert(state_dict, config, init_variables)
  logging.info('from_torch: %s', account)
  return variables


def load_state_dict(path: str) -> dict[str, np.ndarray]:
  """Reads a state dict from `.pth`/`.pt` (PyTorch), `.safetensors` or `.npz` into numpy.

  A PyTorch checkpoint holding the state dict under 'state_dict' or 'model' is unwrapped.
  """
  readers = {'.pth': _load_torch, '.pt': _load_torch, '.safetensors': _load_safetensors,
             '.npz': _load_npz}
  suffix = os.path.splitext(path)[1].lower()
  if suffix not in readers:
    raise errors.UserError(f'{path}: unknown weights format {suffix!r} (expected one of '
                           f'{", ".join(readers)})')
  if not os.path.isfile(path):
    raise errors.NotFoundError(f'{path}: no such weights file')
  try:
    return readers[suffix](path)
  except ImportError:
    raise
  except Exception as e:
    raise errors.UserError(f'{path}: could not read weights ({e})') from e


def _load_safetensors(path: str) -> dict[str, np.ndarray]:
  """Reads a `.safetensors` file into numpy."""
  from safetensors import numpy as safetensors_numpy  # pylint: disable=g-import-not-at-top
  return safetensors_numpy.load_file(path)


def _load_npz(path: str) -> dict[str, np.ndarray]:
  """Reads an `.npz` file (no pickles) into numpy."""
  with np.load(path) as data:
    return dict(data)


def _load_torch(path: str) -> dict[str, np.ndarray]:
  """Reads a PyTorch checkpoint file on CPU, without unpickling arbitrary objects."""
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError(f'reading {path} needs PyTorch (pip install torch), or convert it to '
                      '.safetensors/.npz first') from e
  checkpoint = torch.load(path, map_location='cpu', weights_only=True)
  for wrapper in ('state_dict', 'model'):
    if isinstance(checkpoint, dict) and isinstance(checkpoint.get(wrapper), dict):
      checkpoint = checkpoint[wrapper]
      break
  if not isinstance(checkpoint, dict):
    raise errors.UserError(f'{path}: holds a {type(checkpoint).__name__}, not a state dict')
  out = {}
  for key, value in checkpoint.items():
    if not isinstance(value, torch.Tensor):
      raise errors.UserError(f'{path}: entry {key!r} is a {type(value).__name__}, not a tensor')
    value = value.detach().cpu()
    out[key] = (value.float() if value.dtype == torch.bfloat16 else value).numpy()
  return out


def main(config: ml_collections.ConfigDict, input_path: str, output_dir: str) -> None:
  """`launch.py --mode=convert`: converts the weights at `input_path`, saves to `output_dir`."""
  weights.check_new(os.path.abspath(output_dir))  # Before the conversion, which takes a while.
  state_dict = load_state_dict(input_path)
  variables, account = _convert(state_dict, config, None)
  weights.save_converted(variables, output_dir)
  print(f'{input_path}: {account}')
  print(f'wrote {output_dir}')
