"""The test session's world: buckets are a GCS emulator on 127.0.0.1, and nothing else is reachable.

This module runs before any test module imports google-auth, gcsfs, tensorstore or jax, so the
environment it sets is the one those clients read (several read it once, at import), and every
subprocess a test starts inherits it (`env=dict(os.environ, ...)`, `tests/jax_subprocess.env()`):

  * STORAGE_EMULATOR_HOST=http://127.0.0.1:<port> (google-cloud-storage wants the scheme; gcsfs
    takes it with or without), CLOUD_STORAGE_EMULATOR_ENDPOINT (the same URL: google-cloud-cpp,
    array_record's GCS reader) and TENSORSTORE_GCS_HTTP_URL (the same URL: tensorstore, under
    Orbax) with GOOGLE_AUTH_TOKEN_FOR_TESTING (a fixed bearer token: tensorstore asks no
    credentials service) name the emulator, which `gcs_emulator` starts in this process;
  * FSSPEC_GCS_TOKEN=anon (gcsfs: no credentials lookup), GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT=false
    (gcsfs' extended filesystem asks storage.googleapis.com over gRPC whether a bucket is
    zonal), NO_GCE_CHECK=true (google-auth and gcsfs skip the metadata-server probe), the
    metadata server itself (GCE_METADATA_HOST, _IP, _ROOT, host:port without scheme) on a closed
    port of 127.0.0.1, no GOOGLE_APPLICATION_CREDENTIALS, CLOUDSDK_CONFIG on an empty folder (no
    developer's gcloud credentials), and NO_PROXY for 127.0.0.1;
  * the network guard (tests/netguard/sitecustomize.py): installed here, and in every Python
    subprocess through PYTHONPATH; a connection or name lookup outside loopback raises there, and
    the `network_guard` fixture (autouse) fails the test that caused it, whatever the library
    did with the exception.

The emulator runs from the start of the session to its end, so that a gs:// path used without a
bucket fails at once (404) rather than after gcsfs' retries of a refused connection.
Fixtures: `gcs_emulator` (session: the `tests.gcs.Emulator`), `gcs_bucket` (a fresh bucket per test:
its `gs://name` URL; deleted afterwards; the test fails if the emulator met a request it cannot
serve), `network_guard` (the refusals of the current test, for the tests that provoke them).
"""

import os
import re
import shutil
import socket
import sys
import tempfile


def _free_port() -> int:
  """A TCP port on 127.0.0.1 that nothing listens on right now."""
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


EMULATOR_PORT = _free_port()
EMULATOR_URL = f'http://127.0.0.1:{EMULATOR_PORT}'
CLOSED_ADDRESS = f'127.0.0.1:{_free_port()}'  # nothing listens: a metadata lookup fails at once
NETGUARD_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'netguard')
_SCRATCH = tempfile.mkdtemp(prefix='stm-tests-')
NETGUARD_LOG = os.path.join(_SCRATCH, 'netguard.log')

os.environ.pop('GOOGLE_APPLICATION_CREDENTIALS', None)
os.environ.update(
    STORAGE_EMULATOR_HOST=EMULATOR_URL,
    CLOUD_STORAGE_EMULATOR_ENDPOINT=EMULATOR_URL,
    TENSORSTORE_GCS_HTTP_URL=EMULATOR_URL,
    GOOGLE_AUTH_TOKEN_FOR_TESTING='stm-jax-tests',
    FSSPEC_GCS_TOKEN='anon',
    GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT='false',
    NO_GCE_CHECK='true',
    GCE_METADATA_HOST=CLOSED_ADDRESS,
    GCE_METADATA_IP=CLOSED_ADDRESS,
    GCE_METADATA_ROOT=CLOSED_ADDRESS,
    CLOUDSDK_CONFIG=os.path.join(_SCRATCH, 'no-gcloud-config'),
    NO_PROXY='127.0.0.1,localhost,::1',
    no_proxy='127.0.0.1,localhost,::1',
    STM_NETGUARD_LOG=NETGUARD_LOG,
)
# The tests run tiny models, whose cost is XLA's compilation rather than their run time: LLVM's
# cheapest optimisation level compiles them about 1.8x faster (tests/stm_jax/models/
# test_streaming.py and test_resnet.py: 335 s against 188 s), with the same operations, so every
# comparison holds. The subprocesses inherit it (tests/jax_subprocess.py sets the same); a
# developer's own XLA_FLAGS are kept.
os.environ.setdefault('XLA_FLAGS', '--xla_backend_optimization_level=0')
os.environ['PYTHONPATH'] = os.pathsep.join(
    [NETGUARD_DIR] + [p for p in os.environ.get('PYTHONPATH', '').split(os.pathsep) if p])
with open(NETGUARD_LOG, 'a', encoding='utf-8'):  # empty: tests read it from offset 0
  pass

netguard = sys.modules.get('sitecustomize')  # the guard itself, when this process started with it
if getattr(netguard, 'LOG_VARIABLE', None) != 'STM_NETGUARD_LOG':
  from tests.netguard import sitecustomize as netguard
netguard.install()

import pytest

from tests import gcs

_checked = 0  # bytes of NETGUARD_LOG already attributed to a test


class NetworkGuard:
  """The guard's refusals since the current test began (in this process and its subprocesses)."""

  error = netguard.NetworkGuardError  # what a refused call raises

  def __init__(self, start: int):
    self.position = start  # bytes of NETGUARD_LOG taken

  def take(self) -> list[str]:
    """The refusals so far, now accepted as expected (the test fails on none of them)."""
    with open(NETGUARD_LOG, 'rb') as f:
      f.seek(self.position)
      data = f.read()
    self.position += len(data)
    return data.decode('utf-8', 'replace').splitlines()


@pytest.fixture(autouse=True)
def network_guard():
  """Fails the test if anything it ran tried to reach an address outside 127.0.0.1."""
  global _checked
  guard = NetworkGuard(_checked)
  yield guard
  refused = guard.take()
  _checked = guard.position
  if refused:
    pytest.fail('the network guard refused connections outside 127.0.0.1:\n' +
                '\n'.join(refused), pytrace=False)


def pytest_sessionfinish(session):
  """Stops the emulator and a background quick demo still running (a session stopped early);
  fails the session on refusals no test accounted for (at collection, in session fixtures)."""
  demo = sys.modules.get('tests.stm_jax.demo.test_comparison')
  for started in getattr(demo, '_STARTED', []):
    if started.process.poll() is None:
      started.process.kill()
      started.process.wait()
  with open(NETGUARD_LOG, 'rb') as f:
    f.seek(_checked)
    rest = f.read().decode('utf-8', 'replace').strip()
  shutil.rmtree(_SCRATCH, ignore_errors=True)
  if _emulator is not None:
    _emulator.stop()
  if rest:
    sys.stderr.write('\nthe network guard refused connections outside any test:\n' + rest + '\n')
    session.exitstatus = pytest.ExitCode.TESTS_FAILED


_emulator = None  # started with the session, so a gs:// path used without a bucket fails fast


def _start_emulator() -> gcs.Emulator:
  global _emulator
  if _emulator is None:
    _emulator = gcs.start(EMULATOR_PORT)
  return _emulator


def pytest_sessionstart(session):  # pylint: disable=unused-argument
  """Starts the GCS emulator (a thread of this process, for the whole session)."""
  _start_emulator()


@pytest.fixture(scope='session')
def gcs_emulator():
  """The GCS emulator of the session (tests.gcs.Emulator), serving on EMULATOR_URL."""
  return _start_emulator()


@pytest.fixture
def gcs_bucket(gcs_emulator, request):
  """A fresh, empty bucket for this test: its `gs://name` URL. Deleted afterwards; the test fails
  if the emulator answered one of its requests with a crash or 'not implemented' (a gap)."""
  name = re.sub(r'[^a-z0-9]+', '-', request.node.name.lower()).strip('-')[:40]
  name = f'{name}-{os.urandom(4).hex()}'
  errors = len(gcs_emulator.errors)
  yield gcs_emulator.create_bucket(name)
  gcs_emulator.delete_bucket(name)
  gaps = gcs_emulator.errors[errors:]
  if gaps:
    pytest.fail('the GCS emulator could not serve:\n' + '\n'.join(gaps), pytrace=False)


def pytest_collection_modifyitems(session, config, items):
  """Starts the quick demo (tests/stm_jax/demo/test_comparison.py) in the background when its
  tests are selected, and moves those tests to the end of the session, so that its training
  (minutes, in a subprocess) overlaps the other tests, most of which are compile-bound on one core."""
  del config
  needs_demo = [item for item in items if 'quick_run' in getattr(item, 'fixturenames', ())]
  if not needs_demo:
    return
  from tests.stm_jax.demo import test_comparison  # pylint: disable=g-import-not-at-top
  scratch = tempfile.mkdtemp(prefix='quick-demo-', dir=_SCRATCH)
  test_comparison.start_quick_demo(os.path.join(scratch, 'demo'), os.path.join(scratch, 'cache'))
  items[:] = [item for item in items if item not in needs_demo] + needs_demo

