"""Every storage client of the project against the GCS emulator (tests/gcs.py), and the network
guard (tests/netguard/sitecustomize.py) that keeps every test on 127.0.0.1.

Each test gets a fresh bucket (`gcs_bucket`) and tiny data. The clients: etils.epath and gcsfs
(Python, aiohttp), Orbax through tensorstore (C++, curl: TENSORSTORE_GCS_HTTP_URL), array_record
(C++, google-cloud-cpp: CLOUD_STORAGE_EMULATOR_ENDPOINT), tensorboardX (google-cloud-storage:
STORAGE_EMULATOR_HOST). The C++ clients open their sockets below Python's audit hooks, so their
test reads curl's own log of where it connects.
"""

import os
import re
import socket
import struct
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request

from etils import epath
import fsspec
from fsspec import asyn
import numpy as np
import pytest

from tests import jax_subprocess

KIB = 1024


def _fs():
  """The gcsfs filesystem of gs:// paths, as epath and the project get it."""
  return fsspec.core.url_to_fs('gs://bucket')[0]


def _requests(emulator, bucket, agent=''):
  """(method, path, status) of the emulator's requests about `bucket` from a user agent
  containing `agent`."""
  name = bucket[len('gs://'):]
  return [(m, p, s) for m, p, s, a in emulator.requests
          if p and f'/{name}/' in p and agent in (a or '')]


def _http(url, method='GET', **headers):
  """(status, headers, body) of one plain HTTP request (errors included)."""
  request = urllib.request.Request(url, headers=headers, method=method)
  try:
    with urllib.request.urlopen(request, timeout=10) as response:
      return response.status, dict(response.headers), response.read()
  except urllib.error.HTTPError as e:
    return e.code, dict(e.headers), e.read()


# etils.epath


def test_epath_files_and_directories(gcs_bucket, gcs_emulator):
  root = epath.Path(gcs_bucket) / 'data'
  # A bucket has no directories: mkdir is a no-op and a "directory" exists while an object is
  # under its prefix.
  root.mkdir(parents=True, exist_ok=True)
  assert not root.exists()
  (root / 'a.txt').write_text('alpha')
  (root / 'sub' / 'b.json').write_text('{}')
  (root / 'sub' / 'c.json').write_bytes(b'[]')
  assert root.exists() and root.is_dir() and (root / 'sub').is_dir()
  assert (root / 'a.txt').exists() and not (root / 'a.txt').is_dir()
  assert (root / 'a.txt').read_text() == 'alpha'
  assert sorted(p.name for p in root.iterdir()) == ['a.txt', 'sub']
  assert sorted(p.name for p in root.glob('*.txt')) == ['a.txt']
  assert sorted(p.name for p in root.glob('sub/*.json')) == ['b.json', 'c.json']
  stat = (root / 'a.txt').stat()
  assert stat.length == 5 and not stat.is_directory
  assert abs(stat.mtime - time.time()) < 600, stat

  (root / 'a.txt').rename(root / 'z.txt')  # gcsfs: objects.moveTo, one request
  assert not (root / 'a.txt').exists() and (root / 'z.txt').read_text() == 'alpha'
  assert any('/moveTo/' in p and s == 200 for _, p, s in _requests(gcs_emulator, gcs_bucket))
  (root / 'sub').rename(root / 'moved')  # a prefix: every object under it
  assert sorted(p.name for p in (root / 'moved').iterdir()) == ['b.json', 'c.json']
  assert not (root / 'sub').exists()
  with pytest.raises(FileExistsError):
    (root / 'moved' / 'b.json').rename(root / 'z.txt')  # epath refuses to overwrite

  root.rmtree()
  assert not root.exists() and gcs_emulator.object_names(gcs_bucket[5:]) == []


# gcsfs


def test_gcsfs_create_mode_refuses_an_existing_object(gcs_bucket):
  fs = _fs()
  lock = f'{gcs_bucket}/run/train.lock'
  fs.pipe_file(lock, b'owner 1', mode='create')  # ifGenerationMatch=0: only if absent
  with pytest.raises(FileExistsError):
    fs.pipe_file(lock, b'owner 2', mode='create')
  assert fs.cat_file(lock) == b'owner 1'
  # The same precondition on a resumable upload ('xb', several chunks): refused at the start.
  with pytest.raises(FileExistsError):
    with fs.open(lock, 'xb', block_size=256 * KIB) as f:
      f.write(b'x' * (300 * KIB))
  assert fs.cat_file(lock) == b'owner 1'
  fs.pipe_file(lock, b'owner 3')  # overwrite: no precondition
  assert fs.cat_file(lock) == b'owner 3'


def test_gcsfs_byte_ranges(gcs_bucket):
  fs = _fs()
  path = f'{gcs_bucket}/blob'
  data = bytes(range(256)) * 4  # 1000+ bytes, every offset recognisable
  fs.pipe_file(path, data)
  assert fs.cat_file(path, start=10, end=20) == data[10:20]  # Range: bytes=10-19
  assert fs.cat_file(path, start=1000) == data[1000:]  # bytes=1000-
  assert fs.cat_file(path, start=-24) == data[-24:]  # bytes=-24 (a suffix)
  assert fs.cat_file(path, start=1020, end=5000) == data[1020:]  # clipped to the object
  with fs.open(path, 'rb', block_size=64) as f:  # read-ahead blocks: one range each
    f.seek(1000)
    assert f.read(100) == data[1000:]
    assert f.read() == b''
  assert fs.info(path)['size'] == len(data)


def test_gcsfs_put_file_of_one_mib(gcs_bucket, tmp_path):
  fs = _fs()
  local = tmp_path / 'one_mib.bin'
  data = np.random.default_rng(0).bytes(1024 * KIB - 1) + b'\r'  # ends in CR: byte-exact parts
  local.write_bytes(data)
  fs.put_file(str(local), f'{gcs_bucket}/whole')  # one multipart upload
  fs.put_file(str(local), f'{gcs_bucket}/chunked', chunksize=256 * KIB)  # resumable, 4 chunks
  for name in ('whole', 'chunked'):
    assert fs.info(f'{gcs_bucket}/{name}')['size'] == len(data)
    assert fs.cat_file(f'{gcs_bucket}/{name}') == data


def test_gcsfs_write_in_pieces_is_a_resumable_upload(gcs_bucket, gcs_emulator):
  fs = _fs()
  path = f'{gcs_bucket}/pieces.bin'
  data = np.random.default_rng(1).bytes(600 * KIB)
  with fs.open(path, 'wb', block_size=256 * KIB) as f:  # a chunk is sent per full 256 KiB block
    for start in range(0, len(data), 70 * KIB):
      f.write(data[start:start + 70 * KIB])
  assert fs.cat_file(path) == data
  statuses = [s for m, p, s in _requests(gcs_emulator, gcs_bucket) if 'upload_id=' in p]
  assert statuses[:-1] == [308] * (len(statuses) - 1) and statuses[-1] == 200, statuses
  assert len(statuses) >= 3  # at least two 256 KiB chunks, then the rest with the total size


def test_gcsfs_exception_inside_open_wb_commits_what_was_written(gcs_bucket, gcs_emulator):
  # Finding: fsspec's AbstractBufferedFile.__exit__ calls close() whatever the exception, and
  # close() finishes the upload: the object appears with the part written before the exception,
  # for a small file (one upload at close) and for a resumable one (chunks already sent) alike.
  # The project does not rely on `with fs.open(..., 'wb')` for whole-file writes: its bucket
  # writes (input_pipeline/files.py) upload from memory once the block has succeeded.
  fs = _fs()
  small, large = f'{gcs_bucket}/small', f'{gcs_bucket}/large'
  with pytest.raises(RuntimeError, match='boom'):
    with fs.open(small, 'wb') as f:
      f.write(b'partial')
      raise RuntimeError('boom')
  assert fs.cat_file(small) == b'partial'
  with pytest.raises(RuntimeError, match='boom'):
    with fs.open(large, 'wb', block_size=256 * KIB) as f:
      f.write(b'a' * (300 * KIB))  # the first 256 KiB chunk is sent here
      raise RuntimeError('boom')
  assert fs.cat_file(large) == b'a' * (300 * KIB)
  # Only an explicit discard() cancels an upload (DELETE on its session: GCS answers 499).
  f = fs.open(f'{gcs_bucket}/discarded', 'wb', block_size=256 * KIB)
  f.write(b'b' * (300 * KIB))
  f.discard()
  assert not fs.exists(f'{gcs_bucket}/discarded')
  assert ('DELETE', 499) in [(m, s) for m, p, s in _requests(gcs_emulator, gcs_bucket)]
  assert not [u for u, obj in gcs_emulator.storage.resumable.items()
              if obj['bucket'] == gcs_bucket[5:]]


def test_gcsfs_listing_and_deletes(gcs_bucket, gcs_emulator):
  fs = _fs()
  names = ['a/1', 'a/2', 'a/b/3', 'a/b/c/4', 'z']
  for name in names:
    fs.pipe_file(f'{gcs_bucket}/{name}', name.encode())
  bucket = gcs_bucket[len('gs://'):]
  listing = {e['name'][len(bucket) + 1:]: e['type']
             for e in fs.ls(f'{gcs_bucket}/a', detail=True)}
  assert listing == {'a/1': 'file', 'a/2': 'file', 'a/b': 'directory'}  # prefix + delimiter
  assert sorted(p[len(bucket) + 1:] for p in fs.find(gcs_bucket)) == names  # no delimiter
  assert sorted(p[len(bucket) + 1:] for p in fs.glob(f'{gcs_bucket}/a/**/[34]')) == ['a/b/3',
                                                                                      'a/b/c/4']
  # Against an emulator gcsfs deletes one object per request; on storage.googleapis.com it uses
  # the batch endpoint, which the emulator serves too:
  paths = [f'{gcs_bucket}/a/1', f'{gcs_bucket}/a/2']
  deleted = asyn.sync(fs.loop, fs._rm_files, paths)  # pylint: disable=protected-access
  assert sorted(deleted) == paths
  assert any(r[1].startswith('/batch/storage/v1') and r[2] == 200 for r in gcs_emulator.requests)
  fs.invalidate_cache()
  fs.rm(f'{gcs_bucket}/a', recursive=True)
  assert gcs_emulator.object_names(bucket) == ['z']


def test_emulator_http_semantics(gcs_bucket, gcs_emulator):
  # The fixes of tests/gcs.py as a client sees them on the wire.
  fs = _fs()
  fs.pipe_file(f'{gcs_bucket}/o', b'0123456789')
  generation = fs.info(f'{gcs_bucket}/o')['generation']
  base = f'{gcs_emulator.url}/storage/v1/b/{gcs_bucket[5:]}/o/o?alt=media'
  get = _http
  status, headers, body = get(base, Range='bytes=-3')
  assert (status, body, headers['Content-Range']) == (206, b'789', 'bytes 7-9/10')
  assert headers['x-goog-generation'] == str(generation)
  assert get(base, Range='bytes=10-')[0] == 416
  assert get(f'{base}&ifGenerationNotMatch={generation}')[0] == 304
  assert get(f'{base}&ifGenerationMatch=1')[0] == 412
  assert get(f'{base}&generation=1')[0] == 404
  status, headers, body = get(base, method='HEAD')
  assert (status, headers['Content-Length'], body) == (200, '10', b'')


def test_emulator_gaps_are_recorded(gcs_bucket, gcs_emulator):
  # A request the emulator cannot serve is recorded, and `gcs_bucket` fails the test with it at
  # teardown; this test takes it back so as to pass.
  before = len(gcs_emulator.errors)
  assert _http(f'{gcs_emulator.url}/storage/v1/b/{gcs_bucket[5:]}/o/x/unknownVerb',
               method='POST')[0] == 501
  assert gcs_emulator.errors[before:] == [
      f'POST /storage/v1/b/{gcs_bucket[5:]}/o/x/unknownVerb: not implemented by the emulator']
  del gcs_emulator.errors[before:]


# Orbax (tensorstore)


def test_orbax_checkpoint_manager_saves_and_restores(gcs_bucket, gcs_emulator):
  import jax
  import jax.numpy as jnp
  import orbax.checkpoint as ocp

  tree = {'w': jnp.arange(6, dtype=jnp.float32).reshape(2, 3), 'b': jnp.array([1, 2, 3])}
  options = ocp.CheckpointManagerOptions(max_to_keep=1)
  with ocp.CheckpointManager(f'{gcs_bucket}/ckpt', options=options) as manager:
    manager.save(1, args=ocp.args.StandardSave(tree))
    manager.save(2, args=ocp.args.StandardSave(jax.tree.map(lambda x: x * 2, tree)))
    manager.wait_until_finished()
  with ocp.CheckpointManager(f'{gcs_bucket}/ckpt', options=options) as manager:
    assert manager.all_steps() == [2] and manager.latest_step() == 2  # step 1 removed
    restored = manager.restore(2, args=ocp.args.StandardRestore(
        jax.tree.map(np.zeros_like, tree)))
  for key, value in tree.items():
    np.testing.assert_array_equal(np.asarray(restored[key]), np.asarray(value) * 2)
  # The array bytes went through tensorstore's own HTTP client, to the emulator:
  tensorstore = _requests(gcs_emulator, gcs_bucket, agent='tensorstore')
  assert any(m == 'POST' and s == 200 for m, _, s in tensorstore)
  assert any(m == 'GET' and s in (200, 206) for m, _, s in tensorstore)


# array_record (google-cloud-cpp)


def test_array_record_reads_gs_paths(gcs_bucket, gcs_emulator, tmp_path):
  from array_record.python import array_record_data_source
  from array_record.python import array_record_module

  local = str(tmp_path / 'part.array_record')
  writer = array_record_module.ArrayRecordWriter(local, 'group_size:1')
  # Over 1 MiB: the reader starts with a suffix range (bytes=-1048576) for the footer; an emulator
  # answering that with the whole object makes it fail ("Invalid Riegeli/records file").
  records = [np.random.default_rng(i).bytes(200 * KIB) + b'record %d' % i for i in range(7)]
  for record in records:
    writer.write(record)
  writer.close()
  path = f'{gcs_bucket}/records/part.array_record'
  _fs().put_file(local, path)

  reader = array_record_module.ArrayRecordReader(path)  # google-cloud-cpp's GCS client
  assert reader.num_records() == len(records)
  assert reader.read_all() == records
  assert reader.read([5, 1]) == [records[5], records[1]]
  reader.close()
  source = array_record_data_source.ArrayRecordDataSource([path])  # what grain reads through
  assert len(source) == len(records) and source[3] == records[3]
  assert _requests(gcs_emulator, gcs_bucket, agent='gl-cpp')  # its requests reached the emulator


# tensorboardX (google-cloud-storage)


def _tfrecords(data: bytes) -> list[bytes]:
  """The payloads of a TFRecord file (length, crc, payload, crc), checksums not checked."""
  out, i = [], 0
  while i < len(data):
    (length,) = struct.unpack('<Q', data[i:i + 8])
    out.append(data[i + 12:i + 12 + length])
    i += 12 + length + 4
  return out


def test_tensorboardx_writes_event_files_to_the_bucket(gcs_bucket):
  import tensorboardX
  from tensorboardX.proto import event_pb2

  writer = tensorboardX.SummaryWriter(f'{gcs_bucket}/tb')
  writer.add_scalar('loss', 1.5, 1)
  writer.flush()  # uploads the file so far; the next flush replaces it (ifGenerationMatch)
  writer.add_scalar('loss', 0.75, 2)
  writer.close()  # the last upload (tests/gcs.py disarms the one its __del__ makes at exit)
  fs = _fs()
  (event_file,) = fs.glob(f'{gcs_bucket}/tb/events.out.tfevents.*')
  scalars = []
  for payload in _tfrecords(fs.cat_file(event_file)):
    event = event_pb2.Event.FromString(payload)
    scalars += [(event.step, v.tag, v.simple_value) for v in event.summary.value]
  assert scalars == [(1, 'loss', 1.5), (2, 'loss', 0.75)]


# Subprocesses: served by the emulator in this process, C++ clients on 127.0.0.1 only.

CHILD = textwrap.dedent('''
    import sys
    import fsspec
    import tensorstore as ts
    from array_record.python import array_record_module
    bucket = sys.argv[1]
    fs = fsspec.core.url_to_fs(bucket)[0]
    fs.pipe_file(bucket + '/from_child.txt', b'child')
    kv = ts.KvStore.open({'driver': 'gcs', 'bucket': bucket[5:], 'path': 'kv/'}).result()
    kv['key'] = b'value'
    assert kv['key'] == b'value'
    reader = array_record_module.ArrayRecordReader(bucket + '/part.array_record')
    assert reader.read_all() == [b'one', b'two']
    print('guard', sys.modules['sitecustomize'].install())
    print('CHILD_OK')
''')


def test_subprocesses_reach_the_emulator_and_nothing_else(gcs_bucket, gcs_emulator, tmp_path):
  local = str(tmp_path / 'part.array_record')
  from array_record.python import array_record_module
  writer = array_record_module.ArrayRecordWriter(local, 'group_size:1')
  writer.write(b'one')
  writer.write(b'two')
  writer.close()
  _fs().put_file(local, f'{gcs_bucket}/part.array_record')
  # curl's verbose log, from tensorstore and from google-cloud-cpp, names every address connected
  env = jax_subprocess.env(tmp_path / 'jax_cache', TENSORSTORE_CURL_VERBOSE='1',
                           GOOGLE_CLOUD_CPP_ENABLE_CLOG='yes', CLOUD_STORAGE_ENABLE_TRACING='http')
  result = subprocess.run([sys.executable, '-c', CHILD, gcs_bucket], cwd=jax_subprocess.ROOT,
                          env=env, capture_output=True, text=True, timeout=120, check=False)
  assert 'CHILD_OK' in result.stdout and 'guard True' in result.stdout, result.stderr[-3000:]
  assert _fs().cat_file(f'{gcs_bucket}/from_child.txt') == b'child'
  trying = re.findall(r'Trying (\S+?):(\d+)', result.stderr)
  assert 'curl_wrappers' in result.stderr and 'curl(Info)' in result.stderr  # both logs there
  assert trying and set(trying) == {('127.0.0.1', str(gcs_emulator.port))}, trying


# The network guard


def _local_non_loopback_ipv4() -> str | None:
  """An IPv4 address of this machine outside 127/8 (from the kernel's table), or None."""
  try:
    with open('/proc/net/fib_trie', encoding='ascii') as f:
      text = f.read()
  except OSError:
    return None
  for address in re.findall(r'\|-- (\d+\.\d+\.\d+\.\d+)\n\s+/32 host LOCAL', text):
    if not address.startswith('127.'):
      return address
  return None


def test_guard_refuses_outside_addresses_in_process(network_guard):
  sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
  sock.setblocking(False)
  # A real non-blocking connect would raise BlockingIOError (EINPROGRESS) or OSError
  # (ENETUNREACH): the guard's error means connect(2) was never called.
  with pytest.raises(network_guard.error, match=r"10\.255\.255\.1"):
    sock.connect(('10.255.255.1', 80))
  sock.close()
  with pytest.raises(network_guard.error):
    socket.create_connection(('10.255.255.1', 80), timeout=1)
  with pytest.raises(network_guard.error, match='example.com'):
    socket.getaddrinfo('example.com', 443)
  with pytest.raises(network_guard.error):
    urllib.request.urlopen('http://example.com/', timeout=1)  # pylint: disable=consider-using-with
  with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
    with pytest.raises(network_guard.error, match=r'8\.8\.8\.8'):
      udp.sendto(b'x', ('8.8.8.8', 53))
  refused = network_guard.take()
  assert len(refused) == 5, refused
  assert all(f'process {os.getpid()}' in line for line in refused), refused


def test_guard_allows_loopback(gcs_emulator, network_guard):
  for host in ('127.0.0.1', 'localhost'):
    with socket.create_connection((host, gcs_emulator.port), timeout=5):
      pass
  a, b = socket.socketpair()  # unix sockets
  a.close()
  b.close()
  with urllib.request.urlopen(f'{gcs_emulator.url}/', timeout=5) as response:  # health check
    assert response.status == 200
  assert network_guard.take() == []


def test_guard_sends_no_packet(network_guard):
  address = _local_non_loopback_ipv4()
  if address is None:
    pytest.skip('no local address outside 127/8 to listen on')
  with socket.socket() as listener:
    listener.bind(('0.0.0.0', 0))
    listener.listen(1)
    listener.settimeout(0.5)
    port = listener.getsockname()[1]
    with pytest.raises(network_guard.error):
      socket.create_connection((address, port), timeout=1)
    with pytest.raises(socket.timeout):
      listener.accept()  # nothing came: no SYN was sent
    with socket.create_connection(('127.0.0.1', port), timeout=1):  # the listener does listen
      listener.accept()[0].close()
  assert len(network_guard.take()) == 1


SWALLOWING_CHILD = textwrap.dedent('''
    import socket
    try:
      socket.create_connection(('10.255.255.1', 80), timeout=1)
    except Exception as e:  # a library hiding the refusal
      print(type(e).__name__)
''')


def test_guard_refuses_in_subprocesses_and_records_swallowed_refusals(network_guard):
  # PYTHONPATH set by the caller, as some tests do: the guard is still put on the child's path.
  env = dict(os.environ, PYTHONPATH=jax_subprocess.ROOT)
  result = subprocess.run([sys.executable, '-c', SWALLOWING_CHILD], env=env,
                          capture_output=True, text=True, timeout=60, check=False)
  assert result.stdout.strip() == 'NetworkGuardError', (result.stdout, result.stderr)
  assert 'NETWORK GUARD' in result.stderr and '10.255.255.1' in result.stderr
  (refused,) = network_guard.take()
  assert "'10.255.255.1'" in refused and f'process {os.getpid()}' not in refused


SWALLOWING_TEST = textwrap.dedent('''
    import socket

    def test_swallows():
      try:
        socket.create_connection(('10.255.255.1', 80), timeout=1)
      except Exception:  # a library hiding the refusal
        pass
''')


def test_guard_fails_a_test_that_swallows_a_refusal(tmp_path):
  (tmp_path / 'test_swallows.py').write_text(SWALLOWING_TEST)
  netguard = os.path.join(jax_subprocess.ROOT, 'tests', 'netguard')
  env = dict(os.environ, PYTHONPATH=os.pathsep.join([jax_subprocess.ROOT, netguard]))
  result = subprocess.run(
      [sys.executable, '-m', 'pytest', '-q', '-p', 'tests.conftest', '-p', 'no:cacheprovider',
       'test_swallows.py'], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
      check=False)
  assert result.returncode == 1, result.stdout[-3000:]
  assert 'the network guard refused connections outside 127.0.0.1' in result.stdout
  assert '10.255.255.1' in result.stdout and '1 passed, 1 error' in result.stdout
