"""Train input pipeline speed: our grain pipeline (ArrayRecord, TFRecord) vs a TSM-style PIL loader.

  python -m benchmarks.input_pipeline_speed [--videos=32 --frames_per_video=48 --clips=160]
      [--formats=array_record,tfrecord --read_frames=48,300]

Every row makes the same training clips (T=8, TSN sampling, multi-scale crop with the 4 TSM scales
and 5 positions, resize to 224, random flip; uint8 `(T, 224, 224, 3)` out) from the same frames:
synthetic 256x340 JPEG frames (quality 90, 4:2:0, ~25 kB, as the converter writes them).
  ours (ArrayRecord)  one ArrayRecord file in the converter's record format (one record per video:
            TFDS features, read and deserialized as `tfds.data_source` does), through
            `pipeline.train_dataset`: simplejpeg decode of the sampled frames, OpenCV crop+resize.
            In one process with one thread (1 core), and with 1 and 2 grain worker processes.
  ours (TFRecord)  the same videos in one TFRecord file of DMVR SequenceExamples, one record per
            video, as `--mode=prepare --config.data.output_format=tfrecord` writes them
            (`prepare.tfrecord_writer`), read by `tfrecord.TFRecordSource` (one ranged read of the
            record, both CRC-32Cs checked, the SequenceExample parsed into the same record dict),
            through the same pipeline, in the same configurations.
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

A second table times one `source[i]` of each format directly, for videos of each `--read_frames`
length (CPU microseconds a record, best of the interleaved rounds), split into the file read,
TFRecord's framing + CRC-32C checks, and the decode into the record dict (TFDS example
deserialization for ArrayRecord, SequenceExample parse for TFRecord). Our cost grows with the video
length, the baseline's does not: a record holds the whole video. On the shared 2-core machine of
docs/benchmarks.md (load ~3, 2026-12-01) one record cost ~0.68 ms (ArrayRecord) and ~0.57 ms
(TFRecord) at 48 frames, ~7.8 ms and ~6.4 ms at 300 frames (Kinetics' 10 s at 30 fps), when
decoding the 8 sampled frames costs ~2.5 ms (measured 2026-11-24). TFRecord's plain ranged read
(~0.1 ms at 48 frames) plus its framing and CRC-32C checks (~0.12 ms: the CRC over the payload
and copies of it) cost less than ArrayRecord's read through its reader (~0.4 ms); the
SequenceExample parse and the TFDS deserialization cost about the same (~0.25 ms).
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

from input_pipeline import files
from input_pipeline import pipeline
from input_pipeline import tfrecord
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
                                 'Frames per video of the per-record read table (empty: none).')
_READ_VIDEOS = flags.DEFINE_integer('read_videos', 8, 'Videos of each length in the read table.')
_READS = flags.DEFINE_integer('reads', 64, 'source[i] calls timed per measurement (read table).')

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


class RecordFile:
  """Random access to an ArrayRecord file of video records, deserialized as `tfds.data_source` does.

  Presented as `size` videos cycling over the written ones: grain's index shuffle costs 1.5 ms an
  element on a 16-element dataset and 4 us from ~100k elements on (a real dataset's size).
  """

  def __init__(self, path: str, size: int):
    import grain  # pylint: disable=g-import-not-at-top
    self._source = grain.sources.ArrayRecordDataSource([path])
    self._features = records.features(num_classes=1000)
    self._size = size

  def __len__(self):
    return self._size

  def __getitem__(self, i):
    return self._features.deserialize_example_np(self._source[i % len(self._source)])


class TFRecordFile:
  """Random access to a TFRecord file of video records through `tfrecord.TFRecordSource`.

  Presented as `size` videos cycling over the written ones, as `RecordFile` is, so that grain's
  index shuffle costs the same on both formats. The shard's offset index is built when this is
  made (one walk of the file) and cached beside it, as training does on its first start.
  """

  def __init__(self, path: str, size: int):
    self._source = tfrecord.TFRecordSource([path])
    self._size = size

  def __len__(self):
    return self._size

  def __getitem__(self, i):
    return self._source[i % len(self._source)]


def write_array_record(path: str, videos: list[list[bytes]]) -> None:
  """Writes the videos as one ArrayRecord file of the converter's TFDS records."""
  from array_record.python import array_record_module  # pylint: disable=g-import-not-at-top
  features = records.features(num_classes=1000)
  writer = array_record_module.ArrayRecordWriter(path, records.WRITER_OPTIONS)
  for v, frames in enumerate(videos):
    rec = _record(v, frames)
    del rec['label_name']  # as records.write_shard does: TFDS features have no such key
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


def open_source(fmt: str, path: str, size: int):
  """Our training source of format `fmt` over the file `path`, `size` videos long."""
  return RecordFile(path, size) if fmt == 'array_record' else TFRecordFile(path, size)


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


def read_parts(fmt: str, path: str) -> tuple[list[bytes], dict[str, Callable[[int], object]]]:
  """The parts of one `source[i]` of format `fmt` over `path`: (payloads, {part: fn(i)}).

  'read' is the file read alone; 'checked' (TFRecord) the read with the framing and both CRC
  checks, so that its extra over 'read' is what the checks cost; 'decode' turns record i's
  payload, read beforehand, into the record dict; 'total' is the training source's own
  `source[i]`, timed as a whole.
  """
  if fmt == 'array_record':
    source = RecordFile(path, 1)
    raw = source._source  # pylint: disable=protected-access
    deserialize = source._features.deserialize_example_np  # pylint: disable=protected-access
    payloads = [raw[i] for i in range(len(raw))]
    return payloads, {'read': lambda i: raw[i], 'decode': lambda i: deserialize(payloads[i]),
                      'total': lambda i: source[i]}
  source = tfrecord.TFRecordSource([path])
  rows = tfrecord.load_index(path)['records']  # [offset, payload length, ...]: the cached index
  payloads = [tfrecord.read_record(path, r[0], r[1]) for r in rows]
  framing = 16  # a record's header (8-byte length + its CRC) and footer (the payload's CRC)
  return payloads, {
      'read': lambda i: files.read_range(path, rows[i][0], rows[i][1] + framing),
      'checked': lambda i: tfrecord.read_record(path, rows[i][0], rows[i][1]),
      'decode': lambda i: tfrecord.parse(payloads[i]),
      'total': lambda i: source[i]}


def time_reads(parts: dict[str, Callable[[int], object]], order: np.ndarray) -> dict[str, float]:
  """CPU microseconds a call of each part, over the record indices in `order`."""
  times = {}
  for part, fn in parts.items():
    cpu = time.process_time()
    for i in order:
      fn(int(i))
    times[part] = (time.process_time() - cpu) / len(order) * 1e6
  return times


def read_table(formats: list[str], lengths: list[int], rng: np.random.Generator) -> list[tuple]:
  """Times `source[i]` of each format for videos of each length; returns the table's rows.

  Each row: (format, frames, mean serialized record kB, {part: best CPU us over the rounds}).
  """
  rows = []
  for length in lengths:
    videos = [synthetic_frames(length, rng) for _ in range(_READ_VIDEOS.value)]
    with tempfile.TemporaryDirectory() as root:
      paths = write_files(root, videos, formats)
      parts, record_kb = {}, {}
      for fmt in formats:
        read_all(paths[fmt])
        payloads, parts[fmt] = read_parts(fmt, paths[fmt])
        record_kb[fmt] = np.mean([len(p) for p in payloads]) / 1024
        time_reads(parts[fmt], np.arange(len(payloads)))  # warm-up: every record once
      order = rng.integers(len(videos), size=_READS.value)
      best = {fmt: {} for fmt in formats}
      for _ in range(_REPEATS.value):  # interleaved rounds, as for the clips table
        for fmt in formats:
          for part, us in time_reads(parts[fmt], order).items():
            best[fmt][part] = min(us, best[fmt].get(part, float('inf')))
      rows += [(fmt, length, record_kb[fmt], best[fmt]) for fmt in formats]
  return rows


def print_read_table(rows: list[tuple]) -> None:
  """Prints the per-record table: the parts of one `source[i]` and its total, per format."""
  print('\nOne `source[i]`, CPU microseconds a record (best of '
        f'{_REPEATS.value} rounds of {_READS.value} random reads over {_READ_VIDEOS.value} videos, '
        'page cache warm):\n')
  print('| source | frames/video | record (kB) | file read | + framing, CRC-32C | decode to dict | '
        'us per source[i] | vs ArrayRecord |')
  print('| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |')
  totals = {length: t['total'] for fmt, length, _, t in rows if fmt == 'array_record'}
  for fmt, length, kb, t in rows:
    checks = f'{max(0.0, t["checked"] - t["read"]):.0f}' if 'checked' in t else '-'
    ratio = f'{t["total"] / totals[length]:.2f}x' if length in totals else '-'
    print(f'| {FORMAT_NAMES[fmt]} | {length} | {kb:.0f} | {t["read"]:.0f} | {checks} | '
          f'{t["decode"]:.0f} | {t["total"]:.0f} | {ratio} |')


def main(argv):
  del argv
  formats = [f.strip() for f in _FORMATS.value if f.strip()]
  unknown = sorted(set(formats) - set(FORMAT_NAMES))
  if unknown or not formats:
    raise app.UsageError(f'--formats: {unknown or "none given"}; '
                         f'choose from {", ".join(FORMAT_NAMES)}')
  rng = np.random.default_rng(0)
  videos = [synthetic_frames(_FRAMES.value, rng) for _ in range(_VIDEOS.value)]
  jpeg_kb = np.mean([len(f) for v in videos for f in v]) / 1024
  cores = os.cpu_count() or 1
  with tempfile.TemporaryDirectory() as root:
    paths = write_files(root, videos, formats)
    folders = write_frame_folders(root, videos)
    for path in paths.values():  # page cache warm on every side
      read_all(path)
    sources = {fmt: open_source(fmt, paths[fmt], _DATASET_SIZE) for fmt in formats}
    loader = TsmLoader(folders, [len(v) for v in videos])
    for v in range(len(videos)):
      for source in sources.values():
        source[v]
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
  read_rows = read_table(formats, [int(x) for x in _READ_FRAMES.value if x.strip()], rng)
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
  if read_rows:
    print_read_table(read_rows)


if __name__ == '__main__':
  app.run(main)
