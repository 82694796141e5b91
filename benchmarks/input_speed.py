"""Input speed: conversion (`--mode=prepare`) rates per worker, disk use, and storage per dataset.

Generates videos of each source kind (mp4/h264, webm/vp9, avi/mpeg4, JPEG frame folders), converts
them with one worker in this process (`records.write_shard`, the converter's unit of work) and
prints markdown tables: videos/s and frames/s per worker, KiB per stored frame, MiB per video; then
an estimate of each dataset's prepared size (videos x mean frames x bytes per frame at its stored
frame size), so that users can plan storage.

  python -m benchmarks.input_speed --sections=conversion --conv-videos=4 --conv-frames=48

The frames are synthetic (a moving shape over a gradient, with mild noise); real footage compresses
differently, so the storage estimate is a planning figure: after a real run, `prepare_summary.json`
gives the exact bytes.
"""

import argparse
import datetime
import os
import platform
import shutil
import tempfile
import time

import av
import numpy as np
import simplejpeg

from configs import custom
from input_pipeline import transforms
from input_pipeline.prepare import converter
from input_pipeline.prepare import records
from input_pipeline.prepare.layouts import common

# (name, container extension or 'jpeg', source height, width, what it stands for)
SOURCES = (
    ('mp4 h264 360x480 -> 256', '.mp4', 360, 480, 'Kinetics-like, resized'),
    ('webm vp9 240x427 (kept)', '.webm', 240, 427, 'Something-Something v2'),
    ('avi mpeg4 240x320 (kept)', '.avi', 240, 320, 'UCF-101 / HMDB-51'),
    ('JPEG folder 100x176 (copied)', 'jpeg', 100, 176, 'Something-Something v1 / Jester'),
    ('JPEG folder 480x640 -> 256', 'jpeg', 480, 640, 'large frames, resized'),
)

# Published sizes (all splits) and approximate mean frames per video (duration x fps of the
# sources), and the frame size stored at short side 256 (smaller sources are not upscaled).
# Datasets whose JPEG frames are copied byte for byte take the space of their unpacked frames.
DATASETS = (
    ('Something-Something v1', 108_499, 36, (100, 176), True),
    ('Something-Something v2', 220_847, 45, (240, 427), False),
    ('Jester', 148_092, 36, (100, 176), True),
    ('Kinetics-400', 306_245, 250, (256, 341), False),
    ('UCF-101', 13_320, 186, (240, 320), False),
    ('HMDB-51', 6_766, 95, (240, 320), False),
)


def add_conversion_args(parser: argparse.ArgumentParser) -> None:
  """Adds the conversion section's flags (prefixed --conv-)."""
  parser.add_argument('--conv-videos', type=int, default=4, help='videos per source kind')
  parser.add_argument('--conv-frames', type=int, default=48, help='frames per video')
  parser.add_argument('--conv-short-side', type=int, default=256)
  parser.add_argument('--conv-quality', type=int, default=90)
  parser.add_argument('--conv-rounds', type=int, default=3, help='timed rounds; the median counts')
  parser.add_argument('--conv-workers', type=int, default=0,
                      help='also time prepare() end to end with this many workers '
                      '(0: all cores, -1: skip)')


def synthetic_frame(i: int, height: int, width: int, seed: int = 0) -> np.ndarray:
  """A frame with a gradient background, a shape moving with i, and mild noise (uint8 RGB)."""
  rng = np.random.default_rng(seed * 100_003 + i)
  y, x = np.mgrid[0:height, 0:width].astype(np.float32)
  img = np.stack([x / width * 200, y / height * 200, (x + y) / (width + height) * 255], -1)
  cy, cx = height / 2, (i * 7 % width)
  img[((y - cy) ** 2 + (x - cx) ** 2) < (min(height, width) / 5) ** 2] = (250, 40, 40)
  img += rng.normal(0, 6, img.shape)
  return np.clip(img, 0, 255).astype(np.uint8)


def _write_source(path, kind, height, width, frames, seed):
  if kind == 'jpeg':
    os.makedirs(path)
    for i in range(frames):
      with open(os.path.join(path, f'{i + 1:05d}.jpg'), 'wb') as f:
        f.write(simplejpeg.encode_jpeg(synthetic_frame(i, height, width, seed), quality=90))
    return
  codec = {'.mp4': 'libx264', '.webm': 'libvpx-vp9', '.avi': 'mpeg4'}[kind]
  with av.open(path, 'w') as c:
    s = c.add_stream(codec, rate=12)
    s.width, s.height, s.pix_fmt = width, height, 'yuv420p'
    if codec == 'libvpx-vp9':
      s.options = {'deadline': 'realtime', 'cpu-used': '8'}
    for i in range(frames):
      for p in s.encode(av.VideoFrame.from_ndarray(synthetic_frame(i, height, width, seed),
                                                   format='rgb24')):
        c.mux(p)
    for p in s.encode():
      c.mux(p)


def conversion_rows(args) -> list[dict]:
  """Converts generated videos of each source kind with one worker; returns one row per kind.

  Each row: source, frames, videos, seconds, videos_per_s, frames_per_s (per worker),
  kib_per_frame, mib_per_video (the shard file over its videos) and bytes_per_pixel.
  """
  rows = []
  root = tempfile.mkdtemp(prefix='input_speed_')
  try:
    for n, (name, kind, height, width, _) in enumerate(SOURCES):
      src = os.path.join(root, f'src{n}')
      os.makedirs(src)
      entries = []
      for v in range(args.conv_videos):
        path = os.path.join(src, f'v{v}' + ('' if kind == 'jpeg' else kind))
        _write_source(path, kind, height, width, args.conv_frames, seed=v)
        entries.append(common.Entry(f'v{v}', 0, common.FRAMES if kind == 'jpeg' else common.VIDEO,
                                    path))
      out = os.path.join(root, f'out{n}')
      os.makedirs(os.path.join(out, 'tmp'))
      task = records.ShardTask(
          split='train', index=0, num_shards=1, entries=entries, path=os.path.join(out, 'shard'),
          tmp_dir=os.path.join(out, 'tmp'), done_path=os.path.join(out, 'done.json'),
          short_side=args.conv_short_side, quality=args.conv_quality, num_classes=1)
      times = []
      for _ in range(max(1, args.conv_rounds)):
        start = time.perf_counter()
        sidecar = records.write_shard(task)
        times.append(time.perf_counter() - start)
      seconds = float(np.median(times))
      assert not sidecar['quarantine'], sidecar['quarantine']
      frames = sum(r[2] for r in sidecar['records'])
      oh, ow = _stored_size(height, width, args.conv_short_side)
      rows.append({
          'source': name, 'frames': args.conv_frames, 'videos': len(entries),
          'seconds': seconds, 'videos_per_s': len(entries) / seconds,
          'frames_per_s': frames / seconds, 'stored': f'{oh}x{ow}',
          'kib_per_frame': sidecar['bytes'] / frames / 1024,
          'mib_per_video': sidecar['bytes'] / len(entries) / 2**20,
          'bytes_per_pixel': sidecar['bytes'] / frames / (oh * ow),
      })
    if args.conv_workers >= 0:  # -1 skips the end-to-end row
      rows.append(_end_to_end(args, root))
  finally:
    shutil.rmtree(root, ignore_errors=True)
  return rows


def _stored_size(height, width, short_side):
  return transforms.output_size(height, width, short_side)


def _end_to_end(args, root) -> dict:
  """prepare() over the mp4 videos with a custom list, all workers: the pool's real throughput."""
  src = os.path.join(root, 'src0')
  copies = 8 * (args.conv_workers or os.cpu_count() or 1)
  with open(os.path.join(root, 'train.txt'), 'w') as f:
    for k in range(copies):
      f.write(f'{src}/v{k % args.conv_videos}.mp4 0\n')
  config = custom.get_config()
  config.data.raw_dir = os.path.join(root, 'train.txt')
  config.data.data_dir = os.path.join(root, 'e2e')
  config.data.prepare_workers = args.conv_workers
  config.data.videos_per_shard = 1
  config.data.short_side = args.conv_short_side
  config.data.jpeg_quality = args.conv_quality
  summary = converter.prepare(config)
  workers = args.conv_workers or os.cpu_count() or 1
  frames = args.conv_frames * summary['converted']
  return {'source': f'{SOURCES[0][0]}: prepare(), {workers} workers, {copies} videos, pool start '
                    'included', 'frames': args.conv_frames,
          'videos': summary['converted'], 'seconds': summary['seconds'],
          'videos_per_s': summary['converted'] / summary['seconds'] / workers,
          'frames_per_s': frames / summary['seconds'] / workers, 'stored': '',
          'kib_per_frame': None, 'mib_per_video': None, 'bytes_per_pixel': None}


def conversion_table(rows) -> str:
  """Markdown table of conversion_rows (rates are per worker)."""
  lines = ['| source | frames/video | stored | videos/s per worker | frames/s per worker | '
           'KiB/frame | MiB/video |', '|---|---:|---|---:|---:|---:|---:|']
  for r in rows:
    kib = '' if r['kib_per_frame'] is None else f'{r["kib_per_frame"]:.1f}'
    mib = '' if r['mib_per_video'] is None else f'{r["mib_per_video"]:.2f}'
    lines.append(f'| {r["source"]} | {r["frames"]} | {r["stored"]} | {r["videos_per_s"]:.2f} | '
                 f'{r["frames_per_s"]:.0f} | {kib} | {mib} |')
  return '\n'.join(lines)


def storage_table(rows) -> str:
  """Markdown estimate per dataset: videos x mean frames x bytes per frame at its stored size."""
  bpp = [r['bytes_per_pixel'] for r in rows if r['bytes_per_pixel'] and 'copied' not in r['source']]
  bytes_per_pixel = float(np.median(bpp))
  lines = [f'Bytes per stored pixel (median of the re-encoded rows): {bytes_per_pixel:.3f}', '',
           '| dataset | videos | mean frames (approx.) | stored frame | KiB/frame (est.) | '
           'GiB (est.) | note |', '|---|---:|---:|---|---:|---:|---|']
  for name, videos, frames, (h, w), copied in DATASETS:
    per_frame = bytes_per_pixel * h * w
    note = 'frames copied: about the size of the unpacked frame folders' if copied else ''
    lines.append(f'| {name} | {videos:,} | {frames} | {h}x{w} | {per_frame / 1024:.1f} | '
                 f'{videos * frames * per_frame / 2**30:,.0f} | {note} |')
  return '\n'.join(lines)


def conversion_section(args) -> str:
  """The conversion section of the report: both tables with a header line."""
  rows = conversion_rows(args)
  return '\n\n'.join([
      f'### Conversion, {datetime.date.today()}, {platform.processor() or platform.machine()}, '
      f'{os.cpu_count()} cores', conversion_table(rows), storage_table(rows)])


SECTIONS = {'conversion': conversion_section}


def main():
  """Parses the flags and prints the chosen sections."""
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--sections', default=','.join(SECTIONS),
                      help=f'comma-separated, from {",".join(SECTIONS)}')
  add_conversion_args(parser)
  args = parser.parse_args()
  for name in args.sections.split(','):
    print(SECTIONS[name](args))
    print()


if __name__ == '__main__':
  main()
