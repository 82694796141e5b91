"""Train input pipeline speed: our grain pipeline (ArrayRecord, TFRecord) vs a TSM-style PIL loader.

  python -m benchmarks.input_pipeline_speed [--videos=32 --frames_per_video=48 --clips=160]
      [--formats=array_record,tfrecord --read_frames=48,300 --noclips_table]

Every row makes the same training clips (T=8, TSN sampling, multi-scale crop with the 4 TSM scales
and 5 positions, resize to 224, random flip; uint8 `(T, 224, 224, 3)` out) from the same frames:
synthetic 256x340 JPEG frames (quality 90, 4:2:0, ~25 kB, as the converter writes them).
  ours (ArrayRecord)  the converter's layout: a TFDS shard of video records and its frame file,
            one ArrayRecord record a frame (`frames.ArrayRecordSource`: the video's record
            deserialized as `tfds.data_source` does, then the sampled frames' records), through
            `pipeline.train_dataset`: simplejpeg decode of the sampled frames, OpenCV crop+resize.
            In one process with one thread (1 core), and with 1 and 2 grain worker processes.
  ours (TFRecord)  the same videos in one TFRecord file of DMVR SequenceExamples, one record per
            video, as `--mode=prepare --config.data.output_format=tfrecord` writes them
            (`prepare.tfrecord_writer`), read by `tfrecord.TFRecordSource` (the sampled frames'
            bytes by ranged reads through the cached frame index, each CRC-32C-checked), through
            the same pipeline, in the same configurations.
  baseline  TSM's loader (TSNDataSet + GroupMultiScaleCrop + GroupRandomHorizontalFlip): PIL
            opens each sampled frame from a folder of JPEG files, crops and resizes with PIL,
            stacked as uint8 and collated into batches (TSM's float conversion and normalisation
            left out: ours does them on device; a second row adds them, as TSM ships). One
            process, one core.
Files are read once before timing (page cache warm on every side). "Per core" compares clips per
CPU-second of the process (all its threads), which other load on the machine disturbs less than
wall time; rounds are interleaved across loaders and each loader's best round is kept. Worker
rows can only give wall clips/s over the cores they had (the workers' CPU time is not visible
from here).

A second table times the read and the decode of one training clip (T=8 frames sampled as training
samples them, `sampling.train_indices`) from videos of each `--read_frames` length (CPU
microseconds a clip, best of the interleaved rounds), for each format as stored now and as stored
before (one record holding the whole video), and the ratio of the clip rate at the longest length
to the rate at the shortest. Each length gets the same number of frames (`--read_total_frames`: 50
videos of 48 frames, 8 of 300), so the files are the same size and CPU caches favour no length,
and rounds interleave every length and source:
  ArrayRecord (frame records)  the video's small TFDS record, then its sampled frames' records from
            the shard's frame file (`frames.ArrayRecordSource`), as `--mode=prepare` writes them;
  TFRecord (frame index)  the index's metadata, the video's rows of the frame table (one ranged
            read), then the sampled frames' bytes (`files.read_ranges`), each CRC-32C-checked
            (`tfrecord.TFRecordSource`);
  ... (whole record, before)  the layouts before: the ArrayRecord record of the whole video,
            deserialized as TFDS does, and the TFRecord record read whole, both CRCs checked, and
            parsed. Their cost grows with the video's length; the frame layouts' does not.
"""

import os
import random
import tempfile
import time
from typing import Callable

from absl import app
from absl import flags
import numpy as np
from PIL import Image
import simplejpeg

from input_pipeline import frames as frames_lib
from input_pipeline import pipeline
from input_pipeline import sampling
from input_pipeline import tfrecord
from input_pipeline import transforms
from input_pipeline.prepare import records
from input_pipeline.prepare import tfrecord_writer

_VIDEOS = flags.DEFINE_integer('videos', 32, 'Synthetic videos.')
_FRAMES = flags.DEFINE_integer('frames_per_video', 48, 'Frames per video (sthv2: ~45).')
_CLIPS = flags.DEFINE_integer('clips', 160, 'Clips timed per measurement.')
_BATCH = flags.DEFINE_integer('batch', 8, 'Batch size of our pipeline.')
_REPEATS = flags.DEFINE_integer('repeats', 2, 'Measurements per configuration (best kept).')
_WORKERS = flags.DEFINE_list('workers', ['1', '2'], 'grain worker counts to time.')
_FORMATS = flags.DEFINE_list('formats', ['array_record', 'tfrecord'],
                             'Record formats our pipeline reads (array_record, tfrecord).')
_READ_FRAMES = flags.DEFINE_list('read_frames', ['48', '300'],
                                 'Frames per video of the per-clip read table (empty: none).')
_READ_TOTAL = flags.DEFINE_integer(
    'read_total_frames', 2400, 'Frames of each length\'s videos in the read table (300-frame '
    'videos: 8; 48-frame: 50): the same bytes at every length, so CPU caches favour none.')
_READS = flags.DEFINE_integer('reads', 64, 'Clips read per measurement (read table).')
_CLIPS_TABLE = flags.DEFINE_bool('clips_table', True,
                                 'Time the clips table (ours vs the TSM-style loader) too.')

T, CROP, HEIGHT, WIDTH = 8, 224, 256, 340
_DATASET_SIZE = 200_000
FORMAT_NAMES = {'array_record': 'ArrayRecord', 'tfrecord': 'TFRecord'}


# --- data -------------------------------------------------------------------------------------

def synthetic_frames(num_frames: int, rng: np.random.Generator) -> list[bytes]:
  """JPEG frames with smooth structure and texture, moving slowly (about 20 kB each at q90)."""
  import cv2  # pylint: disable=g-import-not-at-top
  coarse = rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)
  field = cv2.resize(coarse, (WIDTH + num_frames, HEIGHT), interpolation=cv2.INTER_CUBIC)
  texture = rng.normal(0, 6, (HEIGHT, WIDTH + num_frames, 3))
  image = np.clip(field + texture, 0, 255).astype(np.uint8)
  return [simplejpeg.encode_jpeg(np.ascontiguousarray(image[:, i:i + WIDTH]), quality=90,
                                 colorsubsampling='420') for i in range(num_frames)]


def _record(v: int, frames: list[bytes]) -> dict:
  """The record dict the converter makes of video `v` (no class name, as for a class list)."""
  return {'id': f'video{v}', 'label': v % 1000, 'num_frames': len(frames), 'fps': 12.0,
          'frames': frames, 'label_name': None}


class _Cycled:
  """A source presented as `size` videos cycling over the written ones: grain's index shuffle
  costs 1.5 ms an element on a 16-element dataset and 4 us from ~100k elements on (a real
  dataset's size)."""

  def __init__(self, source, size: int):
    self._source = source
    self._size = size

  def __len__(self):
    return self._size

  def __getitem__(self, i):
    return self._source[i % len(self._source)]


class VideoRecords:
  """An ArrayRecord file of TFDS-serialized records, deserialized as `tfds.data_source` does."""

  def __init__(self, path: str, features):
    import grain  # pylint: disable=g-import-not-at-top
    self._source = grain.sources.ArrayRecordDataSource([path])
    self._features = features

  def __len__(self):
    return len(self._source)

  def __getitem__(self, i):
    return self._features.deserialize_example_np(self._source[i])


def one_record_features():
  """The video record of the layout before frame records: every frame inside it."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  return tfds.features.FeaturesDict({
      'id': tfds.features.Scalar(dtype=np.str_),
      'label': tfds.features.ClassLabel(num_classes=1000),
      'num_frames': tfds.features.Scalar(dtype=np.int32),
      'fps': tfds.features.Scalar(dtype=np.float32),
      'frames': tfds.features.Sequence(tfds.features.Tensor(shape=(), dtype=np.object_)),
  })


class WholeTFRecord:
  """TFRecord as read before the frame index: the whole record, both CRCs checked, parsed."""

  def __init__(self, path: str):
    self._path = path
    self._rows = tfrecord.load_index(path)['records']

  def __len__(self):
    return len(self._rows)

  def __getitem__(self, i):
    offset, length = self._rows[i][0], self._rows[i][1]
    return tfrecord.parse(tfrecord.read_record(self._path, offset, length))


def write_array_record(path: str, videos: list[list[bytes]]) -> None:
  """Writes the videos as the converter does: a TFDS shard of video records at `path` (a shard
  name) and its frame file, one record a frame (`prepare/records.py`)."""
  from array_record.python import array_record_module  # pylint: disable=g-import-not-at-top
  features = records.features(num_classes=1000)
  shard = array_record_module.ArrayRecordWriter(path, records.WRITER_OPTIONS)
  frame_file = array_record_module.ArrayRecordWriter(frames_lib.frames_file(path),
                                                     records.WRITER_OPTIONS)
  first = 0
  for v, frames in enumerate(videos):
    rec = _record(v, frames)
    for data in frames:
      frame_file.write(data)
    shard.write(features.serialize_example({k: rec[k] for k in ('id', 'label', 'num_frames',
                                                                 'fps')} | {'first_frame': first}))
    first += len(frames)
  shard.close()
  frame_file.close()


def write_one_record_array_record(path: str, videos: list[list[bytes]]) -> None:
  """Writes the videos in the layout before frame records: one record holding a whole video."""
  from array_record.python import array_record_module  # pylint: disable=g-import-not-at-top
  features = one_record_features()
  writer = array_record_module.ArrayRecordWriter(path, records.WRITER_OPTIONS)
  for v, frames in enumerate(videos):
    rec = _record(v, frames)
    del rec['label_name']
    writer.write(features.serialize_example(rec))
  writer.close()


def write_tfrecord(path: str, videos: list[list[bytes]]) -> None:
  """Writes the videos as one TFRecord file of DMVR SequenceExamples, as the converter does."""
  with tfrecord_writer.TFRecordWriter(path) as writer:
    for v, frames in enumerate(videos):
      writer.write(tfrecord_writer.sequence_example(_record(v, frames)))


def write_files(root: str, videos: list[list[bytes]], formats: list[str]) -> dict[str, str]:
  """Writes the videos in each record format under `root`; returns {format: file}."""
  paths = {}
  if 'array_record' in formats:
    paths['array_record'] = os.path.join(root, 'bench-train.array_record-00000-of-00001')
    write_array_record(paths['array_record'], videos)
  if 'tfrecord' in formats:
    paths['tfrecord'] = os.path.join(root, 'bench-train.tfrecord-00000-of-00001')
    write_tfrecord(paths['tfrecord'], videos)
  return paths


def open_source(fmt: str, path: str, size: int = 0):
  """Our training source of format `fmt` over the file `path` (`size` videos long, cycling, if
  given): `frames.ArrayRecordSource` or `tfrecord.TFRecordSource`, as training opens them."""
  if fmt == 'array_record':
    videos = VideoRecords(path, records.features(num_classes=1000))
    source = frames_lib.ArrayRecordSource(videos, [path], [len(videos)])
  else:
    source = tfrecord.TFRecordSource([path])
  return _Cycled(source, size) if size else source


def write_frame_folders(root: str, videos: list[list[bytes]]) -> list[str]:
  """Writes the videos as TSM frame folders (`img_00001.jpg`, ...); returns the folders."""
  folders = []
  for v, frames in enumerate(videos):
    folder = os.path.join(root, 'frames', f'video{v}')
    os.makedirs(folder)
    for i, jpeg in enumerate(frames):
      with open(os.path.join(folder, f'img_{i + 1:05d}.jpg'), 'wb') as f:
        f.write(jpeg)
    folders.append(folder)
  return folders


def read_all(path: str) -> None:
  """Reads a file once, so that every side is timed from a warm page cache."""
  with open(path, 'rb') as f:
    while f.read(16 << 20):
      pass


# --- TSM-style baseline (TSM's ops/dataset.py and ops/transforms.py, re-stated) ---------------

class TsmMultiScaleCrop:
  """TSM's GroupMultiScaleCrop (fix_crop, more_fix_crop off) + resize with PIL bilinear."""

  def __init__(self, input_size, scales=(1, .875, .75, .66), max_distort=1):
    self.input_size = (input_size, input_size)
    self.scales = scales
    self.max_distort = max_distort

  def __call__(self, images):
    im_w, im_h = images[0].size
    crop_w, crop_h, off_w, off_h = self._sample_crop_size(im_w, im_h)
    cropped = [img.crop((off_w, off_h, off_w + crop_w, off_h + crop_h)) for img in images]
    return [img.resize(self.input_size, Image.BILINEAR) for img in cropped]

  def _sample_crop_size(self, image_w, image_h):
    base_size = min(image_w, image_h)
    crop_sizes = [int(base_size * x) for x in self.scales]
    crop_h = [self.input_size[1] if abs(x - self.input_size[1]) < 3 else x for x in crop_sizes]
    crop_w = [self.input_size[0] if abs(x - self.input_size[0]) < 3 else x for x in crop_sizes]
    pairs = [(w, h) for i, h in enumerate(crop_h) for j, w in enumerate(crop_w)
             if abs(i - j) <= self.max_distort]
    crop_pair = random.choice(pairs)
    w_step = (image_w - crop_pair[0]) // 4
    h_step = (image_h - crop_pair[1]) // 4
    offsets = [(0, 0), (4 * w_step, 0), (0, 4 * h_step), (4 * w_step, 4 * h_step),
               (2 * w_step, 2 * h_step)]
    w_offset, h_offset = random.choice(offsets)
    return crop_pair[0], crop_pair[1], w_offset, h_offset


class TsmLoader:
  """TSM's TSNDataSet in training mode over frame folders, ending in a uint8 (T, H, W, 3) clip."""

  def __init__(self, folders: list[str], num_frames: list[int]):
    self.folders = folders
    self.num_frames = num_frames
    self.crop = TsmMultiScaleCrop(CROP)

  def _sample_indices(self, n):
    average_duration = n // T
    if average_duration > 0:
      return np.arange(T) * average_duration + np.random.randint(average_duration, size=T)
    if n > T:
      return np.sort(np.random.randint(n, size=T))
    return np.zeros((T,), dtype=int)

  def __getitem__(self, index):
    folder = self.folders[index]
    images = []
    for i in self._sample_indices(self.num_frames[index]):
      images.append(Image.open(os.path.join(folder, f'img_{i + 1:05d}.jpg')).convert('RGB'))
    images = self.crop(images)
    if random.random() < 0.5:
      images = [img.transpose(Image.FLIP_LEFT_RIGHT) for img in images]
    return np.stack([np.asarray(img) for img in images])


# --- timing ---------------------------------------------------------------------------------

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)


def tsm_to_float(clip: np.ndarray) -> np.ndarray:
  """TSM's ToTorchFormatTensor + GroupNormalize on the host (ours normalises on device)."""
  x = clip.transpose(0, 3, 1, 2).astype(np.float32) / 255.0
  return (x - IMAGENET_MEAN[:, None, None]) / IMAGENET_STD[:, None, None]


def _timed(fn) -> tuple[float, float]:
  """Runs fn(); returns (wall seconds, CPU seconds of this process, all its threads)."""
  wall, cpu = time.perf_counter(), time.process_time()
  fn()
  return time.perf_counter() - wall, time.process_time() - cpu


def time_baseline(loader: TsmLoader, num_videos: int, clips: int, batch_size: int,
                  to_float: bool) -> tuple[float, float]:
  """Returns (clips/s, clips per CPU-second) of the baseline in this process."""
  rng = np.random.default_rng(0)
  order = rng.integers(num_videos, size=clips + 8)
  for v in order[:8]:
    loader[int(v)]

  def run():
    batch = []
    for v in order[8:]:
      clip = loader[int(v)]
      batch.append(tsm_to_float(clip) if to_float else clip)
      if len(batch) == batch_size:  # collated, as TSM's DataLoader does
        out = np.stack(batch)
        batch = []
    assert out.shape[:2] == (batch_size, T)

  wall, cpu = _timed(run)
  return clips / wall, clips / cpu


def time_ours(source, num_workers: int, num_threads: int, clips: int,
              batch: int) -> tuple[float, float]:
  """Returns (clips/s, clips per CPU-second of this process) of our train pipeline, warm.

  With worker processes the CPU time of the workers is not counted (see the cores column).
  """
  spec = pipeline.ClipSpec(num_frames=T, crop_size=CROP, short_side=HEIGHT)
  ds = pipeline.train_dataset(source, spec, seed=0, global_batch_size=batch, shard_index=0,
                              shard_count=1, num_workers=num_workers, num_threads=num_threads)
  it = iter(ds)
  steps = max(1, clips // batch)
  try:
    for _ in range(max(2, 2 * num_workers)):
      next(it)

    def run():
      for _ in range(steps):
        b = next(it)
      assert b['clips'].shape == (batch, T, CROP, CROP, 3) and b['clips'].dtype == np.uint8

    wall, cpu = _timed(run)
  finally:
    if hasattr(it, 'close'):
      it.close()
  return steps * batch / wall, steps * batch / cpu


def clip_sources(fmt: str, root: str, videos: list[list[bytes]]) -> dict[str, object]:
  """The sources of the read table for format `fmt`: {name: source} as stored now and before."""
  paths = write_files(root, videos, [fmt])
  path = paths[fmt]
  read_all(path)
  if fmt == 'array_record':
    read_all(frames_lib.frames_file(path))
    before = os.path.join(root, 'before-train.array_record-00000-of-00001')
    write_one_record_array_record(before, videos)
    read_all(before)
    return {'ArrayRecord (frame records)': open_source(fmt, path),
            'ArrayRecord (whole record, before)': VideoRecords(before, one_record_features())}
  return {'TFRecord (frame index)': open_source(fmt, path),
          'TFRecord (whole record, before)': WholeTFRecord(path)}


def time_clip_reads(source, order: np.ndarray, seed: int) -> tuple[float, float]:
  """CPU microseconds a clip to read (`source[i]` and its sampled frames) and to decode them,
  over the videos in `order`, with training's sampling (seeded by `seed`)."""
  rng = np.random.default_rng(seed)
  read = []
  cpu = time.process_time()
  for i in order:
    rec = source[int(i)]
    frames = rec['frames']
    indices = list(dict.fromkeys(sampling.train_indices(len(frames), T, rng).tolist()))
    take = getattr(frames, 'take', None)
    read.append(take(indices) if take else [frames[k] for k in indices])
  read_us = (time.process_time() - cpu) / len(order) * 1e6
  cpu = time.process_time()
  for data in read:
    transforms.decode(data, range(len(data)))
  return read_us, (time.process_time() - cpu) / len(order) * 1e6


def read_table(formats: list[str], lengths: list[int], rng: np.random.Generator) -> list[tuple]:
  """Times a clip's read and decode from each source for videos of each length; returns rows
  (source name, frames, {'read', 'decode', 'total': best CPU us over the rounds, 'rounds': the
  total of each round}).

  Every length gets `--read_total_frames` frames in all (fewer, longer videos), and the rounds
  interleave every (length, source), so that neither the CPU caches nor the machine's load over
  time favour a length.
  """
  sources = {}
  with tempfile.TemporaryDirectory() as root:
    for length in lengths:
      videos = [synthetic_frames(length, rng)
                for _ in range(max(1, _READ_TOTAL.value // length))]
      for fmt in formats:
        folder = os.path.join(root, f'{fmt}-{length}')
        os.makedirs(folder)
        for name, source in clip_sources(fmt, folder, videos).items():
          sources[(name, length)] = (source, rng.integers(len(videos), size=_READS.value))
    for source, _ in sources.values():  # warm-up: every video once
      time_clip_reads(source, np.arange(len(source)), 0)
    best = {key: {'rounds': []} for key in sources}
    for r in range(_REPEATS.value):
      for key, (source, order) in sources.items():
        read_us, decode_us = time_clip_reads(source, order, r)
        best[key]['rounds'].append(read_us + decode_us)
        for part, us in (('read', read_us), ('decode', decode_us), ('total', read_us + decode_us)):
          best[key][part] = min(us, best[key].get(part, float('inf')))
  return [(name, length, best[(name, length)]) for name, length in sources]


def print_read_table(rows: list[tuple]) -> None:
  """Prints the per-clip table and, per source, the clip rate at the longest length over the
  rate at the shortest."""
  print(f'\nOne training clip (T={T}), CPU microseconds (best of {_REPEATS.value} interleaved '
        f'rounds of {_READS.value} random clips; {_READ_TOTAL.value} frames of videos of each '
        'length; page cache warm):\n')
  print('| source | frames/video | read (us) | decode (us) | read + decode (us) | clips/s |')
  print('| --- | ---: | ---: | ---: | ---: | ---: |')
  for name, length, t in sorted(rows, key=lambda r: r[1]):
    print(f'| {name} | {length} | {t["read"]:.0f} | {t["decode"]:.0f} | {t["total"]:.0f} | '
          f'{1e6 / t["total"]:.0f} |')
  lengths = sorted({length for _, length, _ in rows})
  if len(lengths) < 2:
    return
  short, long = lengths[0], lengths[-1]
  times = {(name, length): t for name, length, t in rows}
  print(f'\n| source | clips/s at {long} frames / at {short} frames: best rounds | '
        'median of the rounds\' ratios (min-max) |')
  print('| --- | ---: | ---: |')
  for name in dict.fromkeys(name for name, _, _ in rows):
    a, b = times[(name, short)], times[(name, long)]
    ratios = [x / y for x, y in zip(a['rounds'], b['rounds'])]  # the same round: the same load
    print(f'| {name} | {a["total"] / b["total"]:.2f}x | {np.median(ratios):.2f}x '
          f'({min(ratios):.2f}-{max(ratios):.2f}) |')


def clips_table(formats: list[str], rng: np.random.Generator) -> None:
  """Times and prints the clips table: our pipeline from each format against the TSM loader."""
  videos = [synthetic_frames(_FRAMES.value, rng) for _ in range(_VIDEOS.value)]
  jpeg_kb = np.mean([len(f) for v in videos for f in v]) / 1024
  cores = os.cpu_count() or 1
  with tempfile.TemporaryDirectory() as root:
    paths = write_files(root, videos, formats)
    folders = write_frame_folders(root, videos)
    for path in paths.values():  # page cache warm on every side
      read_all(path)
    if 'array_record' in paths:
      read_all(frames_lib.frames_file(paths['array_record']))
    sources = {fmt: open_source(fmt, paths[fmt], _DATASET_SIZE) for fmt in formats}
    loader = TsmLoader(folders, [len(v) for v in videos])
    for v in range(len(videos)):
      for source in sources.values():
        list(source[v]['frames'])
      for name in os.listdir(folders[v]):
        with open(os.path.join(folders[v], name), 'rb') as f:
          f.read()
    random.seed(0)
    np.random.seed(0)
    # (name, cores, measure() -> (clips/s, clips per CPU-second or None))
    loaders = [
        ('TSM-style loader: PIL, frame files, uint8 out (baseline)', 1,
         lambda: time_baseline(loader, len(videos), _CLIPS.value, _BATCH.value, False)),
        ('TSM loader as shipped: + float32 ToTensor/Normalize', 1,
         lambda: time_baseline(loader, len(videos), _CLIPS.value, _BATCH.value, True)),
    ]
    for fmt in formats:
      loaders.append((f'ours ({FORMAT_NAMES[fmt]}), in process, 1 thread', 1,
                      lambda s=sources[fmt]: time_ours(s, 0, 1, _CLIPS.value, _BATCH.value)))
    for w in (int(x) for x in _WORKERS.value):
      for fmt in formats:
        loaders.append((f'ours ({FORMAT_NAMES[fmt]}), {w} grain worker{"s" if w > 1 else ""}',
                        min(w, cores),
                        lambda w=w, s=sources[fmt]: (
                            time_ours(s, w, 1, _CLIPS.value, _BATCH.value)[0], None)))
    results = [[] for _ in loaders]
    for _ in range(_REPEATS.value):  # interleaved rounds: load changes hit every loader alike
      for i, (_, _, measure) in enumerate(loaders):
        results[i].append(measure())
    rows = []
    for (name, used, _), runs in zip(loaders, results):
      rate = max(r[0] for r in runs)
      per_cpu = None if runs[0][1] is None else max(r[1] for r in runs)
      rows.append((name, used, (rate, per_cpu)))
  base_cpu = rows[0][2][1]
  print(f'\nT={T}, {CROP}x{CROP}, {_VIDEOS.value} videos x {_FRAMES.value} frames of '
        f'{HEIGHT}x{WIDTH} JPEG (mean {jpeg_kb:.1f} kB), {_CLIPS.value} clips a measurement, '
        f'best of {_REPEATS.value}; {cores} cores.\n')
  print('| loader | cores | clips/s (wall) | clips per CPU-second | vs baseline, per core |')
  print('| --- | ---: | ---: | ---: | ---: |')
  for name, used, (rate, per_cpu) in rows:
    if per_cpu is not None:
      cpu, ratio = f'{per_cpu:.1f}', f'{per_cpu / base_cpu:.2f}x'
    else:  # workers: wall rate over the cores they had
      cpu, ratio = f'({rate / used:.1f} /core, wall)', f'{rate / used / rows[0][2][0]:.2f}x (wall)'
    print(f'| {name} | {used} | {rate:.1f} | {cpu} | {ratio} |')


def main(argv):
  del argv
  formats = [f.strip() for f in _FORMATS.value if f.strip()]
  unknown = sorted(set(formats) - set(FORMAT_NAMES))
  if unknown or not formats:
    raise app.UsageError(f'--formats: {unknown or "none given"}; '
                         f'choose from {", ".join(FORMAT_NAMES)}')
  rng = np.random.default_rng(0)
  if _CLIPS_TABLE.value:
    clips_table(formats, rng)
  read_rows = read_table(formats, [int(x) for x in _READ_FRAMES.value if x.strip()], rng)
  if read_rows:
    print_read_table(read_rows)


if __name__ == '__main__':
  app.run(main)
