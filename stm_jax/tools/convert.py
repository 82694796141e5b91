"""Weight import: PyTorch state dicts to Flax, checked against what the checkpoint holds.

Flax module names mirror PyTorch's with `_` for `.` (`layer1_0` is `layer1.0`;
`downsample_conv`/`downsample_bn` are `downsample.0`/`downsample.1`), so the mapping is
derived by walking the Flax variable tree; only array layouts differ. Three key layouts are read,
normalised to those names:

- torchvision's ResNet and the STM authors' layout: `conv1`, `bn1`, `layer1.0.conv1`,
  `layer1.0.shift` (CSTM), `layer1.0.mb.*` (CMM), `layer1.0.fuse`, `layer1.0.downsample.{0,1}`,
  `fc`;
- TSM's repository (its `TSN` class, saved by its training script): prefixes `module.` and
  `base_model.`, `new_fc`, and a shifted block's first conv as `layerX.Y.conv1.net.*`;
- mmaction2 (`Recognizer2D` with `ResNet`/`ResNetTSM` and a TSN/TSM head): prefix `backbone.`,
  each conv with its BN as a ConvModule (`conv1.conv`, `conv1.bn`, `layerX.Y.conv2.bn`,
  `downsample.conv`, `downsample.bn`), a shifted block's first conv as
  `layerX.Y.conv1.conv.net.*`, and `cls_head.fc_cls`.

What a checkpoint holds is read off its keys (`inspect`): each block's temporal module (the
parameter scopes of `temporal.TEMPORAL_MODULES`, and for TSM the `.net.` wrapper of the shifted
conv), hence which blocks hold one, the blocks per stage (the depth), the width and the class
count. Then
- ImageNet ResNet weights (no temporal module; an `fc` of 1000 classes, or none) fill the backbone
  of any variant: temporal modules keep their initialisation, `fc` is copied when its shape
  matches, else re-initialised;
- a whole video checkpoint (TSN, TSM, CSTM, CMM, STM...) must be the model the config describes:
  otherwise the conversion stops with a UserError naming what it found and the overrides that
  describe it. `config.convert.backbone_only=True` loads only its backbone into the config's
  model instead (as for ImageNet weights; its own temporal modules are left out).
Either way a missing key, a wrong shape or a key left unused is an error naming it.
"""

import dataclasses
import itertools
import os
import pickle
import re
from typing import Any

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from input_pipeline import errors
from input_pipeline import files
from stm_jax import models
from stm_jax.core import weights
from stm_jax.models import resnet
from stm_jax.models import temporal

# A key inside one of these scopes belongs to a temporal module (models/temporal.py's table).
TEMPORAL_MARKERS = tuple(f'.{scope}.' for scope in temporal.TEMPORAL_SCOPES)
# ImageNet classifiers have this many classes: such weights without a temporal module are a
# backbone to start a video model from, not a video model.
IMAGENET_CLASSES = 1000
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

# Key normalisation (see the module docstring). Wrapper prefixes, stripped wherever they nest:
_PREFIXES = ('module.', 'base_model.', 'backbone.')
# TSM's shift wrapper around a block's first conv (TSM repository; mmaction2 wraps the conv inside
# the ConvModule), and the wrapper around a whole block (shift_place='block').
_SHIFTED_CONV = re.compile(r'^layer(\d+)\.(\d+)\.conv1\.(conv\.)?net\.')
_SHIFTED_BLOCK = re.compile(r'^layer\d+\.\d+\.net\.')
# Then, in order: classifier names, mmaction2's ConvModules (conv + bn) -> torchvision's names.
_RENAMES = (
    (re.compile(r'^new_fc\.'), 'fc.'),
    (re.compile(r'^cls_head\.fc_cls\.'), 'fc.'),
    (re.compile(r'^((?:layer\d+\.\d+\.)?)conv(\d)\.conv\.'), r'\1conv\2.'),
    (re.compile(r'^((?:layer\d+\.\d+\.)?)conv(\d)\.bn\.'), r'\1bn\2.'),
    (re.compile(r'\.downsample\.conv\.'), '.downsample.0.'),
    (re.compile(r'\.downsample\.bn\.'), '.downsample.1.'),
)
_BLOCK_KEY = re.compile(r'^layer([1-4])\.(\d+)\.([^.]+)\.')


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


def _is_temporal(key: str) -> bool:
  """Whether a PyTorch key belongs to a temporal module (CSTM, CMM or the concat fusion)."""
  return any(marker in '.' + key for marker in TEMPORAL_MARKERS)


def _block_name(where: tuple[int, int]) -> str:
  """PyTorch's name of block `(stage index, block index)`, e.g. `layer3.0`."""
  return f'layer{where[0] + 1}.{where[1]}'


@dataclasses.dataclass(frozen=True)
class Normalised:
  """A state dict under torchvision/STM names, with what the renaming itself revealed."""
  state: dict[str, np.ndarray]
  shifted: frozenset[tuple[int, int]]  # Blocks whose first conv sat in TSM's shift wrapper.
  layout: str  # Which layout the keys came in, for messages.


def normalise(state_dict: dict[str, np.ndarray], source: str = 'the state dict') -> Normalised:
  """Renames the keys of any layout the module docstring lists to torchvision/STM names.

  Raises a UserError naming `source` for two keys that land on one name, and for a TSM whose
  shift wraps whole blocks (shift_place='block'; only TSM's residual shift is implemented).
  """
  raw = list(state_dict)
  layout = 'torchvision/STM'
  if any(k.split('.', 1)[0] in ('backbone', 'cls_head') or '.backbone.' in k for k in raw):
    layout = "mmaction2's"
  elif any('base_model.' in k or k.startswith('new_fc.') or '.net.' in k for k in raw):
    layout = "the TSM repository's"
  state, shifted = {}, set()
  for key, value in state_dict.items():
    name = key
    while name.startswith(_PREFIXES):
      name = name.split('.', 1)[1]
    if _SHIFTED_BLOCK.match(name):
      raise errors.UserError(
          f'{source}: {key!r} is a TSM that shifts the input of the whole block, shortcut '
          "included (shift_place='block'); only TSM's residual shift (shift_place='blockres', "
          'its default) is implemented')
    match = _SHIFTED_CONV.match(name)
    if match:
      shifted.add((int(match[1]) - 1, int(match[2])))
      name = name[:match.end() - len('net.')] + name[match.end():]
    for pattern, replacement in _RENAMES:
      name = pattern.sub(replacement, name)
    if name.endswith('num_batches_tracked'):
      continue
    if name in state:
      raise errors.UserError(f'{source}: two keys normalise to {name!r} (one is {key!r})')
    state[name] = np.asarray(value)
  return Normalised(state, frozenset(shifted), layout)


@dataclasses.dataclass(frozen=True)
class Contents:
  """What a model holds: read off a checkpoint's keys (`inspect`) or from a config (`expected`)."""
  temporal_module: str  # A key of temporal.TEMPORAL_MODULES ('none' without temporal module).
  temporal_conv: str | None  # CSTM's form (resnet.TEMPORAL_CONVS) where the module has CSTM.
  module_blocks: frozenset[tuple[int, int]]  # (stage index, block) of the blocks holding it.
  blocks: tuple[int, ...]  # Blocks per stage.
  width: int | None  # Channels of the stem (64 for ResNet-50/101).
  num_classes: int | None  # Classes of `fc`; None without one.
  layout: str = ''  # Key layout of a checkpoint ('' for a config's model), for messages.

  @property
  def imagenet(self) -> bool:
    """A checkpoint of plain ImageNet ResNet weights: no temporal module and an ImageNet `fc`
    (or none), so a backbone to start a video model from."""
    return (bool(self.layout) and self.temporal_module == 'none'
            and self.num_classes in (None, IMAGENET_CLASSES))

  def backbone(self) -> str:
    """The ResNet, e.g. 'ResNet-101' or 'ResNet with blocks (2, 1, 1, 1) of width 8'."""
    depth = {v: k for k, v in resnet.BLOCKS_BY_DEPTH.items()}.get(self.blocks)
    name = f'ResNet-{depth}' if depth else f'ResNet with blocks {self.blocks}'
    return name if self.width in (None, 64) else f'{name} of width {self.width}'

  def placement(self) -> str:
    """Where the temporal module sits, in words."""
    total, count = sum(self.blocks), len(self.module_blocks)
    if count == total:
      return f'in all {total} blocks'
    if (temporal.TEMPORAL_MODULES[self.temporal_module].input_shift and self.module_blocks
        == resnet.module_blocks(self.blocks, self.temporal_module, tsm_placement='tsm')):
      return f"in {count} of {total} blocks: every other block, TSM's rule"
    names = ', '.join(_block_name(w) for w in sorted(self.module_blocks)[:8])
    return f'in {count} of {total} blocks ({names}{", ..." if count > 8 else ""})'

  def describe(self) -> str:
    """One phrase for messages, e.g. 'a TSM ResNet-101 (shift in 18 of 33 blocks...), 174
    classes'."""
    classes = 'no fc' if self.num_classes is None else f'{self.num_classes} classes'
    if self.imagenet:
      return f'ImageNet {self.backbone()} weights ({classes})'
    module = temporal.TEMPORAL_MODULES[self.temporal_module]
    what = f'{module.display_name} {self.backbone()}'
    if self.module_blocks:
      conv = (f', {self.temporal_conv} temporal conv'
              if module.cstm and self.temporal_conv != 'channelwise' else '')
      what += f' ({"shift" if module.input_shift else "modules"} {self.placement()}{conv})'
    return f'{what}, {classes}'


def inspect(normalised: Normalised, source: str = 'the state dict') -> Contents:
  """What a normalised state dict holds: temporal module and where, blocks, width, classes.

  A block's module is the entry of `temporal.TEMPORAL_MODULES` with its parameter scopes and, for
  TSM, its shift wrapper. Raises a UserError naming `source` for a combination no module has and
  for a checkpoint that mixes modules.
  """
  state = normalised.state
  scopes: dict[tuple[int, int], set[str]] = {}
  for key in state:
    match = _BLOCK_KEY.match(key)
    if match:
      block_scopes = scopes.setdefault((int(match[1]) - 1, int(match[2])), set())
      if match[3] in temporal.TEMPORAL_SCOPES:
        block_scopes.add(match[3])
  blocks = tuple(1 + max((b for s, b in scopes if s == stage), default=-1) for stage in range(4))
  per_block = {}
  for where in sorted(set(scopes) | normalised.shifted):
    held, shift = scopes.get(where, set()), where in normalised.shifted
    if not held and not shift:
      continue
    names = [name for name, m in temporal.TEMPORAL_MODULES.items()
             if set(m.scopes) == held and m.input_shift == shift]
    if not names:
      parts = sorted(held) + (['a TSM shift'] if shift else [])
      raise errors.UserError(f'{source}: block {_block_name(where)} holds {" and ".join(parts)}, '
                             'which no temporal module of stm_jax/models/temporal.py combines')
    per_block[where] = names[0]
  kinds = sorted(set(per_block.values()))
  if len(kinds) > 1:
    found = ', '.join(f'{temporal.TEMPORAL_MODULES[k].display_name} in '
                      f'{_block_name(min(w for w, n in per_block.items() if n == k))}'
                      for k in kinds)
    raise errors.UserError(f'{source}: mixes temporal modules ({found}); a model has one kind')
  module = kinds[0] if kinds else 'none'
  temporal_conv = None
  if temporal.TEMPORAL_MODULES[module].cstm:
    where = min(per_block)
    kernel = state.get(f'{_block_name(where)}.{temporal.CSTM_SCOPE}.weight')
    if kernel is not None and kernel.ndim == 3:
      temporal_conv = 'channelwise' if kernel.shape[1] == 1 else 'full'
  width = state['conv1.weight'].shape[0] if 'conv1.weight' in state else None
  classes = state['fc.weight'].shape[0] if 'fc.weight' in state else None
  return Contents(module, temporal_conv, frozenset(per_block), blocks, width, classes,
                  normalised.layout)


def expected(config: ml_collections.ConfigDict) -> Contents:
  """What the model `config` describes holds, in `inspect`'s terms."""
  m = config.model
  blocks = tuple(m.blocks) or resnet.BLOCKS_BY_DEPTH[m.depth]
  cstm = temporal.TEMPORAL_MODULES[m.temporal_module].cstm
  return Contents(m.temporal_module, m.temporal_conv if cstm else None,
                  resnet.module_blocks(blocks, m.temporal_module, tuple(m.stages),
                                       m.first_block_only, m.tsm_placement),
                  blocks, m.width, config.data.num_classes)


def _flag(field: str, value: Any) -> str:
  """A command-line override, e.g. `--config.model.stages='(4, 5)'`."""
  if isinstance(value, tuple):
    return f"--config.{field}='{value}'"
  return f'--config.{field}={value}'


def _backbone_overrides(found: Contents, config: ml_collections.ConfigDict) -> list[str]:
  """The overrides that give the config's model the checkpoint's backbone (depth, width)."""
  m, flags = config.model, []
  if found.blocks != expected(config).blocks:
    depth = {v: k for k, v in resnet.BLOCKS_BY_DEPTH.items()}.get(found.blocks)
    if depth is None:
      flags.append(_flag('model.blocks', found.blocks))
    else:
      flags.append(_flag('model.depth', depth))
      if m.blocks:
        flags.append(_flag('model.blocks', ()))
  if found.width is not None and found.width != m.width:
    flags.append(_flag('model.width', found.width))
  return flags


def _placement_overrides(found: Contents, config: ml_collections.ConfigDict,
                         source: str) -> list[str]:
  """The fewest overrides of `model.stages`, `first_block_only` and `tsm_placement` that put
  the checkpoint's module where it has it; raises a UserError when no setting does."""
  m = config.model
  if not found.module_blocks:
    return []
  current = {'model.stages': tuple(m.stages), 'model.first_block_only': m.first_block_only,
             'model.tsm_placement': m.tsm_placement}
  stage_sets = [s for r in range(1, 5) for s in itertools.combinations((2, 3, 4, 5), r)]
  best = None
  for stages, first_only, placement in itertools.product(stage_sets, (False, True),
                                                         resnet.TSM_PLACEMENTS):
    if resnet.module_blocks(found.blocks, found.temporal_module, stages, first_only,
                            placement) != found.module_blocks:
      continue
    candidate = {'model.stages': stages, 'model.first_block_only': first_only,
                 'model.tsm_placement': placement}
    changes = [_flag(k, v) for k, v in candidate.items() if current[k] != v]
    if best is None or len(changes) < len(best):
      best = changes
  if best is None:
    raise errors.UserError(
        f'{source}: holds {found.describe()}; no setting of config.model.stages, '
        'first_block_only and tsm_placement puts the module in these blocks')
  return best


def _overrides(found: Contents, config: ml_collections.ConfigDict, source: str) -> list[str]:
  """Every override that makes the config describe the checkpoint's whole model."""
  m = config.model
  flags = _backbone_overrides(found, config)
  if found.temporal_module != m.temporal_module:
    flags.append(_flag('model.temporal_module', found.temporal_module))
  if found.temporal_conv and found.temporal_conv != m.temporal_conv:
    flags.append(_flag('model.temporal_conv', found.temporal_conv))
  flags += _placement_overrides(found, config, source)
  if found.num_classes != config.data.num_classes:
    flags.append(_flag('data.num_classes', found.num_classes))
  return flags


def _check_contents(found: Contents, config: ml_collections.ConfigDict, backbone_only: bool,
                    source: str) -> None:
  """Raises a UserError naming what the checkpoint holds, what the config describes and the
  overrides to use, unless the checkpoint fits the conversion asked for."""
  want = expected(config)
  backbone_flags = _backbone_overrides(found, config)
  if found.imagenet or backbone_only:
    if backbone_flags:
      raise errors.UserError(
          f'{source}: holds {found.describe()}; the config describes {want.describe()}, whose '
          f'backbone differs: add {" ".join(backbone_flags)}')
    return
  flags = _overrides(found, config, source)
  if flags:
    raise errors.UserError(
        f'{source}: holds {found.describe()} ({found.layout} layout); the config describes '
        f'{want.describe()}. To convert it as it is, add {" ".join(flags)}; to load only its '
        "backbone into the config's model, add "
        + ' '.join(['--config.convert.backbone_only=True'] + backbone_flags))


def _convert(state_dict: dict[str, np.ndarray], config: ml_collections.ConfigDict,
             init_variables: dict[str, Any] | None,
             source: str = 'the state dict') -> tuple[dict[str, Any], str]:
  """`from_torch`, also returning a one-line account of what was loaded."""
  models.check_model_config(config)
  backbone_only = config.convert.backbone_only
  if not isinstance(backbone_only, bool):
    raise errors.bad_field('convert.backbone_only', backbone_only, 'must be True or False')
  normalised = normalise(state_dict, source)
  state = normalised.state
  found = inspect(normalised, source)
  _check_contents(found, config, backbone_only, source)
  backbone = found.imagenet or backbone_only
  want = expected(config)

  module = models.create(config)
  # Shapes suffice unless some variable keeps its init; initialising compiles the model.
  target = init_variables
  if target is None:
    target = jax.eval_shape(lambda: models.init_variables(module, config))
  target = {c: target[c] for c in models.VARIABLE_COLLECTIONS}
  classes = target['params']['fc']['kernel'].shape[1]
  keep_fc = backbone and found.num_classes != classes
  if keep_fc:
    logging.warning('fc: the checkpoint has %s classes, the model %d: fc keeps its initialisation',
                    found.num_classes or 'no', classes)

  def keeps_init(key):
    return (backbone and _is_temporal(key)) or (keep_fc and key.startswith('fc.'))

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
    want_shape = _torch_shape(init.shape, layout)
    if key not in state:
      raise errors.UserError(f'{source}: {key!r} (shape {want_shape}) is missing from the state '
                             'dict')
    value = state[key]
    if value.shape != want_shape:
      raise errors.UserError(f'{source}: {key!r} has shape {value.shape}, the model expects '
                             f'{want_shape}')
    loaded.append(key)
    return jnp.asarray(_from_torch_layout(value, layout), init.dtype)

  variables = jax.tree_util.tree_map_with_path(load, target)
  left_out = sorted(k for k in state if backbone and _is_temporal(k))
  unused = sorted(set(state) - set(loaded) - set(left_out) - {k for k in state if keep_fc
                                                             and k.startswith('fc.')})
  if unused:
    raise errors.UserError(f'{source}: {len(unused)} key(s) of the state dict fit no variable of '
                           f'the model (wrong depth or variant?): {", ".join(unused[:10])}'
                           + (' ...' if len(unused) > 10 else ''))
  if not backbone:
    return variables, (f'whole checkpoint: {found.describe()} ({found.layout} layout): '
                       f'{len(loaded)} tensors loaded')
  why = 'ImageNet weights' if found.imagenet else '--config.convert.backbone_only=True'
  kept = []
  initialised = sorted(k for k in keys if _is_temporal(k))
  if initialised:
    kept.append(f'the {temporal.TEMPORAL_MODULES[want.temporal_module].display_name} modules of '
                f'{len(want.module_blocks)} blocks ({len(initialised)} tensors)')
  if keep_fc:
    kept.append(f'fc (the checkpoint has {found.num_classes} classes, the model {classes})'
                if found.num_classes else 'fc (the checkpoint has none)')
  not_used = []
  if left_out:
    not_used.append(f'its {temporal.TEMPORAL_MODULES[found.temporal_module].display_name} '
                    f'modules ({len(left_out)} tensors)')
  if found.module_blocks and temporal.TEMPORAL_MODULES[found.temporal_module].input_shift and (
      found.module_blocks != want.module_blocks or found.temporal_module != want.temporal_module):
    not_used.append('its temporal shift (no weights) where the model does not shift')
  account = (f'backbone only ({why}): {len(loaded)} tensors of {found.describe()} loaded into '
             f'{want.describe()}; initialised: {", ".join(kept) or "nothing"}')
  if not_used:
    account += f'; not used: {", ".join(not_used)}'
  return variables, account


def from_torch(state_dict: dict[str, np.ndarray], config: ml_collections.ConfigDict,
               init_variables: dict[str, Any] | None = None,
               source: str = 'the state dict') -> dict[str, Any]:
  """Converts a PyTorch state dict (name -> numpy array) into the model's Flax variables.

  Returns `{'params', 'batch_stats'}` for `models.create(config)`. What the state dict holds must
  be that model (see the module docstring), unless it holds ImageNet weights or
  `config.convert.backbone_only` is True: then only the backbone is loaded, and the variables it
  does not fill (temporal modules, a class-count-mismatched `fc`) come from `init_variables`, by
  default a fresh init with `config.seed`. Raises a UserError (a ValueError) naming `source`, what
  it holds and the overrides that fit it, or any missing, wrongly shaped or unused key, so a
  checkpoint of another depth or variant never loads silently.
  """
  variables, account = _convert(state_dict, config, init_variables, source)
  logging.info('from_torch: %s', account)
  return variables


def load_state_dict(path: str) -> dict[str, np.ndarray]:
  """Reads a state dict from `.pth`/`.pt`/`.pth.tar` (PyTorch), `.safetensors` or `.npz`.

  A PyTorch checkpoint holding the state dict under 'state_dict', 'model' or 'model_state' (a
  training script's checkpoint: TSM's `ckpt.pth.tar`, mmaction2's `epoch_50.pth`) is unwrapped.
  """
  readers = {'.pth': _load_torch, '.pt': _load_torch, '.tar': _load_torch,
             '.safetensors': _load_safetensors, '.npz': _load_npz}
  suffix = os.path.splitext(path)[1].lower()
  if suffix not in readers:
    raise errors.UserError(f'{path}: unknown weights format {suffix!r} (expected one of .pth, '
                           '.pt, .pth.tar, .safetensors, .npz)')
  if not files.resolve(path).is_file():
    raise errors.NotFoundError(f'{path}: no such weights file')
  try:
    with files.local_copy(path) as local:
      return readers[suffix](local)
  except (ImportError, errors.UserError):
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
  try:
    checkpoint = torch.load(path, map_location='cpu', weights_only=True)
  except pickle.UnpicklingError as e:
    raise errors.UserError(
        f'{path}: holds Python objects besides tensors, which loading with weights_only=True '
        f'refuses ({str(e).strip().splitlines()[0]}). If you trust the file, save its state dict '
        f"alone and convert that: python -c \"import torch; c = torch.load('{path}', "
        "weights_only=False); torch.save(c.get('state_dict', c), 'weights.pth')\"") from None
  for wrapper in ('state_dict', 'model', 'model_state'):
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
  weights.check_new(output_dir)  # Before the conversion, which takes a while.
  state_dict = load_state_dict(input_path)
  variables, account = _convert(state_dict, config, None, input_path)
  weights.save_converted(variables, output_dir)
  print(f'{input_path}: {account}')
  print(f'wrote {output_dir}')
