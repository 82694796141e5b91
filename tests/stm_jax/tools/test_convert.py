"""Weight import: parity with PyTorch references (ours, TSM's repository's and mmaction2's layouts,
TSM-ResNet-101's placement), what a checkpoint holds against the config, backbone-only loading,
errors, the CLI path."""

import fractions
import functools
import re

import jax
import numpy as np
import pytest
import safetensors.torch
import torch

from configs import default
from configs import tiny
from input_pipeline import errors
from stm_jax import models
from stm_jax.core import weights
from stm_jax.tools import convert
from tests import torch_stm
from tests import torch_tsm

T, CROP, CLASSES = 4, 64, 5
BLOCKS = (2, 1, 1, 1)  # Block index 1 is covered.
PEER_CROP = 32  # The peers' full-width ResNet-50/101 at 4 frames of 32x32, one clip.


def _config(crop=CROP, **model):
  """The tiny recipe at `crop` pixels with BLOCKS, model fields overridden."""
  config = tiny.get_config()
  config.data.crop_size = crop
  config.model.blocks = BLOCKS
  config.model.cmm_reduction = 4  # 4 reduced channels in stage 2, not 1.
  config.model.update(model)
  return config


def _peer_config(temporal_module, depth, classes=CLASSES):
  """The full-width ResNet-`depth` of `temporal_module` at T frames of PEER_CROP pixels."""
  config = default.get_config()
  config.model.temporal_module = temporal_module
  config.model.depth = depth
  config.data.num_frames = T
  config.data.crop_size = PEER_CROP
  config.data.num_classes = classes
  return config


def _torch_model(config, num_classes=CLASSES, seed=0):
  """The PyTorch reference of `config`'s model, random weights and BN statistics, eval mode."""
  m = config.model
  return torch_stm.randomize_(torch_stm.TorchSTMResNet(
      num_classes, config.data.num_frames, blocks=tuple(m.blocks), width=m.width,
      temporal_module=m.temporal_module, temporal_conv=m.temporal_conv, stages=tuple(m.stages),
      first_block_only=m.first_block_only, cmm_reduction=m.cmm_reduction,
      tsm_fold_div=m.tsm_fold_div, dropout_rate=m.dropout_rate), seed)


def _state_dict(model, prefix=''):
  """A torch model's state dict as numpy arrays, as `convert.from_torch` takes it."""
  return {prefix + k: v.numpy() for k, v in model.state_dict().items()}


def _clips(seed=0, crop=CROP, batch=2):
  """`batch` random uint8 clips."""
  return np.random.RandomState(seed).randint(0, 256, (batch, T, crop, crop, 3)).astype(np.uint8)


def _logits(config, variables, clips, jit=True):
  """The JAX model's logits (eager for the full-size peers: no compile of a ResNet-101)."""
  apply = functools.partial(models.create(config).apply, train=False)
  return np.asarray((jax.jit(apply) if jit else apply)(variables, clips))


def _torch_logits(model, clips):
  with torch.no_grad():
    return model(torch.from_numpy(clips)).numpy()


def _assert_logits_match(config, variables, model, clips, jit=True):
  """The JAX model's logits equal the PyTorch model's to 1e-4 of their scale; returns the largest
  difference relative to that scale."""
  out, ref = _logits(config, variables, clips, jit), _torch_logits(model, clips)
  np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())
  return float(np.abs(out - ref).max() / np.abs(ref).max())


def _backbone_only(config):
  config.convert.backbone_only = True
  return config


# --- parity: our reference -----------------------------------------------------------------------

@pytest.mark.parametrize('model', [
    dict(temporal_module='none'),
    dict(temporal_module='tsm'),
    dict(temporal_module='cstm', temporal_conv='full'),
    dict(temporal_module='cmm'),
    dict(temporal_module='stm'),
    dict(temporal_module='stm', channelwise_impl='grouped'),
    dict(temporal_module='stm_concat'),
    dict(temporal_module='stm', stages=(4, 5), first_block_only=True, blocks=(2, 1, 2, 1)),
    dict(temporal_module='stm', crop=48),  # Stage 5 strides a 3x3 map: CMM pools in ceil mode.
], ids=['tsn', 'tsm', 'cstm_full', 'cmm', 'stm', 'stm_grouped', 'stm_concat', 'stm_45_first',
        'stm_odd_size'])
def test_converted_model_matches_torch(model):
  config = _config(**model)
  torch_model = _torch_model(config)
  variables = convert.from_torch(_state_dict(torch_model), config)
  _assert_logits_match(config, variables, torch_model, _clips(crop=config.data.crop_size))


def test_tsm_repo_layout_is_normalised():
  """`module.base_model.` prefixes, `.conv1.net.` and `new_fc` (the TSM repo) load as usual."""
  config = _config(temporal_module='tsm')
  torch_model = _torch_model(config)
  state = {}
  for key, value in _state_dict(torch_model).items():
    key = key.replace('fc.', 'new_fc.')
    state['module.' + (key if key.startswith('new_fc.') else 'base_model.' + key)] = value
  assert 'module.base_model.layer1.0.conv1.net.weight' in state
  _assert_logits_match(config, convert.from_torch(state, config), torch_model, _clips())


# --- parity: the peers' own models ----------------------------------------------------------------

def test_tsm_resnet101_of_the_tsm_repository_matches_torch(tmp_path):
  """TSM's TSN class at ResNet-101 shifts 18 of 33 blocks; saved as its training script saves it
  (`ckpt.best.pth.tar`, DataParallel names), it converts and computes the same logits."""
  reference = torch_stm.randomize_(torch_tsm.TSMRepoTSN(CLASSES, T, depth=101, is_shift=True))
  state = reference.state_dict()
  assert sum('.conv1.net.' in k for k in state) == 2 + 2 + 12 + 2  # TSM's rule, by hand.
  path = tmp_path / 'ckpt.best.pth.tar'
  torch.save({'epoch': 50, 'arch': 'resnet101', 'best_prec1': 47.2,
              'state_dict': {'module.' + k: v for k, v in state.items()}}, path)
  config = _peer_config('tsm', 101)
  variables = convert.from_torch(convert.load_state_dict(str(path)), config)
  clips = _clips(crop=PEER_CROP, batch=1)
  error = _assert_logits_match(config, variables, reference, clips, jit=False)
  print(f'TSM-R101 (TSM repository) parity: max |jax - torch| / max |torch| = {error:.1e}')
  # Shifting every block (the model before TSM's rule) is another function of the same weights.
  config.model.tsm_placement = 'every_block'
  ref = _torch_logits(reference, clips)
  assert np.abs(_logits(config, variables, clips, jit=False) - ref).max() > 1e-2 * np.abs(ref).max()


@pytest.mark.parametrize('temporal_module,depth', [('none', 50), ('tsm', 50), ('tsm', 101)],
                         ids=['tsn_r50', 'tsm_r50', 'tsm_r101'])
def test_mmaction2_checkpoints_match_torch(tmp_path, temporal_module, depth):
  """mmaction2's Recognizer2D (ResNet + TSNHead, ResNetTSM + TSMHead) as its runner saves it."""
  reference = torch_stm.randomize_(torch_tsm.MMRecognizer2D(
      CLASSES, T, depth=depth, is_shift=temporal_module == 'tsm'))
  state = reference.state_dict()
  assert 'backbone.conv1.conv.weight' in state and 'cls_head.fc_cls.weight' in state
  if temporal_module == 'tsm':
    assert 'backbone.layer1.0.conv1.conv.net.weight' in state
  path = tmp_path / 'epoch_50.pth'
  torch.save({'meta': {'epoch': 50, 'mmaction2_version': '1.2.0'}, 'state_dict': state}, path)
  config = _peer_config(temporal_module, depth)
  variables = convert.from_torch(convert.load_state_dict(str(path)), config)
  error = _assert_logits_match(config, variables, reference, _clips(crop=PEER_CROP, batch=1),
                               jit=False)
  print(f'mmaction2 {temporal_module}-R{depth} parity: max |jax - torch| / max |torch| = '
        f'{error:.1e}')


# --- what a checkpoint holds against the config ---------------------------------------------------

def _raises(match_parts, state, config):
  """`from_torch` raises a UserError whose message contains every string of `match_parts`."""
  with pytest.raises(errors.UserError) as info:
    convert.from_torch(state, config)
  for part in match_parts:
    assert part in str(info.value), (part, str(info.value))
  return str(info.value)


def test_a_tsm_resnet101_into_the_default_config_names_every_override():
  state = _state_dict(torch_tsm.TSMRepoTSN(174, T, depth=101), 'module.')
  message = _raises(['TSM ResNet-101', 'shift in 18 of 33 blocks', '174 classes',
                     'STM ResNet-50', '--config.model.depth=101',
                     '--config.model.temporal_module=tsm', '--config.convert.backbone_only=True'],
                    state, default.get_config())
  assert '--config.data.num_classes' not in message  # 174 is the default's count.
  config = _peer_config('tsm', 101, classes=174)
  config.model.tsm_placement = 'every_block'
  _raises(['shift in all 33 blocks', '--config.model.tsm_placement=tsm'], state, config)


@pytest.mark.parametrize('found,config_module,flag', [
    ('tsm', 'none', '--config.model.temporal_module=tsm'),
    ('tsm', 'stm', '--config.model.temporal_module=tsm'),
    ('none', 'tsm', '--config.model.temporal_module=none'),
    ('stm', 'none', '--config.model.temporal_module=stm'),
    ('cstm', 'stm', '--config.model.temporal_module=cstm'),
    ('cmm', 'cstm', '--config.model.temporal_module=cmm'),
    ('stm_concat', 'stm', '--config.model.temporal_module=stm_concat'),
    ('stm', 'stm_concat', '--config.model.temporal_module=stm'),
])
def test_a_whole_checkpoint_of_another_variant_stops_naming_both(found, config_module, flag):
  state = _state_dict(_torch_model(_config(temporal_module=found)))
  display = {'none': 'TSN', 'tsm': 'TSM', 'cstm': 'CSTM', 'cmm': 'CMM', 'stm': 'STM',
             'stm_concat': 'STM (concat)'}
  _raises([f'holds {display[found]} ResNet', f'the config describes {display[config_module]} '
           'ResNet', flag, '--config.convert.backbone_only=True'],
          state, _config(temporal_module=config_module))


def test_placement_temporal_conv_and_class_count_are_checked():
  placed = dict(temporal_module='stm', stages=(4, 5), first_block_only=True, blocks=(2, 1, 2, 1))
  state = _state_dict(_torch_model(_config(**placed)))
  _raises(["--config.model.stages='(4, 5)'", '--config.model.first_block_only=True'], state,
          _config(temporal_module='stm', blocks=(2, 1, 2, 1)))
  state = _state_dict(_torch_model(_config(temporal_module='cstm', temporal_conv='full')))
  _raises(['full temporal conv', '--config.model.temporal_conv=full'], state,
          _config(temporal_module='cstm'))
  state = _state_dict(_torch_model(_config(temporal_module='stm'), num_classes=7))
  _raises(['7 classes', '--config.data.num_classes=7'], state, _config(temporal_module='stm'))


def test_a_checkpoint_of_another_depth_names_the_override_even_for_its_backbone():
  backbone = _state_dict(_torch_model(_config(temporal_module='none'), num_classes=1000))
  _raises(["--config.model.blocks='(2, 1, 1, 1)'"], backbone,
          _config(temporal_module='stm', blocks=(1, 1, 1, 1)))
  _raises(['--config.model.width=16'], backbone, _config(temporal_module='stm', width=8))
  state = _state_dict(_torch_model(_config(temporal_module='tsm')))
  _raises(["--config.model.blocks='(2, 1, 1, 1)'"], state,
          _backbone_only(_config(temporal_module='stm', blocks=(1, 1, 1, 1))))


def test_unknown_combinations_mixtures_and_block_shifts_are_errors():
  state = _state_dict(_torch_model(_config(temporal_module='cmm')))
  state['layer1.0.fuse.weight'] = np.zeros((8, 16, 1, 1), np.float32)
  _raises(['layer1.0 holds fuse and mb', 'no temporal module'], state, _config())
  state = _state_dict(_torch_model(_config(temporal_module='stm')))
  state = {k: v for k, v in state.items() if not k.startswith('layer4.0.mb.')}
  _raises(['mixes temporal modules', 'CSTM in layer4.0', 'STM in layer1.0'], state, _config())
  state = {k.replace('layer1.0.', 'layer1.0.net.'): v
           for k, v in _state_dict(_torch_model(_config(temporal_module='none'))).items()}
  _raises(["shift_place='block'", "'layer1.0.net.conv1.weight'"], state,
          _config(temporal_module='tsm'))


# --- backbone only --------------------------------------------------------------------------------

def _leaves(tree):
  """A variable tree as {path string: numpy array}."""
  return {jax.tree_util.keystr(path): np.asarray(leaf)
          for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}


def _without_temporal(tree):
  """The variables of the same network without its temporal modules (a TSN)."""
  if not isinstance(tree, dict):
    return tree
  return {k: _without_temporal(v) for k, v in tree.items() if k not in ('shift', 'mb', 'fuse')}


def _random_init(config):
  """Random variables of `config`'s model (so that kept ones are told apart from loaded ones)."""
  shapes = jax.eval_shape(models.create(config).init, jax.random.key(0), _clips())
  rng = np.random.RandomState(1)
  return jax.tree_util.tree_map(lambda s: rng.normal(size=s.shape).astype(np.float32), shapes)


def test_imagenet_weights_fill_the_backbone_of_an_stm_model():
  config = _config(temporal_module='stm')
  # ImageNet-style: no temporal keys, 1000 classes.
  backbone = _torch_model(_config(temporal_module='none'), num_classes=1000)
  init = _random_init(config)
  variables = convert.from_torch(_state_dict(backbone), config, init_variables=init)

  loaded, kept = _leaves(variables), _leaves(init)
  assert loaded.keys() == kept.keys()
  temporal = [k for k in kept if "['shift']" in k or "['mb']" in k]
  # Per block: the CSTM kernel; CMM's three kernels and stage_bn's scale, bias, mean, var.
  assert len(temporal) == 8 * sum(BLOCKS)
  for key in temporal + ["['params']['fc']['kernel']", "['params']['fc']['bias']"]:
    np.testing.assert_array_equal(loaded[key], kept[key], err_msg=key)
  # The rest is torch's backbone: as a TSN with the same fc, it matches torch.
  backbone.fc = torch.nn.Linear(backbone.fc.in_features, CLASSES)
  with torch.no_grad():
    backbone.fc.weight.copy_(torch.from_numpy(loaded["['params']['fc']['kernel']"].T))
    backbone.fc.bias.copy_(torch.from_numpy(loaded["['params']['fc']['bias']"]))
  _assert_logits_match(_config(temporal_module='none'), _without_temporal(variables), backbone,
                       _clips())


def test_backbone_only_loads_a_tsm_checkpoint_into_stm_and_says_so(tmp_path, capsys):
  tsm = _torch_model(_config(temporal_module='tsm'), num_classes=7)
  config = _backbone_only(_config(temporal_module='stm'))
  init = _random_init(config)
  variables = convert.from_torch(_state_dict(tsm), config, init_variables=init)
  loaded, kept = _leaves(variables), _leaves(init)
  for key in kept:
    if "['shift']" in key or "['mb']" in key or "['fc']" in key:  # 7 classes, the model 5.
      np.testing.assert_array_equal(loaded[key], kept[key], err_msg=key)
  # The backbone is TSM's, without its shift: the TSN of the same weights.
  tsn = _torch_model(_config(temporal_module='none'))
  tsn.load_state_dict({k.replace('.conv1.net.', '.conv1.'): v
                       for k, v in tsm.state_dict().items() if not k.startswith('fc.')} | {
                           'fc.weight': torch.from_numpy(loaded["['params']['fc']['kernel']"].T),
                           'fc.bias': torch.from_numpy(loaded["['params']['fc']['bias']"])})
  _assert_logits_match(_config(temporal_module='none'), _without_temporal(variables),
                       tsn.eval(), _clips())
  # The command line says what was loaded and what was not.
  path = tmp_path / 'tsm.pth'
  torch.save(tsm.state_dict(), path)
  convert.main(config, str(path), str(tmp_path / 'out'))
  out = capsys.readouterr().out
  for part in ('backbone only (--config.convert.backbone_only=True)', 'of TSM ResNet',
               'loaded into STM ResNet', 'the STM modules of 5 blocks (40 tensors)',
               'fc (the checkpoint has 7 classes, the model 5)',
               'its temporal shift (no weights) where the model does not shift'):
    assert part in out, (part, out)


def test_backbone_only_copies_fc_when_the_classes_match_and_leaves_out_temporal_weights():
  stm = _torch_model(_config(temporal_module='stm'))
  config = _backbone_only(_config(temporal_module='tsm'))
  variables = convert.from_torch(_state_dict(stm), config)
  np.testing.assert_array_equal(variables['params']['fc']['bias'], stm.fc.bias.detach().numpy())
  np.testing.assert_array_equal(variables['params']['layer2_0']['conv2']['kernel'],
                                stm.layer2[0].conv2.weight.detach().numpy().transpose(2, 3, 1, 0))


# --- key errors -----------------------------------------------------------------------------------

def _stm_state():
  """The state dict of a random tiny STM model."""
  return _state_dict(_torch_model(_config(temporal_module='stm')))


def test_a_missing_key_raises_naming_it():
  state = _stm_state()
  del state['layer1.0.mb.stage_conv.weight']
  with pytest.raises(ValueError, match=re.escape("'layer1.0.mb.stage_conv.weight'")):
    convert.from_torch(state, _config(temporal_module='stm'))


def test_a_wrong_shape_raises_naming_the_key_and_both_shapes():
  state = _stm_state()
  state['layer2.0.conv2.weight'] = np.zeros((32, 32, 1, 1), np.float32)
  with pytest.raises(ValueError, match=re.escape(
      "'layer2.0.conv2.weight' has shape (32, 32, 1, 1), the model expects (32, 32, 3, 3)")):
    convert.from_torch(state, _config(temporal_module='stm'))


def test_an_unused_key_raises_naming_it():
  state = _stm_state()
  state['layer5.0.conv1.weight'] = np.zeros((8, 8, 1, 1), np.float32)
  with pytest.raises(ValueError, match=re.escape('layer5.0.conv1.weight')):
    convert.from_torch(state, _config(temporal_module='stm'))


# --- files and the command line -------------------------------------------------------------------

def test_cli_converts_pth_tar_safetensors_and_npz(tmp_path, capsys):
  config = _config(temporal_module='stm')
  torch_model = _torch_model(config)
  state = torch_model.state_dict()
  paths = [tmp_path / 'stm.pth', tmp_path / 'ckpt.pth.tar', tmp_path / 'stm.safetensors',
           tmp_path / 'stm.npz']
  # Training checkpoints, as the authors' (TSM-based) code saves them: DataParallel names,
  # wrapped; and a `model_state` wrapper.
  torch.save({'epoch': 3, 'state_dict': {'module.' + k: v for k, v in state.items()}}, paths[0])
  torch.save({'epoch': 3, 'model_state': state}, paths[1])
  safetensors.torch.save_file(state, str(paths[2]))
  np.savez(paths[3], **_state_dict(torch_model))

  clips = _clips(seed=1)
  ref = _torch_logits(torch_model, clips)
  for path in paths:
    output = tmp_path / (path.name + '.ckpt')
    convert.main(config, str(path), str(output))
    assert 'whole checkpoint: STM ResNet' in capsys.readouterr().out
    variables = weights.load(str(output), config).variables
    assert set(variables) == {'params', 'batch_stats'}
    np.testing.assert_allclose(_logits(config, variables, clips), ref, rtol=1e-4,
                               atol=1e-4 * np.abs(ref).max(), err_msg=str(path))
  with pytest.raises(FileExistsError, match='already exists'):
    convert.main(config, str(paths[2]), str(output))


def test_unreadable_or_unknown_files_raise_naming_them(tmp_path):
  unknown = tmp_path / 'weights.bin'
  unknown.write_bytes(b'\0' * 8)
  with pytest.raises(ValueError, match='weights.bin'):
    convert.load_state_dict(str(unknown))
  corrupt = tmp_path / 'weights.pth'
  corrupt.write_bytes(b'not a checkpoint')
  with pytest.raises(ValueError, match='weights.pth'):
    convert.load_state_dict(str(corrupt))
  with pytest.raises(FileNotFoundError, match='missing.npz'):
    convert.load_state_dict(str(tmp_path / 'missing.npz'))
  # A checkpoint with objects weights_only refuses: the error says how to keep the state dict.
  pickled = tmp_path / 'epoch_1.pth'
  torch.save({'state_dict': {'fc.weight': torch.zeros(2, 2)},
              'message_hub': fractions.Fraction(1, 3)}, pickled)
  with pytest.raises(errors.UserError, match=r'epoch_1\.pth: holds Python objects.*weights_only'):
    convert.load_state_dict(str(pickled))
