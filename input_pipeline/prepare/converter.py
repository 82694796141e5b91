"""`launch.py --mode=prepare`: official download -> TFDS ArrayRecord dataset; parallel, resumable.

  python launch.py --mode=prepare --config=configs/sthv2.py \
      --config.data.raw_dir=/data/raw/sthv2 --config.data.data_dir=/data/tfds

writes `<data_dir>/stm_sthv2/1.0.0/` (`stm_ucf101/split1/1.0.0/` for the split datasets), a normal
TFDS dataset of video records (id, label, num_frames, fps, first_frame) that reads back without
TensorFlow, with each shard's frames as their own records in a frame file beside it
(input_pipeline/frames.py; `datasets.open_source` reads both):

  tfds.data_source('stm_sthv2', data_dir='/data/tfds', split='train')[i]    # a video's record
  tfds.builder_from_directory('/data/tfds/stm_sthv2/1.0.0').as_data_source('validation')

The builder is a `tfds.core.GeneratorBasedBuilder` (file_format='array_record'), but the shards are
written here rather than by `download_and_prepare`, which runs in one process and restarts from
scratch after an interruption. Here:
  * each split is cut into shards of `config.data.videos_per_shard` videos, the unit of work;
    `config.data.prepare_workers` processes (0: one per core) convert shards in parallel;
  * a shard is written under a temporary name in `.prepare/tmp/` (a local temporary folder when
    data_dir is a bucket), moved into place (a synced rename, or one upload), then marked done by
    a sidecar in `.prepare/done/`; a re-run with the same annotations and settings (checked by a
    fingerprint) skips the finished shards;
  * `dataset_info.json`, which is what makes TFDS see the dataset, is written last, once every shard
    is in place, so no reader can take a partial dataset;
  * every video that cannot be used is skipped and listed in `quarantine.tsv` (split, id, file,
    reason), including one that kills its worker process (a decoder crash; see workers.py);
  * `prepare_summary.json` records the counts, frames per video, bytes on disk, seconds, settings;
  * a lock file in data_dir keeps two runs from writing the same dataset (input_pipeline/locks.py;
    it works in a bucket too, so a second host running the same prepare is refused, naming the
    host that prepares).
data_dir may be a bucket (`gs://...`): every file goes there through `files` (etils.epath).
`prepare_workers=1` converts in this process (simplest to debug and profile, but a decoder crash then
ends the run: rerunning resumes, and fails on the same video again).
"""

import dataclasses
import hashlib
import json
import math
import os
import statistics
import tempfile
import time
from typing import Any, Callable

from etils import epath
import tensorflow_datasets as tfds
import tqdm

from input_pipeline import datasets
from input_pipeline import errors
from input_pipeline import files
from input_pipeline import frames
from input_pipeline import locks
from input_pipeline import video
from input_pipeline.prepare import layouts
from input_pipeline.prepare import records
from input_pipeline.prepare import workers
from input_pipeline.prepare.layouts import common

VERSION = datasets.VERSION
SUMMARY_FILE = datasets.SUMMARY_FILE
QUARANTINE_FILE = 'quarantine.tsv'
_WORK_DIR = '.prepare'
_FORMAT = 1  # bump when the record content changes for the same settings


class VideoDatasetBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """TFDS builder of a prepared video dataset (one record per video; see records.features).

  Not registered under a name: `make_builder` makes a subclass per dataset. Readers do not need this
  class: TFDS reads the video records from their files (`tfds.data_source`,
  `tfds.builder_from_directory`); the frames, in the frame files beside them, are read by
  `input_pipeline/frames.py`. `download_and_prepare` is refused: TFDS's generation cannot write
  the frame files; `prepare` writes both.
  """
  VERSION = tfds.core.Version(VERSION)
  RELEASE_NOTES = {str(VERSION): 'JPEG frames at config.data.short_side, ArrayRecord shards '
                                  '(frames as their own records since layout frame_records).'}

  def __init__(self, *, class_names, settings, layout=None, **kwargs):
    self._class_names = list(class_names)
    self._settings = dict(settings)
    self._layout = layout
    super().__init__(**kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=(f'{self._settings.get("dataset")} videos as JPEG frames (short side '
                     f'{self._settings.get("short_side")}), prepared by stm-jax.'),
        features=records.features(self._class_names),
        metadata=tfds.core.MetadataDict(self._settings),
        supervised_keys=None,
    )

  def _split_generators(self, dl_manager):
    del dl_manager
    raise errors.UserError(
        'download_and_prepare cannot write this dataset: its frames are stored as their own '
        'records beside the TFDS shards (input_pipeline/frames.py), which only launch.py '
        '--mode=prepare writes; run that instead')

  def _generate_examples(self, split, entries):
    raise NotImplementedError('see _split_generators')


def make_builder(config, class_names, settings, layout=None) -> VideoDatasetBuilder:
  """Returns the builder of config's dataset (named 'stm_<dataset>', split config if any)."""
  name = datasets.dataset_name(config)
  base, _, config_name = name.partition('/')
  attrs = {'name': base}
  if config_name:
    attrs['BUILDER_CONFIGS'] = [tfds.core.BuilderConfig(name=f'split{k}') for k in (1, 2, 3)]
  cls = type(''.join(p.title() for p in base.split('_')), (VideoDatasetBuilder,), attrs,
             skip_registration=True)
  return cls(class_names=class_names, settings=settings, layout=layout,
             data_dir=os.fspath(datasets.data_dir(config)), config=config_name or None,
             file_format='array_record')


def output_format(config) -> str:
  """The format prepare writes: `data.output_format`, else `data.format`."""
  return config.data.output_format or config.data.format


def _settings(config) -> dict:
  data = config.data
  settings = {
      'dataset': data.dataset,
      'raw_format': data.raw_format,
      'short_side': video.stored_short_side(data),
      'jpeg_quality': int(data.jpeg_quality),
      'videos_per_shard': int(data.videos_per_shard),
      'format': _FORMAT,
  }
  if data.dataset in datasets.SPLIT_DATASETS:
    settings['split'] = int(data.split)
  if output_format(config) != 'array_record':  # (Absent for ArrayRecord: older fingerprints hold.)
    settings['output_format'] = output_format(config)
  else:  # Frames as their own records (input_pipeline/frames.py); older datasets lack the key.
    settings['layout'] = frames.LAYOUT
  max_fps = float(data.max_fps)
  if max_fps < 0:
    raise errors.bad_field('data.max_fps', data.max_fps,
                           'must be 0 (store every frame) or the most frames a second to store')
  if max_fps:  # (Absent when off: fingerprints of datasets prepared before the field hold.)
    settings['max_fps'] = max_fps
  return settings


def _task_template(settings, num_classes, fps) -> records.ShardTask:
  return records.ShardTask(split='', index=0, num_shards=1, entries=[], path='', tmp_dir='',
                           done_path='', short_side=settings['short_side'],
                           quality=settings['jpeg_quality'], num_classes=num_classes,
                           default_fps=fps,
                           output_format=settings.get('output_format', 'array_record'),
                           max_fps=settings.get('max_fps', 0.0))


def _fingerprint(settings, layout) -> str:
  h = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
  for split, entries in sorted(layout.splits.items()):
    h.update(split.encode())
    for e in entries:
      h.update(json.dumps([e.video_id, e.label, e.kind, e.path, e.offset]).encode())
  return h.hexdigest()


def _local_tmp_dir(ds_dir) -> str:
  """The local folder shards are written in before they are moved into `ds_dir`: inside it
  when it is local (a rename then), else a per-dataset temporary folder of this machine."""
  if not files.is_remote(ds_dir):
    return os.fspath(ds_dir / _WORK_DIR / 'tmp')
  key = hashlib.sha256(os.fspath(ds_dir).encode()).hexdigest()[:16]
  return os.path.join(tempfile.gettempdir(), f'stm_prepare_{key}')


def _plan(config, layout, settings, ds_dir, num_classes) -> list[records.ShardTask]:
  """Cuts every split into shards of videos_per_shard videos (TFDS shard file names)."""
  builder_name = datasets.dataset_name(config).partition('/')[0]
  per_shard = max(1, settings['videos_per_shard'])
  tasks = []
  for split, entries in layout.splits.items():
    if not entries:
      continue
    num_shards = math.ceil(len(entries) / per_shard)
    for i in range(num_shards):
      extension = settings.get('output_format', 'array_record')
      file_name = f'{builder_name}-{split}.{extension}-{i:05d}-of-{num_shards:05d}'
      task = _task_template(settings, num_classes, layout.fps)
      tasks.append(dataclasses.replace(
          task, split=split, index=i, num_shards=num_shards,
          entries=entries[i * per_shard:(i + 1) * per_shard], path=os.fspath(ds_dir / file_name),
          tmp_dir=_local_tmp_dir(ds_dir),
          done_path=os.fspath(ds_dir / _WORK_DIR / 'done' / f'{split}-{i:05d}.json')))
  return tasks


def _run(tasks, num_workers, bar, work_dir, inline) -> None:
  """Runs the shard tasks: in this process if `inline`, else in a spawn pool (workers.run)."""
  if inline:
    for task in tasks:
      records.write_shard(task, progress=lambda i, done: done and bar.update(1))
    return
  path = work_dir / 'poisoned.json'
  poisoned = {}
  if path.exists():
    poisoned = {(s, v): r for s, v, r in files.read_json(path)}

  def save(p):
    files.write_json(path, [[s, v, r] for (s, v), r in sorted(p.items())])

  workers.run(tasks, num_workers, lambda: bar.update(1), poisoned, save)


def _check_classes(config, layout) -> None:
  want = int(config.data.num_classes)
  if layout.class_names is not None and want > 0 and len(layout.class_names) != want:
    raise common.LayoutError(
        f'{config.data.dataset}: the annotations in {layout.used[0]} give '
        f'{len(layout.class_names)} classes but config.data.num_classes={want}: pass '
        f'--config.data.num_classes={len(layout.class_names)} if that is the dataset you mean')


def _prepare_dir(ds_dir, fingerprint, overwrite, fmt) -> dict | None:
  """Readies the dataset folder; returns the stored summary if this exact dataset is there.

  Complete (in format `fmt`) means its last file is there (`datasets.COMPLETE_FILE`); a summary
  without a plan is a complete dataset of the other format."""
  marker = ds_dir / datasets.COMPLETE_FILE[fmt]
  summary_path = ds_dir / SUMMARY_FILE
  work = ds_dir / _WORK_DIR
  plan_path = work / 'plan.json'
  if marker.exists() or (summary_path.exists() and not plan_path.exists()):
    summary = files.read_json(summary_path) if summary_path.exists() else {}
    if summary.get('fingerprint') == fingerprint and marker.exists() and not overwrite:
      return summary
    if not overwrite:
      raise errors.ExistsError(
          f'{ds_dir} already holds a prepared dataset made from other annotations or settings; '
          'pass --config.data.overwrite=True to replace it, or choose another data_dir')
    ds_dir.rmtree()
  elif plan_path.exists():
    plan = files.read_json(plan_path)
    if plan.get('fingerprint') != fingerprint:
      if not overwrite:
        raise errors.ExistsError(
            f'{ds_dir} holds an unfinished conversion of other annotations or settings '
            f'({plan.get("settings")}); pass --config.data.overwrite=True to start over')
      ds_dir.rmtree()
  elif overwrite and ds_dir.exists():
    ds_dir.rmtree()
  tmp = epath.Path(_local_tmp_dir(ds_dir))
  if tmp.exists():
    tmp.rmtree()  # leftovers of a killed run
  tmp.mkdir(parents=True)
  (work / 'done').mkdir(parents=True, exist_ok=True)
  return None


def _class_names(layout, sidecars, num_classes) -> list[str]:
  """Class names: the layout's, else (TFRecord) the names seen in the records, else the indices."""
  if layout.class_names is not None:
    return layout.class_names
  seen = {}
  for s in sidecars:
    seen.update({int(k): v for k, v in s['label_names'].items()})
  max_label = max([r[1] for s in sidecars for r in s['records']] + list(seen) + [-1])
  count = max(num_classes, max_label + 1, 1)
  return [seen.get(i, str(i)) for i in range(count)]


def _summary(config, ds_dir, layout, sidecars, settings, seconds, resumed, written) -> dict:
  splits = {}
  for split in layout.splits:
    mine = sorted((s for s in sidecars if s['split'] == split), key=lambda s: s['index'])
    if not mine:
      continue
    frames = [r[2] for s in mine for r in s['records']]
    splits[split] = {
        'converted': len(frames),
        'skipped': sum(len(s['quarantine']) for s in mine),
        'shards': len(mine),
        'frames_per_video': ({'mean': round(statistics.fmean(frames), 2), 'min': min(frames),
                              'max': max(frames)} if frames else None),
        'bytes': sum(s['bytes'] for s in mine),
    }
  total_bytes = sum(p.stat().length for p in ds_dir.iterdir() if p.is_file())
  return {
      'dataset': datasets.dataset_name(config),
      'dir': os.fspath(ds_dir),
      'settings': settings,
      'splits': splits,
      'converted': sum(s['converted'] for s in splits.values()),
      'skipped': sum(s['skipped'] for s in splits.values()),
      'bytes_on_disk': total_bytes,
      'seconds': round(seconds, 2),
      'shards_resumed': resumed,
      'shards_written': written,
      'layout': {'used': layout.used, 'not_found': layout.notes},
  }


def _write_quarantine(path, sidecars) -> int:
  lines = [q for s in sorted(sidecars, key=lambda s: (s['split'], s['index']))
           for q in s['quarantine']]
  with files.atomic_write(path) as f:
    f.write('split\tid\tfile\treason\n')
    for q in lines:
      f.write('\t'.join(str(q[k]).replace('\t', ' ') for k in ('split', 'id', 'file', 'reason')))
      f.write('\n')
  return len(lines)


def _stage_info(config, layout, sidecars, settings, fingerprint, staging) -> list[str]:
  """Writes the TFDS metadata files into the local folder `staging`; returns the class names."""
  class_names = _class_names(layout, sidecars, int(config.data.num_classes))
  builder = make_builder(config, class_names, dict(settings, fingerprint=fingerprint))
  split_infos = []
  for split in layout.splits:
    mine = sorted((s for s in sidecars if s['split'] == split), key=lambda s: s['index'])
    if mine:
      template = builder._get_filename_template(split)  # pylint: disable=protected-access
      split_infos.append(tfds.core.SplitInfo(
          name=split, shard_lengths=[len(s['records']) for s in mine],
          num_bytes=sum(s['bytes'] for s in mine), filename_template=template))
  builder.info.set_splits(tfds.core.SplitDict(split_infos))
  builder.info.write_to_directory(staging)
  return class_names


def _lock(config) -> locks.FileLock:
  """The lock of one dataset folder, so that two runs (or hosts) never write the same shards."""
  name = datasets.dataset_name(config)
  return locks.FileLock(datasets.data_dir(config) / f'.{name.replace("/", "_")}.prepare.lock',
                        f'another prepare of {name} is running',
                        'wait for it to finish or stop it (on a pod, prepare runs on one host)')


def _alone(ok: bool) -> bool:
  return ok


@dataclasses.dataclass(frozen=True)
class Hosts:
  """The processes that prepare one dataset together (on a pod every host runs the same command):
  this one's index, their count, and `agree(ok)`, a barrier of all of them that returns whether
  `ok` holds on every one (launch.py passes jax.distributed's). One host by default."""
  index: int = 0
  count: int = 1
  agree: Callable[[bool], bool] = _alone


def prepare(config, hosts: Hosts = Hosts()) -> dict:
  """Converts config.data.raw_dir into the TFDS dataset at datasets.dataset_dir(config); returns the summary.

  Resumes an interrupted conversion of the same annotations and settings; returns the stored
  summary if the dataset is already complete. Raises LayoutError / AnnotationError for missing or
  wrong annotations (naming file and line), FileExistsError if data_dir holds a different
  conversion (set config.data.overwrite), RuntimeError if another run holds the dataset's lock.

  With several `hosts`, host 0 takes the lock and readies the folder, the shards still to do are
  dealt out between the hosts (shard i to host i mod count), and host 0 writes the metadata once
  every host is done.
  """
  start = time.time()
  layout = layouts.read(config)
  print(f'{config.data.dataset}: read layout from {config.data.raw_dir}\n'
        + common.summarize(layout))
  _check_classes(config, layout)
  settings = _settings(config)
  fingerprint = _fingerprint(settings, layout)
  lock = _lock(config)
  try:
    return _prepare_shared(config, layout, settings, fingerprint, start, hosts, lock)
  finally:
    lock.release()


def _on_every_host(hosts: Hosts, step: Callable[[], Any], what: str) -> Any:
  """Runs `step` here; raises on every host if it failed on any (the failing host its own error)."""
  error, result = None, None
  try:
    result = step()
  except Exception as e:  # pylint: disable=broad-except
    error = e
  if not hosts.agree(error is None):
    if error is not None:
      raise error
    raise errors.UserError(f'prepare stopped: another host failed while {what} (its own output '
                           'says why)')
  return result


def _prepare_shared(config, layout, settings, fingerprint, start, hosts, lock) -> dict:
  ds_dir = datasets.dataset_dir(config)
  work = ds_dir / _WORK_DIR

  def ready():
    if hosts.index != 0:
      return None
    lock.acquire()
    done = _prepare_dir(ds_dir, fingerprint, bool(config.data.overwrite), output_format(config))
    if done is None:
      files.write_json(work / 'plan.json', {'fingerprint': fingerprint, 'settings': settings})
    else:
      _remove_work(ds_dir)  # left if a run stopped right after finishing
    return done

  done = _on_every_host(hosts, ready, 'readying the dataset folder')
  files.forget_listings(ds_dir)  # Host 0 wrote there.
  if done is not None or not (work / 'plan.json').exists():
    print(f'{datasets.dataset_name(config)} is already prepared in {ds_dir} (same annotations and '
          'settings); nothing to do. Pass --config.data.overwrite=True to redo it.')
    return done if done is not None else files.read_json(ds_dir / SUMMARY_FILE)
  num_classes = len(layout.class_names) if layout.class_names else int(config.data.num_classes)
  tasks = _plan(config, layout, settings, ds_dir, num_classes)
  if not tasks:
    raise common.LayoutError(f'{config.data.dataset}: the annotations list no video')
  done_names = {p.name for p in (work / 'done').iterdir()} if (work / 'done').exists() else set()
  pending = [t for t in tasks if files.resolve(t.done_path).name not in done_names]
  resumed = len(tasks) - len(pending)
  if resumed and hosts.index == 0:
    print(f'resuming: {resumed} of {len(tasks)} shards were finished by an earlier run')
  # Dealt by place in the plan, which every host computes alike (what is pending is not: another
  # host may already have finished one of its shards).
  mine = [t for i, t in enumerate(tasks) if i % hosts.count == hosts.index
          and files.resolve(t.done_path).name not in done_names]
  _on_every_host(hosts, lambda: _convert(config, tasks, mine, work, hosts), 'converting shards')
  files.forget_listings(ds_dir)  # The other hosts wrote their shards and sidecars there.
  if hosts.index != 0:
    _on_every_host(hosts, lambda: None, 'writing the metadata')
    files.forget_listings(ds_dir)
    return files.read_json(ds_dir / SUMMARY_FILE)
  summary = _on_every_host(
      hosts, lambda: _finish(config, ds_dir, layout, tasks, settings, fingerprint, start, resumed,
                             len(pending)), 'writing the metadata')
  return summary


def _convert(config, tasks, mine, work, hosts) -> None:
  """Converts this host's pending shards `mine` with a progress bar."""
  cores = os.cpu_count() or 1
  requested = int(config.data.prepare_workers) or cores
  num_workers = min(requested, max(1, len(mine)))
  for t in mine:
    t.decode_threads = max(1, cores // num_workers)
  total = sum(len(t.entries) for t in (tasks if hosts.count == 1 else mine))
  on_host = f', host {hosts.index} of {hosts.count}' if hosts.count > 1 else ''
  with tqdm.tqdm(total=total, initial=total - sum(len(t.entries) for t in mine), unit='video',
                 desc=f'prepare {datasets.dataset_name(config)} ({num_workers} workers{on_host})',
                 mininterval=1.0, smoothing=0.05) as bar:
    _run(mine, num_workers, bar, work, inline=requested == 1)


def _finish(config, ds_dir, layout, tasks, settings, fingerprint, start, resumed, written) -> dict:
  """Every shard is in place: the metadata, quarantine and summary (dataset_info.json last)."""
  sidecars = [files.read_json(t.done_path) for t in tasks]
  if settings.get('output_format') == 'tfrecord':
    return _finish_tfrecord(config, ds_dir, layout, sidecars, settings, fingerprint, start,
                            resumed, written)
  with tempfile.TemporaryDirectory(prefix='stm_prepare_info_') as staging:
    class_names = _stage_info(config, layout, sidecars, settings, fingerprint, staging)
    skipped = _write_quarantine(ds_dir / QUARANTINE_FILE, sidecars)
    for n in sorted(os.listdir(staging)):
      if n != 'dataset_info.json':
        files.put_file(os.path.join(staging, n), ds_dir / n)
    summary = _summary(config, ds_dir, layout, sidecars, settings, time.time() - start, resumed,
                       written)
    summary['bytes_on_disk'] += os.path.getsize(os.path.join(staging, 'dataset_info.json'))
    summary.update(fingerprint=fingerprint, num_classes=len(class_names),
                   quarantine=os.fspath(ds_dir / QUARANTINE_FILE) if skipped else None)
    files.write_json(ds_dir / SUMMARY_FILE, summary)
    files.put_file(os.path.join(staging, 'dataset_info.json'), ds_dir / 'dataset_info.json')
  _remove_work(ds_dir)
  return summary


def _finish_tfrecord(config, ds_dir, layout, sidecars, settings, fingerprint, start, resumed,
                     written) -> dict:
  """Completes a TFRecord dataset: class names (`classes.txt`), quarantine, and the summary,
  written last (it is what marks the folder complete; TFRecord shards need no dataset_info)."""
  class_names = _class_names(layout, sidecars, int(config.data.num_classes))
  with files.atomic_write(ds_dir / datasets.CLASSES_FILE, encoding='utf-8') as f:
    f.writelines(f'{name}\n' for name in class_names)
  skipped = _write_quarantine(ds_dir / QUARANTINE_FILE, sidecars)
  summary = _summary(config, ds_dir, layout, sidecars, settings, time.time() - start, resumed,
                     written)
  summary.update(fingerprint=fingerprint, num_classes=len(class_names), format='tfrecord',
                 quarantine=os.fspath(ds_dir / QUARANTINE_FILE) if skipped else None)
  files.write_json(ds_dir / SUMMARY_FILE, summary)
  _remove_work(ds_dir)
  return summary


def _remove_work(ds_dir) -> None:
  """Removes the work folder (plan, sidecars) and the local temporary folder of `ds_dir`."""
  for folder in (ds_dir / _WORK_DIR, epath.Path(_local_tmp_dir(ds_dir))):
    if folder.exists():
      folder.rmtree()


def format_summary(summary: dict) -> str:
  """The summary as a short markdown table plus the quarantine pointer, for printing."""
  lines = [f'{summary["dataset"]} in {summary["dir"]}: {summary["converted"]} videos converted, '
           f'{summary["skipped"]} skipped, {summary["bytes_on_disk"] / 2**20:.1f} MiB, '
           f'{summary["seconds"]:.1f} s',
           '| split | converted | skipped | frames/video mean | min | max | MiB |',
           '|---|---:|---:|---:|---:|---:|---:|']
  for split, s in summary['splits'].items():
    f = s['frames_per_video'] or {'mean': 0, 'min': 0, 'max': 0}
    lines.append(f'| {split} | {s["converted"]} | {s["skipped"]} | {f["mean"]} | {f["min"]} | '
                 f'{f["max"]} | {s["bytes"] / 2**20:.2f} |')
  if summary.get('quarantine'):
    lines.append(f'skipped videos and why: {summary["quarantine"]}')
  return '\n'.join(lines)


def main(config, hosts: Hosts = Hosts()) -> dict:
  """Entry point of `launch.py --mode=prepare`: prepares the dataset (on every one of `hosts`)
  and prints the summary."""
  summary = prepare(config, hosts)
  print(format_summary(summary))
  return summary
