"""Tiny real video datasets in every native layout, written with PyAV and simplejpeg, for the tests.

Every builder `make_<layout>(root, corrupt=False)` writes a few 32x48 videos (mp4/h264, webm/vp9,
avi/mpeg4) or JPEG frame folders with 4-12 frames, plus the dataset's annotation files under their
official names, and returns an `Expected`: per split, the (id, label, num_frames) that must come out
of the conversion, and for `corrupt=True` the ids that must be quarantined with a word of the
reason.
Frame i of a video is filled with gray level `level(i)`, so a test can tell which frame it reads.
"""

import dataclasses
import json
import os

import av
import numpy as np
import simplejpeg

from input_pipeline.prepare import tfrecord_writer

H, W = 32, 48
FPS = 12


@dataclasses.dataclass
class Expected:
  """What converting a fixture must produce."""
  classes: list[str]
  splits: dict[str, list[tuple[str, int, int]]]  # split -> [(id, label, num_frames)]
  bad: dict[str, str] = dataclasses.field(default_factory=dict)  # id -> word in the reason


def level(i: int) -> int:
  """Gray level of frame i (distinct for the first 12 frames, far apart to survive compression)."""
  return 10 + 20 * (i % 12)


def frame(i: int, h: int = H, w: int = W) -> np.ndarray:
  """RGB frame i: gray level(i) with a 4-pixel white bar on the left (to see flips/crops)."""
  a = np.full((h, w, 3), level(i), np.uint8)
  a[:, :4] = 255
  return a


_CODECS = {'.mp4': 'libx264', '.mkv': 'libx264', '.webm': 'libvpx-vp9', '.avi': 'mpeg4'}


def write_video(path: str, num_frames: int, h: int = H, w: int = W, fps: int = FPS) -> str:
  """Writes an encoded video of `num_frames` frames (codec from the extension); returns path."""
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with av.open(path, 'w') as container:
    stream = container.add_stream(_CODECS[os.path.splitext(path)[1]], rate=fps)
    stream.width, stream.height, stream.pix_fmt = w, h, 'yuv420p'
    for i in range(num_frames):
      for packet in stream.encode(av.VideoFrame.from_ndarray(frame(i, h, w), format='rgb24')):
        container.mux(packet)
    for packet in stream.encode():
      container.mux(packet)
  return path


def jpeg(i: int, h: int = H, w: int = W) -> bytes:
  """JPEG bytes of frame i."""
  return simplejpeg.encode_jpeg(frame(i, h, w), quality=95, colorspace='RGB')


def write_frames(folder: str, num_frames: int, h: int = H, w: int = W) -> str:
  """Writes a frame folder `00001.jpg ...`; returns the folder."""
  os.makedirs(folder, exist_ok=True)
  for i in range(num_frames):
    with open(os.path.join(folder, f'{i + 1:05d}.jpg'), 'wb') as f:
      f.write(jpeg(i, h, w))
  return folder


def write_zero_bytes(path: str) -> str:
  """Writes an empty file (an interrupted copy)."""
  os.makedirs(os.path.dirname(path), exist_ok=True)
  open(path, 'wb').close()
  return path


def write_not_a_video(path: str) -> str:
  """Writes text under a video's name (an error page saved by a downloader, say)."""
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, 'wb') as f:
    f.write(b'this is a text file, not a video\n' * 20)
  return path


def write_truncated(path: str, num_frames: int = 10, keep: float = 0.5) -> str:
  """Writes a video, then cuts it to `keep` of its bytes (as an interrupted download does)."""
  write_video(path, num_frames)
  with open(path, 'rb') as f:
    data = f.read()
  with open(path, 'wb') as f:
    f.write(data[:int(len(data) * keep)])
  return path


def write_no_frames(path: str) -> str:
  """Writes a container header with a video stream declared but no frame in it."""
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with av.open(path, 'w') as container:
    stream = container.add_stream(_CODECS[os.path.splitext(path)[1]], rate=FPS)
    stream.width, stream.height, stream.pix_fmt = W, H, 'yuv420p'
    container.start_encoding()
  return path


def _lines(path: str, lines) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, 'w') as f:
    f.write(''.join(f'{line}\n' for line in lines))


# --- 20BN csv layouts --------------------------------------------------------------------------

def _twentybn(root, prefix, frame_root, classes, corrupt):
  train = [('101', 0, 4), ('102', 1, 8), ('103', 2, 12)]
  val = [('104', 1, 6), ('105', 0, 5)]
  test = [('106', -1, 7)]
  for vid, _, n in train + val + test:
    write_frames(os.path.join(root, frame_root, vid), n)
  bad = {}
  train_lines = [f'{v};{classes[l]}' for v, l, _ in train]
  if corrupt:
    os.makedirs(os.path.join(root, frame_root, '201'))  # empty folder: no frames
    write_frames(os.path.join(root, frame_root, '202'), 5)
    write_not_a_video(os.path.join(root, frame_root, '202', '00003.jpg'))  # a broken frame
    write_frames(os.path.join(root, frame_root, '203'), 5)
    write_zero_bytes(os.path.join(root, frame_root, '203', '00002.jpg'))
    train_lines += [f'201;{classes[0]}', f'202;{classes[1]}', f'203;{classes[2]}',
                    f'204;{classes[0]}']  # 204: annotated, folder missing
    bad = {'201': 'no frames', '202': 'not a JPEG', '203': 'empty', '204': 'missing'}
  _lines(os.path.join(root, f'{prefix}-labels.csv'), classes)
  _lines(os.path.join(root, f'{prefix}-train.csv'), train_lines)
  _lines(os.path.join(root, f'{prefix}-validation.csv'), [f'{v};{classes[l]}' for v, l, _ in val])
  _lines(os.path.join(root, f'{prefix}-test.csv'), [v for v, _, _ in test])
  return Expected(classes, {'train': train, 'validation': val, 'test': test}, bad)


STHV1_CLASSES = ['Holding something', 'Pushing something from left to right',
                 'Pushing something from right to left']
JESTER_CLASSES = ['Swiping Left', 'Swiping Right', 'No gesture']


def make_sthv1(root: str, corrupt: bool = False) -> Expected:
  """Something-Something v1: frame folders + something-something-v1-*.csv."""
  return _twentybn(root, 'something-something-v1', '20bn-something-something-v1', STHV1_CLASSES,
                   corrupt)


def make_jester(root: str, corrupt: bool = False) -> Expected:
  """Jester: frame folders + jester-v1-*.csv (annotations in a subfolder, as some mirrors do)."""
  return _twentybn(os.path.join(root, 'jester'), 'jester-v1', '20bn-jester-v1', JESTER_CLASSES,
                   corrupt)


# --- Something-Something v2 --------------------------------------------------------------------

STHV2_TEMPLATES = ['Moving [something] up', 'Putting [something] on [something]',
                   'Turning [something] upside down']


def make_sthv2(root: str, corrupt: bool = False) -> Expected:
  """Something-Something v2: webm (vp9) videos + labels/*.json."""
  classes = [t.replace('[', '').replace(']', '') for t in STHV2_TEMPLATES]
  video_dir = os.path.join(root, '20bn-something-something-v2')
  train = [('11', 0, 5), ('12', 2, 9)]
  val = [('13', 1, 7)]
  test = [('14', -1, 4)]
  for vid, _, n in train + val + test:
    write_video(os.path.join(video_dir, f'{vid}.webm'), n)

  def item(vid, label):
    return {'id': vid, 'label': STHV2_TEMPLATES[label].replace('[something]', 'a cup'),
            'template': STHV2_TEMPLATES[label], 'placeholders': ['a cup']}

  train_items = [item(v, l) for v, l, _ in train]
  bad = {}
  if corrupt:
    write_zero_bytes(os.path.join(video_dir, '21.webm'))
    write_truncated(os.path.join(video_dir, '22.webm'), 12, keep=0.6)
    write_not_a_video(os.path.join(video_dir, '23.webm'))
    train_items += [item('21', 0), item('22', 1), item('23', 2), item('24', 0)]
    bad = {'21': 'empty', '22': 'truncated', '23': 'not a readable video', '24': 'missing'}
  labels = os.path.join(root, 'labels')
  os.makedirs(labels, exist_ok=True)
  with open(os.path.join(labels, 'labels.json'), 'w') as f:
    json.dump({c: str(i) for i, c in enumerate(classes)}, f, indent=1)
  with open(os.path.join(labels, 'train.json'), 'w') as f:
    json.dump(train_items, f, indent=1)
  with open(os.path.join(labels, 'validation.json'), 'w') as f:
    json.dump([item(v, l) for v, l, _ in val], f, indent=1)
  with open(os.path.join(labels, 'test.json'), 'w') as f:
    json.dump([{'id': v} for v, _, _ in test], f, indent=1)
  return Expected(classes, {'train': train, 'validation': val, 'test': test}, bad)


# --- Kinetics-400 ------------------------------------------------------------------------------

def make_kinetics400(root: str, corrupt: bool = False) -> Expected:
  """Kinetics-400: annotations/{train,validate}.csv, train/<class>/*.mp4 and a flat val/ folder."""
  classes = ['abseiling', 'air drumming', 'zumba']
  train = [('aaaaaaaaaaa', 0, 10, 20, 6), ('bbbbbbbbbbb', 1, 0, 10, 10),
           ('ccccccccccc', 2, 5, 15, 8)]
  val = [('ddddddddddd', 2, 30, 40, 5)]
  rows = {'train': [], 'validate': []}
  for split, items, nested in (('train', train, True), ('validate', val, False)):
    for yid, label, start, end, n in items:
      name = f'{yid}_{start:06d}_{end:06d}.mp4'
      sub = os.path.join(split, classes[label].replace(' ', '_')) if nested else 'val'
      write_video(os.path.join(root, 'videos', sub, name), n)
      rows[split].append(f'{classes[label]},{yid},{start},{end},{split},0')
  bad = {}
  if corrupt:
    zumba = os.path.join(root, 'videos', 'train', 'zumba')
    write_not_a_video(os.path.join(zumba, 'eeeeeeeeeee_000000_000010.mp4'))
    write_truncated(os.path.join(zumba, 'fffffffffff_000000_000010.mp4'))
    rows['train'] += ['zumba,eeeeeeeeeee,0,10,train,0', 'zumba,fffffffffff,0,10,train,0',
                      'abseiling,ggggggggggg,0,10,train,0']
    bad = {'eeeeeeeeeee_000000_000010': 'not a readable video',
           'fffffffffff_000000_000010': 'not a readable video',
           'ggggggggggg_000000_000010': 'missing'}
  header = 'label,youtube_id,time_start,time_end,split,is_cc'
  _lines(os.path.join(root, 'annotations', 'train.csv'), [header] + rows['train'])
  _lines(os.path.join(root, 'annotations', 'validate.csv'), [header] + rows['validate'])
  exp = {'train': [(f'{y}_{s:06d}_{e:06d}', l, n) for y, l, s, e, n in train],
         'validation': [(f'{y}_{s:06d}_{e:06d}', l, n) for y, l, s, e, n in val]}
  return Expected(classes, exp, bad)


# --- UCF-101 -------------------------------------------------------------------------------------

UCF_CLASSES = ['ApplyEyeMakeup', 'HandstandPushups', 'YoYo']


def make_ucf101(root: str, corrupt: bool = False) -> Expected:
  """UCF-101: UCF-101/<Class>/v_*.avi + ucfTrainTestlist/ (3 splits; the file-name case quirk)."""
  videos = {  # class -> [(file stem, frames)]; HandstandPushups files say HandStand, as in UCF-101
      0: [('v_ApplyEyeMakeup_g01_c01', 6), ('v_ApplyEyeMakeup_g08_c01', 4)],
      1: [('v_HandStandPushups_g01_c01', 7), ('v_HandStandPushups_g08_c01', 5)],
      2: [('v_YoYo_g01_c01', 8), ('v_YoYo_g08_c02', 9)],
  }
  for c, items in videos.items():
    for stem, n in items:
      write_video(os.path.join(root, 'UCF-101', UCF_CLASSES[c], f'{stem}.avi'), n)
  lists = os.path.join(root, 'ucfTrainTestlist')
  _lines(os.path.join(lists, 'classInd.txt'), [f'{i + 1} {c}' for i, c in enumerate(UCF_CLASSES)])
  splits = {}
  for k in (1, 2, 3):
    # Split k: group g08 is train in split 1, test in 2 and 3 (enough to tell splits apart).
    train = [(s, c, n) for c, items in videos.items() for s, n in items if ('g08' in s) == (k == 1)]
    test = [(s, c, n) for c, items in videos.items() for s, n in items if ('g08' in s) != (k == 1)]
    train_lines = [f'{UCF_CLASSES[c]}/{s}.avi {c + 1}' for s, c, _ in train]
    if corrupt and k == 1:
      train_lines.append(f'{UCF_CLASSES[2]}/v_YoYo_g09_c01.avi 3')  # annotated, file missing
    _lines(os.path.join(lists, f'trainlist0{k}.txt'), train_lines)
    _lines(os.path.join(lists, f'testlist0{k}.txt'),
           [f'{UCF_CLASSES[c]}/{s}.avi' for s, c, _ in test])
    splits[k] = {'train': train, 'test': test}
  exp = Expected(UCF_CLASSES, splits[1], {'v_YoYo_g09_c01': 'missing'} if corrupt else {})
  exp.by_split = splits  # type: ignore[attr-defined]
  return exp


# --- HMDB-51 -------------------------------------------------------------------------------------

HMDB_CLASSES = ['brush_hair', 'cartwheel', 'wave']


def make_hmdb51(root: str, corrupt: bool = False) -> Expected:
  """HMDB-51: hmdb51_org/<class>/*.avi + testTrainMulti_7030_splits/<class>_test_split{k}.txt."""
  splits = {k: {'train': [], 'test': []} for k in (1, 2, 3)}
  bad = {}
  for c, name in enumerate(HMDB_CLASSES):
    items = [(f'{name}_video_{j}', 4 + c + j) for j in range(3)]
    for stem, n in items:
      write_video(os.path.join(root, 'hmdb51_org', name, f'{stem}.avi'), n)
    for k in (1, 2, 3):
      lines = []
      for j, (stem, n) in enumerate(items):
        tag = (j + k) % 3  # 0 unused, 1 train, 2 test: differs per split
        lines.append(f'{stem}.avi {tag}')
        if tag:
          splits[k]['train' if tag == 1 else 'test'].append((stem, c, n))
      if corrupt and k == 1 and c == 0:
        write_no_frames(os.path.join(root, 'hmdb51_org', name, f'{name}_empty.avi'))
        lines.append(f'{name}_empty.avi 1')
        bad[f'{name}_empty'] = 'no'
      _lines(os.path.join(root, 'testTrainMulti_7030_splits', f'{name}_test_split{k}.txt'), lines)
  for k in splits:  # the converter lists classes in sorted order, videos in file order
    for s in splits[k].values():
      s.sort(key=lambda t: t[1])
  exp = Expected(HMDB_CLASSES, splits[1], bad)
  exp.by_split = splits  # type: ignore[attr-defined]
  return exp


# --- custom --------------------------------------------------------------------------------------

def make_custom_lists(root: str, corrupt: bool = False) -> Expected:
  """Custom list mode: train.txt / val.txt of `path label` lines (videos and frame folders)."""
  classes = ['cat', 'dog']
  write_video(os.path.join(root, 'clips', 'a.mp4'), 5)
  write_video(os.path.join(root, 'clips', 'b.webm'), 6)
  write_frames(os.path.join(root, 'frames', 'c'), 4)
  write_video(os.path.join(root, 'clips', 'd.avi'), 7)
  train_lines = ['clips/a.mp4 cat', 'clips/b.webm dog', 'frames/c cat']
  bad = {}
  if corrupt:
    write_zero_bytes(os.path.join(root, 'clips', 'zero.mp4'))
    train_lines += ['clips/zero.mp4 dog']
    bad = {'clips/zero': 'empty'}
  _lines(os.path.join(root, 'train.txt'), train_lines)
  _lines(os.path.join(root, 'val.txt'), [f'{os.path.join(root, "clips", "d.avi")},dog'])
  return Expected(classes, {'train': [('clips/a', 0, 5), ('clips/b', 1, 6), ('frames/c', 0, 4)],
                            'validation': [('clips/d', 1, 7)]}, bad)


def make_custom_folders(root: str, corrupt: bool = False) -> Expected:
  """Custom folder mode: train/<class>/<video or frame folder> and val/<class>/..."""
  del corrupt
  write_video(os.path.join(root, 'train', 'jump', 'j1.mp4'), 5)
  write_frames(os.path.join(root, 'train', 'jump', 'j2'), 6)
  write_video(os.path.join(root, 'train', 'run', 'r1.avi'), 4)
  write_video(os.path.join(root, 'val', 'run', 'r2.mp4'), 8)
  return Expected(['jump', 'run'], {
      'train': [('train/jump/j1', 0, 5), ('train/jump/j2', 0, 6), ('train/run/r1', 1, 4)],
      'validation': [('val/run/r2', 1, 8)]})


# --- TFRecord (DMVR/scenic SequenceExample) ----------------------------------------------------

def sequence_example(frames: list[bytes], label: int | None = None, video_id: str | None = None,
                     label_name: str | None = None, fps: float | None = None) -> bytes:
  """Serializes a DMVR-style tf.train.SequenceExample (built with tfds's bundled proto, no TF)."""
  # pylint: disable-next=g-import-not-at-top
  from tensorflow_datasets.proto import tf_example_generated_pb2 as example_pb2
  seq = example_pb2.SequenceExample()
  if label is not None:
    seq.context.feature['clip/label/index'].int64_list.value.append(label)
  if video_id is not None:
    seq.context.feature['clip/media_id'].bytes_list.value.append(video_id.encode())
  if label_name is not None:
    seq.context.feature['clip/label/text'].bytes_list.value.append(label_name.encode())
  if fps is not None:
    seq.context.feature['image/frame_rate'].float_list.value.append(fps)
  frame_list = seq.feature_lists.feature_list['image/encoded']
  for data in frames:
    frame_list.feature.add().bytes_list.value.append(data)
  return seq.SerializeToString()


def write_tfrecord(path: str, payloads: list[bytes]) -> str:
  """Writes records in TFRecord framing with the project's writer (its framing is checked from
  scratch in tests/input_pipeline/prepare/test_tfrecord_writer.py); returns path."""
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with tfrecord_writer.TFRecordWriter(path) as writer:
    for data in payloads:
      writer.write(data)
  return path


def make_tfrecord_from_frames(root: str, frames_root: str, expected: Expected,
                              shards: int = 2) -> None:
  """Writes TFRecord files holding the frame-folder videos of `expected` (an sthv1/jester fixture).

  Files are `<split>.tfrecord-0000k-of-0000n` plus classes.txt, so that converting them must give
  the same dataset as converting the frame folders.
  """
  _lines(os.path.join(root, 'classes.txt'), expected.classes)
  for split, items in expected.splits.items():
    payloads = []
    for vid, label, _ in items:
      folder = os.path.join(frames_root, vid)
      jpegs = [open(os.path.join(folder, n), 'rb').read() for n in sorted(os.listdir(folder))]
      payloads.append(sequence_example(
          jpegs, label if label >= 0 else None, vid,
          expected.classes[label] if label >= 0 else None, float(FPS)))
    n = min(shards, len(payloads))
    for k in range(n):
      part = payloads[k * len(payloads) // n:(k + 1) * len(payloads) // n]
      write_tfrecord(os.path.join(root, f'{split}.tfrecord-{k:05d}-of-{n:05d}'), part)


# --- helpers for the tests -----------------------------------------------------------------------

MAKERS = {
    'sthv1': (make_sthv1, 'sthv1'),
    'sthv2': (make_sthv2, 'sthv2'),
    'jester': (make_jester, 'jester'),
    'kinetics400': (make_kinetics400, 'kinetics400'),
    'ucf101': (make_ucf101, 'ucf101'),
    'hmdb51': (make_hmdb51, 'hmdb51'),
    'custom_lists': (make_custom_lists, 'custom'),
    'custom_folders': (make_custom_folders, 'custom'),
}


def make_config(dataset: str, raw_dir: str, data_dir: str, **data):
  """The dataset's recipe pointed at a fixture: one in-process worker, 2 videos a shard."""
  import importlib  # pylint: disable=g-import-not-at-top
  config = importlib.import_module(f'configs.{dataset}').get_config()
  config.data.raw_dir = str(raw_dir)
  config.data.data_dir = str(data_dir)
  config.data.prepare_workers = 1
  config.data.videos_per_shard = 2
  for k, v in data.items():
    config.data[k] = v
  return config


def read_split(config, split: str) -> list[dict]:
  """Reads a prepared ArrayRecord split back whole: every record, its frames as a list of JPEG
  bytes (the video records through `tfds.data_source`, their frames from the frame files)."""
  from input_pipeline import datasets  # pylint: disable=g-import-not-at-top
  config = config.copy_and_resolve_references()
  config.data.format = 'array_record'
  source = datasets.open_source(config, split)
  return [dict(r, frames=list(r['frames'])) for r in (source[i] for i in range(len(source)))]


def setup(tmp_path, name, corrupt=False, **data):
  """Writes the `name` fixture under tmp_path/raw; returns (its expected contents, a config
  converting it to tmp_path/out), `data` overriding config.data fields."""
  maker, dataset = MAKERS[name]
  expected = maker(str(tmp_path / 'raw'), corrupt=corrupt)
  config = make_config(dataset, tmp_path / 'raw', tmp_path / 'out',
                       num_classes=len(expected.classes), **data)
  return expected, config


def prepared_sthv1(tmp_path, **config_fields):
  """The sthv1 fixture (3 training, 2 validation videos) prepared under `tmp_path`, and the tiny
  recipe pointed at it (3 classes, batch 2, no lr decay), with `config_fields` (flattened names)
  set on top. Returns (the data config, the tiny training config)."""
  # pylint: disable=g-import-not-at-top
  from configs import tiny
  from input_pipeline.prepare import converter
  # pylint: enable=g-import-not-at-top
  _, data_config = setup(tmp_path, 'sthv1')
  converter.prepare(data_config)
  config = tiny.get_config()
  config.data.dataset = 'sthv1'
  config.data.data_dir = data_config.data.data_dir
  config.data.num_classes = 3
  config.batch_size = 2
  config.optim.decay_epochs = ()
  config.update_from_flattened_dict(config_fields)
  return data_config, config


# --- orientation and pixel aspect ------------------------------------------------------------------

RED, BLUE = (255, 0, 0), (0, 0, 255)


def marked_frame(h: int = H, w: int = W) -> np.ndarray:
  """A gray frame with an 8-pixel red square in its top-left corner and a blue one bottom-left,
  so that a test can tell how it was turned or mirrored."""
  a = np.full((h, w, 3), 128, np.uint8)
  a[:8, :8] = RED
  a[-8:, :8] = BLUE
  return a


def write_marked_video(path: str, num_frames: int = 5, h: int = H, w: int = W, *,
                       rotation: float | None = None, hflip: bool = False,
                       rotate_tag: str | None = None, sar=None) -> str:
  """Writes `marked_frame`s (codec from the extension) with a display matrix (`rotation`: degrees
  counter-clockwise, as PyAV's `VideoFrame.rotation` reads it; `hflip` mirrors after it), a legacy
  `rotate` tag (degrees clockwise) and/or a sample aspect ratio; returns path."""
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with av.open(path, 'w') as container:
    stream = container.add_stream(_CODECS[os.path.splitext(path)[1]], rate=FPS)
    stream.width, stream.height, stream.pix_fmt = w, h, 'yuv420p'
    if sar is not None:
      stream.codec_context.sample_aspect_ratio = sar
    if rotation is not None or hflip:
      stream.set_display_rotation(rotation or 0, hflip=hflip)
    if rotate_tag is not None:
      stream.metadata['rotate'] = rotate_tag
    for _ in range(num_frames):
      for packet in stream.encode(av.VideoFrame.from_ndarray(marked_frame(h, w), format='rgb24')):
        container.mux(packet)
    for packet in stream.encode():
      container.mux(packet)
  return path


def marker_corners(rgb: np.ndarray) -> dict[str, str]:
  """Which corner ('tl', 'tr', 'bl', 'br') of a decoded frame holds the red and the blue marker."""
  h, w = rgb.shape[:2]
  found = {}
  for name, (y, x) in {'tl': (2, 2), 'tr': (2, w - 3), 'bl': (h - 3, 2),
                       'br': (h - 3, w - 3)}.items():
    pixel = rgb[y, x].astype(int)
    for colour, value in (('red', RED), ('blue', BLUE)):
      if np.abs(pixel - value).max() < 60:
        found[colour] = name
  return found
