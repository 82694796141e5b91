"""grain input pipelines: prepared videos -> batches of uint8 clips, one host's share of each batch.

A source is any random-access sequence of video records (`len`, `[i]`), normally
`open_source(config, split)` over the prepared dataset; a record is
`{'id', 'label' (-1: unlabeled), 'num_frames', 'fps', 'frames' (JPEG bytes, one per frame)}`,
`frames` any sequence: a list, or a `frames.Frames` that reads only the frames a clip takes (so a
clip costs the same for any video length). The frame count used is `len(frames)`.

train  `grain.MapDataset` graph: global shuffle (`seed`; a new order each epoch) -> repeat ->
       per-clip random sampling and augmentation (seeded by `seed + 1` and the clip's position in
       the global stream, so a clip is the same whatever the host or worker count) -> this host's
       share of the global stream (element `i * shard_count + shard_index`) -> batches of
       `global_batch_size / shard_count`, remainder dropped. Infinite unless `num_epochs` is given;
       a finite stream is cut to whole global batches so that every host runs the same steps.
val, test  the views of an evaluation protocol (protocols.py: val 1 view, test
       `num_clips x num_crops`). Views are numbered video-major (video, clip, crop); the global batch `s` holds views
       `[s * B, (s + 1) * B)` and host `h` its rows `[h * b, (h + 1) * b)`, so the concatenation
       of the hosts' batches in process order is the global batch in view order. The last batch is
       padded: padding rows have `mask` 0, `label` -1, `video_index` -1 and a zero clip. Every
       host runs `num_eval_steps(...)` steps, computed from the global video count.

Every clip, train or eval, is cut from its frames at the run's `short_side` whatever size they were
stored at (`transforms.to_short_side`), so training, evaluation, predict and visualize see one image.
`create_dataset` warns (once per process) when the prepared dataset says its frames were stored at
another short side or JPEG quality than the config's (`video.stored_short_side`): evaluation is right
either way, but predict on raw videos would then not store their frames as the dataset did.

Batches: `{'clips': uint8 (b, T, H, W, 3), 'label': int32 (b,)}`, plus for val/test
`'mask': int32 (b,)` (1 real, 0 padding) and `'video_index': int32 (b,)` (index of the video in
the source). Normalisation happens on device (docs/design.md section 2).

Workers: `num_workers` > 0 runs the graph in that many `grain` worker processes (`mp_prefetch`,
spawned: the calling program needs absl flags parsed and a `__main__` guard, docs/design.md section 7); 0 runs it
in this process. Either way the batches are the same for a seed. Within each process
`num_threads` threads build batches concurrently (JPEG decoding and resizing release the GIL).
The iterator's state (`it.get_state()` / `it.set_state()`, or through Orbax with
`grain.checkpoint.CheckpointSave(it)` / `CheckpointRestore(it)`) resumes the stream exactly.
"""

import dataclasses
import functools
import math
import os
import threading
from typing import Any, Sequence

from absl import logging
import grain
import jax
import numpy as np

from input_pipeline import errors
from input_pipeline import protocols
from input_pipeline import sampling
from input_pipeline import transforms
from input_pipeline import video

MODES = ('train',) + protocols.NAMES
# Augmentation seeds are derived from the shuffle seed so one `seed` fixes the whole stream.
_AUGMENT_SEED_OFFSET = 1


@dataclasses.dataclass(frozen=True)
class ClipSpec:
  """What a clip is: frames per clip, sizes and augmentation (from `config.data`).

  `short_side`: the short side of the frames the clip is cut from (`transforms.to_short_side`).
  `stored_short_side`: the short side frames are stored at (`video.stored_short_side`): the frames
  of a raw video (predict, visualize) are stored so first, as prepare did, then cut like a prepared
  video's; 0 means `short_side`. `max_fps`: the frame-rate cap prepare stored videos under
  (`data.max_fps`), applied to a raw video file's frames the same way.
  """
  num_frames: int = 8
  crop_size: int = 224
  short_side: int = 256
  stored_short_side: int = 0
  random_flip: bool = True
  flip_label_map: tuple[tuple[int, int], ...] = ()
  scales: tuple[float, ...] = transforms.SCALES
  max_distort: int = 1
  more_fix_crop: bool = False
  max_fps: float = 0.0

  @classmethod
  def from_config(cls, config) -> 'ClipSpec':
    """Returns the clip spec that `config.data` describes."""
    data = config.data
    return cls(
        num_frames=int(data.num_frames),
        crop_size=int(data.crop_size),
        short_side=int(data.short_side),
        stored_short_side=video.stored_short_side(data),
        random_flip=bool(data.random_flip),
        flip_label_map=normalize_label_map(data.flip_label_map),
        scales=tuple(float(s) for s in data.scales),
        max_distort=int(data.max_distort),
        more_fix_crop=bool(data.more_fix_crop),
        max_fps=float(data.max_fps),
    )


  @property
  def storage_short_side(self) -> int:
    """The short side raw videos' frames are stored at before views are cut from them."""
    return self.stored_short_side or self.short_side


def normalize_label_map(label_map: Any) -> tuple[tuple[int, int], ...]:
  """Returns a flip label map (a dict or pairs `(label, label after flip)`) as sorted int pairs."""
  if not label_map:
    return ()
  items = label_map.items() if hasattr(label_map, 'items') else label_map
  pairs = tuple(sorted((int(a), int(b)) for a, b in items))
  if len({a for a, _ in pairs}) != len(pairs):
    raise errors.bad_field('data.flip_label_map', label_map, 'maps a label twice')
  return pairs


def _check_mode(mode: str) -> None:
  if mode not in MODES:
    raise errors.UserError(f'pipeline mode {mode!r}: must be one of {", ".join(MODES)}')


class TrainClip(grain.transforms.RandomMap):
  """Record -> `{'clips', 'label'}`: TSN sampling, multi-scale crop, resize, flip (+ label swap)."""

  def __init__(self, spec: ClipSpec):
    self._spec = spec
    self._sizes = transforms.crop_sizes(spec.short_side, spec.crop_size, spec.scales,
                                        spec.max_distort)
    self._label_map = dict(spec.flip_label_map)

  def random_map(self, record, rng: np.random.Generator):
    """Builds one augmented training clip; `rng` fixes indices, crop and flip, in that order."""
    spec = self._spec
    frames = record['frames']
    indices = sampling.train_indices(len(frames), spec.num_frames, rng)
    crop = transforms.sample_train_crop(rng, num_sizes=len(self._sizes),
                                        more_fix_crop=spec.more_fix_crop,
                                        random_flip=spec.random_flip)
    images = transforms.to_short_side(transforms.decode(frames, indices), spec.short_side)
    box_fn = functools.partial(transforms.train_box, crop=crop, short_side=spec.short_side,
                               crop_size=spec.crop_size, scales=spec.scales,
                               max_distort=spec.max_distort, more_fix_crop=spec.more_fix_crop)
    clip = transforms.crop_resize(images, transforms.boxes_for(images, box_fn), spec.crop_size,
                                  flip=crop.flip)
    label = int(record['label'])
    if crop.flip:
      label = self._label_map.get(label, label)
    return {'clips': clip, 'label': np.int32(label)}


class EvalView(grain.transforms.Map):
  """Local view number -> one view of a video under `protocol`, or a padding view past the last.

  Holds the source: a view reads its video itself. The records and decoded frames of the last
  video/clip seen by each thread are kept, so the crops of one clip are decoded once.
  """

  def __init__(self, source, spec: ClipSpec, protocol: protocols.Protocol, *,
               global_batch_size: int, shard_index: int, shard_count: int):
    self._source = source
    self._spec = spec
    self._protocol = protocol
    self._views = protocol.views_per_video
    self._num_views = len(source) * self._views
    self._global_batch = global_batch_size
    self._local_batch = per_host_batch_size(global_batch_size, shard_count)
    self._shard_index = shard_index
    self._local = threading.local()

  def __getstate__(self):
    state = self.__dict__.copy()
    del state['_local']
    return state

  def __setstate__(self, state):
    self.__dict__.update(state)
    self._local = threading.local()

  def global_view(self, local_index: int) -> int:
    """Returns the global view number of this host's `local_index`-th row."""
    step, row = divmod(int(local_index), self._local_batch)
    return step * self._global_batch + self._shard_index * self._local_batch + row

  def _clip(self, video: int, clip: int) -> tuple[int, list[np.ndarray]]:
    """Returns the video's label and the decoded frames of its clip `clip` (cached per thread)."""
    cached = getattr(self._local, 'clip', None)
    if cached is not None and cached[0] == (video, clip):
      return cached[1], cached[2]
    record = getattr(self._local, 'record', None)
    if record is None or record[0] != video:
      record = (video, self._source[video])
      self._local.record = record
    frames = record[1]['frames']
    indices = self._protocol.clip_indices(len(frames), self._spec.num_frames)[clip]
    label = int(record[1]['label'])
    images = transforms.to_short_side(transforms.decode(frames, indices), self._spec.short_side)
    self._local.clip = ((video, clip), label, images)
    return label, images

  def map(self, local_index):
    """Builds the view for this host's `local_index`-th row (mask 0 past the last view)."""
    spec = self._spec
    g = self.global_view(local_index)
    if g >= self._num_views:
      return {'clips': np.zeros((spec.num_frames, spec.crop_size, spec.crop_size, 3), np.uint8),
              'label': np.int32(-1), 'mask': np.int32(0), 'video_index': np.int32(-1)}
    video, view = divmod(g, self._views)
    clip, crop = divmod(view, self._protocol.num_crops)
    label, images = self._clip(video, clip)
    box_fn = functools.partial(self._protocol.box, crop=crop, short_side=spec.short_side,
                               crop_size=spec.crop_size)
    clips = transforms.crop_resize(images, transforms.boxes_for(images, box_fn), spec.crop_size)
    return {'clips': clips, 'label': np.int32(label),
            'mask': np.int32(1), 'video_index': np.int32(video)}


def per_host_batch_size(global_batch_size: int, shard_count: int) -> int:
  """Returns the batch each host loads: the global batch split evenly over the hosts."""
  if global_batch_size < 1 or global_batch_size % shard_count:
    raise errors.ConfigError(f'The global batch size {global_batch_size} must be a positive '
                             f'multiple of the number of hosts {shard_count}.')
  return global_batch_size // shard_count


def num_eval_steps(num_videos: int, protocol: protocols.Protocol, global_batch_size: int) -> int:
  """Returns the steps of one evaluation pass: every view once, the last global batch padded."""
  return math.ceil(num_videos * protocol.views_per_video / global_batch_size)


def _shard(shard_index: int | None, shard_count: int | None) -> tuple[int, int]:
  if shard_index is None or shard_count is None:
    import jax  # pylint: disable=g-import-not-at-top  (not needed in grain workers)
    shard_index = jax.process_index() if shard_index is None else shard_index
    shard_count = jax.process_count() if shard_count is None else shard_count
  if not 0 <= shard_index < shard_count:
    raise ValueError(f'shard_index {shard_index} is not in [0, {shard_count}).')
  return shard_index, shard_count


def _to_iter(ds: grain.MapDataset, num_workers: int, num_threads: int) -> grain.IterDataset:
  # A small buffer: elements are whole batches (64 clips at 224 are 77 MB).
  read = grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=max(2, num_threads))
  it = ds.to_iter_dataset(read)
  if num_workers > 0:
    it = it.mp_prefetch(grain.MultiprocessingOptions(num_workers=num_workers))
  return it


def train_dataset(source: Sequence, spec: ClipSpec, *, seed: int, global_batch_size: int,
                  shard_index: int | None = None, shard_count: int | None = None,
                  num_workers: int = 0, num_threads: int = 2,
                  num_epochs: int | None = None) -> grain.IterDataset:
  """Returns this host's training batches: globally shuffled, augmented, deterministic in `seed`.

  `shard_index`/`shard_count` default to this JAX process and the process count.
  """
  shard_index, shard_count = _shard(shard_index, shard_count)
  local_batch = per_host_batch_size(global_batch_size, shard_count)
  if len(source) == 0:
    raise errors.UserError('The training split is empty: prepare a dataset with training videos')
  ds = grain.MapDataset.source(source).shuffle(seed=seed).repeat(num_epochs)
  if num_epochs is not None:
    ds = ds[:len(ds) // global_batch_size * global_batch_size]
  ds = ds.random_map(TrainClip(spec), seed=seed + _AUGMENT_SEED_OFFSET)
  ds = ds[shard_index::shard_count].batch(local_batch, drop_remainder=True)
  return _to_iter(ds, num_workers, num_threads)


def eval_dataset(source: Sequence, spec: ClipSpec, protocol: protocols.Protocol, *,
                 global_batch_size: int,
                 shard_index: int | None = None, shard_count: int | None = None,
                 num_workers: int = 0, num_threads: int = 2) -> grain.IterDataset:
  """Returns this host's val/test batches: every view of every video once, last batch padded.

  Iterating yields exactly `num_eval_steps(len(source), protocol, global_batch_size)` batches
  on every host.
  """
  shard_index, shard_count = _shard(shard_index, shard_count)
  local_batch = per_host_batch_size(global_batch_size, shard_count)
  steps = num_eval_steps(len(source), protocol, global_batch_size)
  view = EvalView(source, spec, protocol, global_batch_size=global_batch_size,
                  shard_index=shard_index, shard_count=shard_count)
  ds = grain.MapDataset.range(steps * local_batch).map(view).batch(local_batch)
  return _to_iter(ds, num_workers, num_threads)


_storage_warned = set()


def check_storage(source, spec: ClipSpec, jpeg_quality: int) -> None:
  """Warns, once per process and dataset, when a prepared source's frames were stored at another
  short side or JPEG quality than `spec` and `jpeg_quality` say (its TFDS metadata).

  Why: views are right either way (they are cut at `spec.short_side` from whatever was stored),
  but predict and visualize store a raw video's frames by the config, and match evaluation pixel
  for pixel only when the config says how the dataset was stored. Sources without metadata (lists
  in the tests) are not checked.
  """
  info = getattr(source, 'dataset_info', None)
  metadata = getattr(info, 'metadata', None) or {}
  if 'short_side' not in metadata:
    return
  stored = (int(metadata['short_side']), int(metadata.get('jpeg_quality', jpeg_quality)))
  wanted = (spec.storage_short_side, int(jpeg_quality))
  key = (getattr(info, 'data_dir', ''), stored, wanted)
  if stored == wanted or key in _storage_warned:
    return
  _storage_warned.add(key)
  logging.warning(
      '%s: the prepared frames were stored at short side %d, JPEG quality %d; the config says %d, '
      '%d (data.stored_short_side or else data.short_side, data.jpeg_quality). Training and '
      'evaluation are unaffected (views are cut at data.short_side=%d), but --mode=predict and '
      'visualize store raw videos by the config and may not match evaluation exactly: pass '
      '--config.data.stored_short_side=%d --config.data.jpeg_quality=%d to them (or set it for '
      'the run).', getattr(info, 'data_dir', 'dataset'), stored[0], stored[1], wanted[0],
      wanted[1], spec.short_side, stored[0], stored[1])


# Cores an accelerator host keeps for the training process itself (device feeding, the loop).
_TRAINER_CORES = 2
# Threads per loading process under 'auto': a worker's decode and resize release the GIL.
_AUTO_THREADS = 2


def loader_size(num_workers: int, num_threads: int, *, accelerator: bool,
                cores: int) -> tuple[int, int]:
  """(worker processes, threads per process) of the loader for `config.data.num_workers` /
  `num_threads`, where -1 / 0 mean auto.

  Auto workers: on a host with accelerators, one process per core but the two the trainer
  needs (at least one): the devices run the step, the host's cores do nothing but decode and
  augment (about 200 clips/s a core, docs/benchmarks.md), so the loader may take them all. On a
  CPU-only host, none: the cores compute the step, and processes would only take them from it.
  Auto threads: 2 a process (decode and resize release the GIL).
  """
  if num_workers < 0:
    num_workers = max(1, cores - _TRAINER_CORES) if accelerator else 0
  return num_workers, num_threads or _AUTO_THREADS


def create_dataset(source: Sequence, config, mode: str, *, shard_index: int | None = None,
                   shard_count: int | None = None, num_workers: int | None = None,
                   num_threads: int | None = None) -> grain.IterDataset:
  """Returns the `mode` pipeline that `config` describes (seed, batch size, data settings).

  Worker and thread counts default to `config.data.num_workers` / `config.data.num_threads`,
  sized by `loader_size` where they say auto.
  """
  _check_mode(mode)
  spec = ClipSpec.from_config(config)
  check_storage(source, spec, int(config.data.jpeg_quality))
  workers, threads = loader_size(
      int(config.data.num_workers if num_workers is None else num_workers),
      int(config.data.num_threads if num_threads is None else num_threads),
      accelerator=jax.default_backend() != 'cpu', cores=os.cpu_count() or 1)
  kwargs = dict(
      global_batch_size=int(config.batch_size), shard_index=shard_index, shard_count=shard_count,
      num_workers=workers, num_threads=threads)
  if mode == 'train':
    return train_dataset(source, spec, seed=int(config.seed), **kwargs)
  return eval_dataset(source, spec, protocols.from_config(config, mode), **kwargs)
