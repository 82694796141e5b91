"""`--mode=visualize`: the stage-2 maps the block sows are the block's real tensors, sowing changes
nothing otherwise, CMM on a static clip, and the PNG of a tiny trained run."""

import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from configs import tiny
from stm_jax import models
from stm_jax.core import run_directory
from stm_jax.core import weights
from stm_jax.tools import visualize
from stm_jax.train import loop
from tests import clip_fixtures
from tests import video_fixtures

CLASSES = ['archery', 'bowling', 'cycling', 'diving', 'fencing']
T = 4  # configs/tiny.py: 4 frames at 32x32; stage 2 is at 1/4 resolution, 8x8


def _clips(seed=1):
  return jax.random.randint(jax.random.key(seed), (1, T, 32, 32, 3), 0, 256).astype(jnp.uint8)


@pytest.fixture(scope='module')
def run(tmp_path_factory):
  """A tiny STM run of 2 steps with class names (so BN statistics are not the init's), and a
  real video."""
  tmp = tmp_path_factory.mktemp('visualize')
  config = tiny.get_config()
  config.data.num_classes = len(CLASSES)
  config.batch_size = 2
  config.optim.epochs = 1
  config.optim.decay_epochs = ()
  workdir = str(tmp / 'run')
  source = clip_fixtures.source([5, 6, 7, 8])
  assert loop.train_and_evaluate(config, workdir, train_source=source).step == 2
  run_directory.write(workdir, config, CLASSES)
  video = video_fixtures.write_video(str(tmp / 'videos' / 'jump.mp4'), 11, 60, 80)
  return config, workdir, video


@pytest.fixture(scope='module')
def stm(run):
  config, workdir, _ = run
  loaded = weights.load(workdir, config)
  return loaded.model, loaded.variables, _clips()


def test_sown_maps_are_the_blocks_tensors(stm):
  model, variables, clips = stm
  maps = visualize.stage2_maps(model, variables, clips)
  assert set(maps) == {'block_input', 'cstm', 'cmm'}
  for v in maps.values():
    assert v.shape == (T, 8, 8) and v.dtype == np.float32
  # Independently: the stem (conv1 -> bn1 -> ReLU -> max pool) and the branch outputs, from
  # Flax's capture of every submodule's output.
  _, state = model.apply(variables, clips, train=False, capture_intermediates=True)
  inter = state['intermediates']
  stem = nn.max_pool(nn.relu(inter['bn1']['__call__'][0]), (3, 3), strides=(2, 2),
                     padding=((1, 1), (1, 1)))
  block = inter['layer1_0']
  cstm = nn.relu(block['bn2']['__call__'][0])
  cmm = block['mb']['__call__'][0]
  for name, full in [('block_input', stem), ('cstm', cstm), ('cmm', cmm)]:
    np.testing.assert_allclose(maps[name], np.asarray(full).mean(axis=-1), rtol=1e-5, atol=1e-6,
                               err_msg=name)


def test_sowing_changes_neither_logits_nor_variables(stm):
  model, variables, clips = stm
  plain = model.apply(variables, clips, train=False)
  sown, state = model.apply(variables, clips, train=False, mutable=['intermediates'])
  np.testing.assert_array_equal(np.asarray(plain), np.asarray(sown))
  assert set(state) == {'intermediates'}
  assert set(jax.eval_shape(model.init, jax.random.key(0), clips)) == {'params', 'batch_stats'}
  # Training steps (mutable batch_stats only) see no intermediates either.
  _, updates = jax.eval_shape(
      lambda v: model.apply(v, clips, train=True, mutable=['batch_stats'],
                            rngs={'dropout': jax.random.key(0)}), variables)
  assert set(updates) == {'batch_stats'}


def test_cmm_of_a_static_clip(stm):
  """All frames equal: r_t and d_t are the same for every t, so m_t = d_{t+1} - r_t is the same
  map for t < T-1 and zero at T-1. It is not zero before that: the depthwise 3x3 makes d != r
  (only the raw frame difference of the input would vanish)."""
  model, variables, clips = stm
  static = jnp.repeat(clips[:, :1], T, axis=1)
  maps = visualize.stage2_maps(model, variables, static)
  cmm = maps['cmm']
  np.testing.assert_array_equal(cmm[-1], 0)
  for t in range(1, T - 1):
    np.testing.assert_allclose(cmm[t], cmm[0], rtol=1e-5, atol=1e-6)
  assert np.abs(cmm[0]).max() > 1e-4
  for t in range(1, T):  # The block input is per frame: static too.
    np.testing.assert_allclose(maps['block_input'][t], maps['block_input'][0], rtol=1e-6)


@pytest.mark.parametrize('module,present', [('none', {'block_input'}),
                                            ('tsm', {'block_input'}),
                                            ('cstm', {'block_input', 'cstm'}),
                                            ('cmm', {'block_input', 'cmm'}),
                                            ('stm_concat', {'block_input', 'cstm', 'cmm'})])
def test_models_without_cstm_or_cmm_sow_the_rows_they_have(module, present):
  config = tiny.get_config()
  config.model.temporal_module = module
  model = models.create(config)
  clips = jax.ShapeDtypeStruct((1, T, 32, 32, 3), jnp.uint8)
  variables = jax.eval_shape(model.init, jax.random.key(0), clips)  # shapes only: no compile
  _, state = jax.eval_shape(
      lambda v, c: model.apply(v, c, train=False, mutable=['intermediates']), variables, clips)
  block = state['intermediates'][visualize.BLOCK]
  assert set(block) == present
  for x in block.values():
    assert x[0].shape == (T, 8, 8, config.model.width)  # frames (N*T, H, W, C), stage 2


def test_the_figure_names_and_skips_absent_rows(tmp_path):
  maps = {'block_input': np.random.default_rng(0).normal(size=(T, 8, 8)).astype(np.float32)}
  assert visualize.absent_rows(maps) == ['CSTM output', 'CMM output']
  clip = np.random.default_rng(1).integers(0, 256, (T, 32, 32, 3), dtype=np.uint8)
  path = str(tmp_path / 'tsn.png')
  visualize.plot(path, clip, maps, 'tsn', 'absent: CSTM output, CMM output')
  with Image.open(path) as image:
    width, height = image.size
  assert width > height > 200  # two rows of four panels


def test_main_writes_the_png(run, tmp_path, monkeypatch, capsys):
  config, workdir, video = run
  monkeypatch.chdir(tmp_path)
  path = visualize.main(config, workdir, video)
  assert path == str(tmp_path / 'jump_stm.png')
  with open(path, 'rb') as f:
    assert f.read(8) == b'\x89PNG\r\n\x1a\n'
  with Image.open(path) as image:
    image.verify()
  with Image.open(path) as image:
    width, height = image.size
    # 4 frame columns x 4 rows (frames, input, CSTM, CMM), about 160 pixels a panel.
    assert 500 <= width <= 1200 and 500 <= height <= 1200, image.size
    assert np.asarray(image.convert('L')).std() > 10  # not a blank image
  printed = capsys.readouterr().out
  assert f'wrote {path}' in printed and any(c in printed for c in CLASSES)
  assert 'absent' not in printed

  other = visualize.main(config, workdir, video, str(tmp_path / 'sub' / 'x.png'))
  assert other == str(tmp_path / 'sub' / 'x.png') and os.path.getsize(other) > 0


def test_bad_inputs_are_errors_naming_them(run, tmp_path):
  config, workdir, video = run
  with pytest.raises(FileNotFoundError, match='nope.mp4: no such file'):
    visualize.main(config, workdir, str(tmp_path / 'nope.mp4'))
  with pytest.raises(ValueError, match='videos: a folder without JPEG frames'):
    visualize.main(config, workdir, os.path.dirname(video))
  bad = video_fixtures.write_not_a_video(str(tmp_path / 'text.mp4'))
  with pytest.raises(ValueError, match=f'{bad}: not a readable video'):
    visualize.main(config, workdir, bad)
