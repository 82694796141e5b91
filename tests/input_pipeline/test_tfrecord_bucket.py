"""DMVR TFRecord shards in a bucket (the GCS emulator on 127.0.0.1): trained from in place with
`data.format='tfrecord'`, and converted from as a raw input, with the same records as a local
copy gives."""

import os

import fsspec

from input_pipeline import datasets
from input_pipeline import files
from input_pipeline import tfrecord
from input_pipeline.prepare import converter
from tests import video_fixtures as vf


def _dmvr_shards(tmp_path):
  """The sthv1 fixture written as DMVR shards (with classes.txt) in a local folder."""
  expected = vf.make_sthv1(str(tmp_path / 'raw'))
  local = tmp_path / 'dmvr'
  vf.make_tfrecord_from_frames(str(local), str(tmp_path / 'raw' / '20bn-something-something-v1'),
                               expected)
  return expected, local


def _upload(local, url):
  fs = fsspec.filesystem('gs')
  for name in sorted(os.listdir(local)):
    fs.put_file(os.path.join(local, name), f'{url}/{name}')


def _records(source):
  return [source[i] for i in range(len(source))]


def test_shards_in_a_bucket_read_as_a_local_copy_does(gcs_bucket, tmp_path):
  expected, local = _dmvr_shards(tmp_path)
  url = f'{gcs_bucket}/dmvr/sthv1'
  _upload(local, url)
  in_bucket = vf.make_config('sthv1', '', url, num_classes=3, format='tfrecord')
  on_disk = vf.make_config('sthv1', '', str(local), num_classes=3, format='tfrecord')
  for split in expected.splits:
    remote = datasets.open_source(in_bucket, split)
    assert all(p.startswith('gs://') for p in remote.paths)
    assert _records(remote) == _records(datasets.open_source(on_disk, split))
  assert datasets.class_names(in_bucket) == expected.classes
  # Each shard's index was cached beside it, in the bucket, and is what a second open reads.
  shards = tfrecord.find_shards(url)['train']
  for shard in shards:
    index = tfrecord.index_path(shard)
    assert index.is_file() and files.read_json(index)['shard'] == shard
  assert _records(datasets.open_source(in_bucket, 'train')) == _records(
      datasets.open_source(on_disk, 'train'))


def test_a_raw_dir_of_shards_in_a_bucket_converts(gcs_bucket, tmp_path):
  expected, local = _dmvr_shards(tmp_path)
  url = f'{gcs_bucket}/raw/sthv1'
  _upload(local, url)
  from_bucket = vf.make_config('sthv1', url, tmp_path / 'out_bucket', num_classes=3,
                               raw_format='tfrecord')
  from_disk = vf.make_config('sthv1', local, tmp_path / 'out_disk', num_classes=3,
                             raw_format='tfrecord')
  assert converter.prepare(from_bucket)['converted'] == converter.prepare(from_disk)['converted']
  for split in expected.splits:
    assert vf.read_split(from_bucket, split) == vf.read_split(from_disk, split)
