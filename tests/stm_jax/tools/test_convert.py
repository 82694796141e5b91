"""Weight import: parity with a PyTorch reference, backbone-only loading, errors, the CLI path."""

import functools
import re

import jax
import numpy as np
import pytest
import safetensors.torch
import torch

from configs import tiny
from stm_jax import models
from stm_jax.core import weights
from stm_jax.tools import convert
from tests import torch_stm

T, CROP, CLASSES = 4, 64, 5
BLOCKS = (2, 1, 1, 1)  # Block index 1 is covered.


def _config(crop=CROP, **model):
  """The tiny recipe at `crop` pixels with BLOCKS, model fields overridden."""
  config = tiny.get_config()
  config.data.crop_size = crop
  config.model.blocks = BLOCKS
  config.model.cmm_reduction = 4  # 4 reduced channels in stage 2, not 1.
  config.model.update(model)
  return config


def _torch_model(config, num_classes=CLASSES, seed=0):
  """The PyTorch reference of `config`'s model, random weights and BN statistics, eval mode."""
  m = config.model
  return torch_stm.randomize_(torch_stm.TorchSTMResNet(
      num_classes, config.data.num_frames, blocks=tuple(m.blocks), width=m.width,
      temporal_module=m.temporal_module, temporal_conv=m.temporal_conv, stages=tuple(m.stages),
      first_block_only=m.first_block_only, cmm_reduction=m.cmm_reduction,
      tsm_fold_div=m.tsm_fold_div, dropout_rate=m.dropout_rate), seed)


def _state_dict(model):
  """A torch model's state dict as numpy arrays, as `convert.from_torch` takes it."""
  return {k: v.numpy() for k, v in model.state_dict().items()}


def _clips(seed=0, crop=CROP):
  """Two random uint8 clips."""
  return np.random.RandomState(seed).randint(0, 256, (2, T, crop, crop, 3)).astype(np.uint8)


def _assert_logits_match(config, variables, model, clips):
  """The JAX model's logits equal the PyTorch model's to 1e-4 of their scale."""
  apply = jax.jit(functools.partial(models.create(config).apply, train=False))
  out = np.asarray(apply(variables, clips))
  with torch.no_grad():
    ref = model(torch.from_numpy(clips)).numpy()
  np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())


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
    key = key.replace('.conv1.', '.conv1.net.').replace('fc.', 'new_fc.')
    state['module.' + (key if key.startswith('new_fc.') else 'base_model.' + key)] = value
  assert 'module.base_model.layer1.0.conv1.net.weight' in state
  _assert_logits_match(config, convert.from_torch(state, config), torch_model, _clips())


def _leaves(tree):
  """A variable tree as {path string: numpy array}."""
  return {jax.tree_util.keystr(path): np.asarray(leaf)
          for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}


def _without_temporal(tree):
  """The variables of the same network without its temporal modules (a TSN)."""
  if not isinstance(tree, dict):
    return tree
  return {k: _without_temporal(v) for k, v in tree.items() if k not in ('shift', 'mb', 'fuse')}


def test_backbone_only_weights_fill_the_backbone_of_an_stm_model():
  config = _config(temporal_module='stm')
  # ImageNet-style: no temporal keys, 1000 classes.
  backbone = _torch_model(_config(temporal_module='none'), num_classes=1000)
  shapes = jax.eval_shape(models.create(config).init, jax.random.key(0), _clips())
  rng = np.random.RandomState(1)
  init = jax.tree_util.tree_map(lambda s: rng.normal(size=s.shape).astype(np.float32), shapes)
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



def test_backbone_only_fc_is_copied_when_the_classes_match():
  config = _config(temporal_module='tsm')
  torch_model = _torch_model(_config(temporal_module='none'))
  variables = convert.from_torch(_state_dict(torch_model), config)
  np.testing.assert_array_equal(variables['params']['fc']['bias'],
                                torch_model.fc.bias.detach().numpy())


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


def test_a_deeper_checkpoint_does_not_load_silently():
  with pytest.raises(ValueError, match=r'fit no variable.*layer1\.1\.bn1\.bias'):
    convert.from_torch(_stm_state(), _config(temporal_module='stm', blocks=(1, 1, 1, 1)))


def test_cli_converts_pth_safetensors_and_npz(tmp_path, capsys):
  config = _config(temporal_module='stm')
  torch_model = _torch_model(config)
  state = torch_model.state_dict()
  paths = [tmp_path / 'stm.pth', tmp_path / 'stm.safetensors', tmp_path / 'stm.npz']
  # A training checkpoint, as the authors' (TSM-based) code saves it: DataParallel names, wrapped.
  torch.save({'epoch': 3, 'state_dict': {'module.' + k: v for k, v in state.items()}}, paths[0])
  safetensors.torch.save_file(state, str(paths[1]))
  np.savez(paths[2], **_state_dict(torch_model))

  apply = jax.jit(functools.partial(models.create(config).apply, train=False))
  clips = _clips(seed=1)
  with torch.no_grad():
    ref = torch_model(torch.from_numpy(clips)).numpy()
  for path in paths:
    output = tmp_path / (path.name + '.ckpt')
    convert.main(config, str(path), str(output))
    assert 'whole STM checkpoint' in capsys.readouterr().out
    variables = weights.load(str(output), config).variables
    assert set(variables) == {'params', 'batch_stats'}
    np.testing.assert_allclose(apply(variables, clips), ref, rtol=1e-4,
                               atol=1e-4 * np.abs(ref).max(), err_msg=str(path))
  with pytest.raises(FileExistsError, match='already exists'):
    convert.main(config, str(paths[1]), str(output))


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
