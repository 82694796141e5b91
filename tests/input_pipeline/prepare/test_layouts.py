"""Every native layout: the reader finds a tiny real fixture's files; it converts and reads back."""

import os

import numpy as np
import pytest
import simplejpeg

from input_pipeline import datasets
from input_pipeline.prepare import converter
from input_pipeline.prepare import layouts
from input_pipeline.prepare.layouts import common
from input_pipeline.prepare.layouts import sthv2
from input_pipeline.prepare.layouts import ucf101
from tests import video_fixtures as vf

LAYOUTS = list(vf.MAKERS)


def _check_frames(rec, height=vf.H, width=vf.W):
  """Decodes every frame: right shape, and frame i shows gray level(i) (right order, none lost)."""
  assert len(rec['frames']) == rec['num_frames']
  for i, data in enumerate(rec['frames']):
    rgb = simplejpeg.decode_jpeg(data, colorspace='RGB')
    assert rgb.shape == (height, width, 3)
    inner = rgb[:, width // 4:].astype(np.float32).mean()
    assert abs(inner - vf.level(i)) < 8, (rec['id'], i, inner, vf.level(i))


@pytest.mark.parametrize('name', LAYOUTS)
def test_reader_finds_files_classes_and_entries(tmp_path, name):
  expected, config = vf.setup(tmp_path, name)
  layout = layouts.read(config)
  assert layout.class_names == expected.classes
  assert set(layout.splits) == set(expected.splits)
  for split, items in expected.splits.items():
    got = [(e.video_id, e.label) for e in layout.splits[split]]
    assert got == [(vid, label) for vid, label, _ in items], split
  assert layout.used, 'the reader must say which files it used'
  assert all(os.path.exists(p.split(' (')[0]) for p in layout.used)


@pytest.mark.parametrize('name', LAYOUTS)
def test_converts_and_reads_back_through_tfds(tmp_path, name):
  expected, config = vf.setup(tmp_path, name)
  summary = converter.prepare(config)
  assert summary['skipped'] == 0
  kinds = {e.video_id: e.kind for entries in layouts.read(config).splits.values() for e in entries}
  for split, items in expected.splits.items():
    recs = vf.read_split(config, split)
    assert [(r['id'].decode(), int(r['label']), int(r['num_frames'])) for r in recs] == items
    for rec in recs:
      _check_frames(rec)
      # Frame folders state no rate: 12 fps is known for the 20BN datasets, unknown (0) for custom.
      unknown = name.startswith('custom') and kinds[rec['id'].decode()] == common.FRAMES
      assert rec['fps'] == pytest.approx(0.0 if unknown else vf.FPS)
    assert summary['splits'][split]['converted'] == len(items)
    frames = [n for _, _, n in items]
    assert summary['splits'][split]['frames_per_video'] == {
        'mean': round(float(np.mean(frames)), 2), 'min': min(frames), 'max': max(frames)}


def test_class_names_in_dataset_info(tmp_path):
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  expected, config = vf.setup(tmp_path, 'sthv2')
  converter.prepare(config)
  builder = tfds.builder_from_directory(datasets.dataset_dir(config))
  assert builder.info.features['label'].names == expected.classes
  assert builder.info.metadata['short_side'] == 256
  assert len(builder.as_data_source('validation')) == len(expected.splits['validation'])


@pytest.mark.parametrize('name', ['ucf101', 'hmdb51'])
@pytest.mark.parametrize('split', [1, 2, 3])
def test_official_splits(tmp_path, name, split):
  expected, config = vf.setup(tmp_path, name, split=split)
  layout = layouts.read(config)
  for s, items in expected.by_split[split].items():
    assert [(e.video_id, e.label) for e in layout.splits[s]] == [(v, l) for v, l, _ in items]
  assert datasets.dataset_name(config) == f'stm_{name}/split{split}'


@pytest.mark.parametrize('name', ['ucf101', 'hmdb51'])
def test_bad_split_number(tmp_path, name):
  _, config = vf.setup(tmp_path, name, split=4)
  with pytest.raises(common.LayoutError, match='splits are 1, 2, 3'):
    layouts.read(config)


def test_jpeg_frames_copied_byte_for_byte(tmp_path):
  expected, config = vf.setup(tmp_path, 'sthv1')
  converter.prepare(config)
  frame_root = tmp_path / 'raw' / '20bn-something-something-v1'
  for rec in vf.read_split(config, 'train'):
    folder = frame_root / rec['id'].decode()
    source = [(folder / n).read_bytes() for n in sorted(os.listdir(folder))]
    assert rec['frames'] == source


@pytest.mark.parametrize('name', ['sthv1', 'sthv2', 'ucf101'])
def test_short_side_downscales_never_upscales(tmp_path, name):
  _, config = vf.setup(tmp_path, name, short_side=16)
  converter.prepare(config)
  rec = vf.read_split(config, 'train')[0]
  _check_frames(rec, 16, 24)
  big = vf.make_config(config.data.dataset, config.data.raw_dir, tmp_path / 'out_big',
                       num_classes=config.data.num_classes, short_side=1024)
  converter.prepare(big)
  _check_frames(vf.read_split(big, 'train')[0])


def test_missing_annotations_name_what_was_looked_for(tmp_path):
  (tmp_path / 'raw').mkdir()
  for dataset, word in [('sthv1', 'something-something-v1-labels.csv'), ('sthv2', 'labels.json'),
                        ('ucf101', 'classInd.txt'), ('hmdb51', 'test_split1.txt'),
                        ('kinetics400', 'train.csv')]:
    config = vf.make_config(dataset, tmp_path / 'raw', tmp_path / 'out')
    with pytest.raises(common.LayoutError, match=word):
      layouts.read(config)


def test_frame_root_not_found(tmp_path):
  expected, config = vf.setup(tmp_path, 'sthv1')
  del expected
  os.rename(tmp_path / 'raw' / '20bn-something-something-v1', tmp_path / 'elsewhere')
  with pytest.raises(common.LayoutError, match='could not find the frame folders'):
    layouts.read(config)


def test_reader_notes_missing_split(tmp_path):
  _, config = vf.setup(tmp_path, 'sthv1')
  os.remove(tmp_path / 'raw' / 'something-something-v1-test.csv')
  layout = layouts.read(config)
  assert 'test' not in layout.splits
  assert any('something-something-v1-test.csv' in n for n in layout.notes)


def test_annotations_found_in_subfolders(tmp_path):
  """The reader searches subfolders: annotations in labels/, frames two levels down."""
  expected = vf.make_sthv1(str(tmp_path / 'raw' / 'a' / 'b'))
  config = vf.make_config('sthv1', tmp_path / 'raw', tmp_path / 'out', num_classes=3)
  layout = layouts.read(config)
  assert [e.video_id for e in layout.splits['train']] == [v for v, _, _ in expected.splits['train']]


# --- unknown classes are errors that name the file and line ---------------------------------------

def _append(path, line):
  with open(path, 'a') as f:
    f.write(line + '\n')


def test_unknown_class_sthv1(tmp_path):
  _, config = vf.setup(tmp_path, 'sthv1')
  path = tmp_path / 'raw' / 'something-something-v1-validation.csv'
  _append(path, '999;Juggling something')
  line = len(path.read_text().splitlines())
  with pytest.raises(common.AnnotationError, match=f"{path}:{line}: unknown class 'Juggling"):
    layouts.read(config)


def test_unknown_class_sthv2_names_json_line(tmp_path):
  import json  # pylint: disable=g-import-not-at-top
  _, config = vf.setup(tmp_path, 'sthv2')
  path = tmp_path / 'raw' / 'labels' / 'train.json'
  items = json.loads(path.read_text())
  items.append({'id': '777', 'label': 'x', 'template': 'Juggling [something]', 'placeholders': []})
  path.write_text(json.dumps(items, indent=1))
  lines = path.read_text().splitlines()
  line = next(i for i, l in enumerate(lines, 1) if '"777"' in l)
  match = f"{path}:{line}: unknown class 'Juggling something'"
  with pytest.raises(common.AnnotationError, match=match):
    layouts.read(config)


def test_unknown_class_kinetics_validation(tmp_path):
  _, config = vf.setup(tmp_path, 'kinetics400')
  path = tmp_path / 'raw' / 'annotations' / 'validate.csv'
  _append(path, 'juggling,zzzzzzzzzzz,0,10,val,0')
  with pytest.raises(common.AnnotationError, match=f"{path}:3: unknown class 'juggling'"):
    layouts.read(config)


def test_unknown_class_ucf101(tmp_path):
  _, config = vf.setup(tmp_path, 'ucf101')
  path = tmp_path / 'raw' / 'ucfTrainTestlist' / 'testlist01.txt'
  _append(path, 'Juggling/v_Juggling_g01_c01.avi')
  line = len(path.read_text().splitlines())
  with pytest.raises(common.AnnotationError, match=f"{path}:{line}: unknown class 'Juggling'"):
    layouts.read(config)


def test_unknown_class_custom_with_class_list(tmp_path):
  _, config = vf.setup(tmp_path, 'custom_lists')
  (tmp_path / 'raw' / 'classes.txt').write_text('cat\ndog\n')
  path = tmp_path / 'raw' / 'train.txt'
  _append(path, 'clips/a.mp4 bird')
  with pytest.raises(common.AnnotationError, match=f"{path}:4: unknown class 'bird'"):
    layouts.read(config)


def test_class_count_must_match_config(tmp_path):
  _, config = vf.setup(tmp_path, 'sthv1')
  config.data.num_classes = 174
  with pytest.raises(common.LayoutError, match='give 3 classes but config.data.num_classes=174'):
    converter.prepare(config)


def test_custom_single_list_file_and_numeric_labels(tmp_path):
  vf.write_video(str(tmp_path / 'v' / 'x.mp4'), 4)
  vf.write_frames(str(tmp_path / 'v' / 'y'), 5)
  (tmp_path / 'mine.txt').write_text('v/x.mp4 2\nv/y 0\n')
  config = vf.make_config('custom', tmp_path / 'mine.txt', tmp_path / 'out')
  layout = layouts.read(config)
  assert layout.class_names == ['0', '1', '2']
  assert [(e.video_id, e.label, e.kind) for e in layout.splits['train']] == [
      ('v/x', 2, common.VIDEO), ('v/y', 0, common.FRAMES)]


READERS = {'sthv2': sthv2, 'ucf101': ucf101}


def _tree(root):
  """Every file under `root` with its bytes (to show that a refused prepare wrote nothing)."""
  return {os.path.join(d, f): open(os.path.join(d, f), 'rb').read()
          for d, _, names in os.walk(root) for f in names}


def test_two_videos_with_one_id_are_refused_naming_both(tmp_path):
  # Folder mode: x.mp4 and x.webm in one class folder would both be train/a/x.
  vf.write_video(str(tmp_path / 'raw' / 'train' / 'a' / 'x.mp4'), 4)
  vf.write_video(str(tmp_path / 'raw' / 'train' / 'a' / 'x.webm'), 4)
  vf.write_video(str(tmp_path / 'raw' / 'train' / 'b' / 'y.mp4'), 4)
  config = vf.make_config('custom', tmp_path / 'raw', tmp_path / 'out')
  before = _tree(tmp_path)
  with pytest.raises(common.LayoutError) as error:
    converter.prepare(config)
  message = str(error.value)
  assert "two videos of the train split get the id 'train/a/x'" in message
  assert str(tmp_path / 'raw' / 'train' / 'a' / 'x.mp4') in message
  assert str(tmp_path / 'raw' / 'train' / 'a' / 'x.webm') in message
  assert 'rename or remove one' in message and '\n' not in message
  assert _tree(tmp_path) == before and not os.path.exists(tmp_path / 'out')


def test_a_video_listed_twice_is_refused(tmp_path):
  vf.write_video(str(tmp_path / 'v' / 'x.mp4'), 4)
  vf.write_video(str(tmp_path / 'v' / 'y.mp4'), 4)
  (tmp_path / 'train.txt').write_text('v/x.mp4 0\nv/y.mp4 1\nv/x.mp4 0\n')
  config = vf.make_config('custom', tmp_path / 'train.txt', tmp_path / 'out')
  with pytest.raises(common.LayoutError, match=r'v/x.mp4 is listed twice in the train split '
                                                r"\(id 'v/x'\): remove the repeated"):
    layouts.read(config)


def test_the_same_id_in_two_splits_is_allowed(tmp_path):
  """Ids key the records of one split; a list may name a video in train and in val."""
  vf.write_video(str(tmp_path / 'v' / 'x.mp4'), 4)
  (tmp_path / 'train.txt').write_text('v/x.mp4 0\n')
  (tmp_path / 'val.txt').write_text('v/x.mp4 0\n')
  config = vf.make_config('custom', tmp_path, tmp_path / 'out')
  layout = layouts.read(config)
  assert [e.video_id for e in layout.splits['train']] == ['v/x']
  assert [e.video_id for e in layout.splits['validation']] == ['v/x']


@pytest.mark.parametrize('name', ['sthv2', 'ucf101'])
def test_duplicate_ids_are_checked_for_every_layout(tmp_path, name, monkeypatch):
  """The check sits in `layouts.read`, after whichever reader ran."""
  _, config = vf.setup(tmp_path, name)
  layout = layouts.read(config)
  first = layout.splits['train'][0]
  twin = common.Entry(first.video_id, first.label, first.kind, first.path + '.copy')
  layout.splits['train'].append(twin)
  monkeypatch.setattr(READERS[name], 'read', lambda raw_dir, config: layout)
  with pytest.raises(common.LayoutError, match=f'{name}: two videos of the train split get the '
                                               f'id {first.video_id!r}'):
    layouts.read(config)
