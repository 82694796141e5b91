"""`--mode=export`: a tiny trained run exported with a symbolic batch, reloaded, gives the logits
of the in-process model for several batch sizes; its signature; no overwriting."""

import json
import os

import jax
import numpy as np
import pytest

from configs import tiny
from stm_jax.core import run_directory
from stm_jax.core import weights
from stm_jax.tools import export
from stm_jax.train import loop
from tests import clip_fixtures

CLASSES = ['archery', 'bowling', 'cycling', 'diving', 'fencing']


@pytest.fixture(scope='module')
def exported(tmp_path_factory):
  """A tiny run of 2 steps with class names, exported once; (config, run, loaded, export dir)."""
  tmp = tmp_path_factory.mktemp('export')
  config = tiny.get_config()
  config.batch_size = 2
  config.optim.epochs = 1
  config.optim.decay_epochs = ()
  workdir = str(tmp / 'run')
  assert loop.train_and_evaluate(config, workdir,
                                    train_source=clip_fixtures.source([5, 6, 7, 8])).step == 2
  run_directory.write(workdir, config, CLASSES)
  output = str(tmp / 'exports' / 'tiny')
  sig = export.main(config, workdir, output)
  return config, workdir, weights.load(workdir, config), output, sig


@pytest.mark.parametrize('batch', [1, 3])
def test_reloaded_export_gives_the_models_logits(exported, batch):
  _, _, loaded, output, _ = exported
  model = export.load(output)
  clips = np.random.RandomState(batch).randint(0, 256, (batch, 4, 32, 32, 3)).astype(np.uint8)
  got = model(clips)
  assert got.shape == (batch, 5) and got.dtype == np.float32
  want = jax.jit(loaded.logits)(clips)
  np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-5, rtol=1e-5)
  assert np.ptp(np.asarray(want)) > 1e-3  # not a constant function: the comparison means something


def test_signature(exported):
  _, workdir, _, output, sig = exported
  assert sorted(os.listdir(output)) == [export.SERIALIZED_FILE, export.SIGNATURE_FILE]
  with open(os.path.join(output, export.SIGNATURE_FILE)) as f:
    saved = json.load(f)
  assert saved == sig
  assert saved['input'] == {**saved['input'], 'shape': ['b', 4, 32, 32, 3], 'dtype': 'uint8'}
  assert saved['output']['shape'] == ['b', 5] and saved['output']['dtype'] == 'float32'
  config = exported[0]
  assert (saved['num_frames'], saved['crop_size'], saved['short_side']) == (
      4, 32, config.data.short_side)
  assert saved['class_names'] == CLASSES and saved['step'] == 2
  assert workdir in saved['checkpoint'] and saved['jax_version'] == jax.__version__
  assert saved['platforms'] == list(export.DEFAULT_PLATFORMS)
  assert saved['bytes'] == os.path.getsize(os.path.join(output, export.SERIALIZED_FILE))
  assert export.load(output).class_names == CLASSES


def test_signature_describes_the_preprocessing_and_the_real_network(exported):
  config, _, _, _, sig = exported
  pre = sig['preprocessing']
  assert pre['jpeg_quality'] == config.data.jpeg_quality == 90
  assert pre['jpeg_chroma_subsampling'] == '4:2:0' and pre['short_side'] == config.data.short_side
  assert any('encode each frame as JPEG, quality 90' in step for step in pre['steps'])
  assert any('decode the JPEG frames back' in step for step in pre['steps'])
  arch = sig['architecture']
  # The tiny recipe: width 16, one bottleneck a stage (config.model.depth still says 50).
  assert config.model.depth == 50
  assert arch['name'] == 'STM-ResNet-14 (width 16)' and arch['depth'] == 14
  assert arch['blocks_per_stage'] == [1, 1, 1, 1] and arch['width'] == 16
  assert arch['params'] == sum(int(np.prod(x.shape)) for x in
                               jax.tree.leaves(exported[2].variables['params']))


def test_wrong_clips_are_refused(exported):
  model = export.load(exported[3])
  with pytest.raises(ValueError, match='expects uint8 clips of shape \\(batch, 4, 32, 32, 3\\)'):
    model(np.zeros((2, 8, 32, 32, 3), np.uint8))
  with pytest.raises(ValueError, match='got float32'):
    model(np.zeros((2, 4, 32, 32, 3), np.float32))


def test_an_existing_output_is_not_overwritten(exported):
  config, workdir, _, output, _ = exported
  before = os.path.getmtime(os.path.join(output, export.SERIALIZED_FILE))
  with pytest.raises(FileExistsError, match=f'{output}: already exists'):
    export.main(config, workdir, output)
  assert os.path.getmtime(os.path.join(output, export.SERIALIZED_FILE)) == before
  assert sorted(os.listdir(os.path.dirname(output))) == ['tiny']  # no temporary left behind


def test_load_names_what_is_missing(tmp_path):
  with pytest.raises(FileNotFoundError, match='model.stablehlo: no such file'):
    export.load(str(tmp_path))
  (tmp_path / export.SERIALIZED_FILE).write_bytes(b'not flatbuffers')
  (tmp_path / export.SIGNATURE_FILE).write_text('{}')
  with pytest.raises(ValueError, match='model.stablehlo: not a serialized jax.export module'):
    export.load(str(tmp_path))
