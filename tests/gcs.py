"""A real GCS server for the tests: gcp-storage-emulator, in memory, on 127.0.0.1, in a thread.

`start(port)` serves the GCS JSON API (the one gcsfs, google-cloud-storage, tensorstore and
google-cloud-cpp speak) from a thread of the pytest process, so it answers the subprocesses a test
waits on as well. tests/conftest.py chooses the port, points every client at it through the
environment, starts it once per session and gives each test a fresh bucket (`gcs_bucket`).

The emulator as released lacks or gets wrong what our clients rely on; `_patch` fixes that here,
by replacing its handlers and routes (site-packages stay untouched):

  * the server: single-threaded, HTTP/1.0, listen backlog 5 (a client opening many connections
    at once, as tensorstore does, queues behind each request or finds the backlog full) -> a
    threading HTTP/1.1 server (keep-alive; `Expect: 100-continue` answered, which curl, under
    tensorstore and google-cloud-cpp, otherwise waits a second for before sending a body) with
    a backlog of 128, the handlers under one lock (the emulator's storage is not thread-safe),
    and each request's body read before its handler runs (a 412 answered without reading an
    upload would leave the body in the connection); a handler's exception closed the connection
    without an answer -> HTTP 500, and the traceback recorded in `errors` (with every route the
    emulator answers 501: `gcs_bucket` fails the test on them); HEAD -> 501 -> answered like
    GET without the body; the emulator's metadata file, rewritten whole on every change, is
    not kept (memory only);
  * objects.moveTo (gcsfs `mv`/`rename` within a bucket) -> 501; implemented (copy to the new
    name with a new generation, then delete, with its preconditions);
  * preconditions (ifGenerationMatch, ifGenerationNotMatch, ifMetagenerationMatch,
    ifMetagenerationNotMatch, and ifSource... on copies and moves) -> ignored; now checked on
    media, multipart and resumable uploads (at the start and again when the upload completes),
    metadata and media reads (412, or 304 for the NotMatch ones), deletes, patches, copies,
    rewrites, composes and moves. `pipe_file(mode='create')` (ifGenerationMatch=0) on an existing
    object therefore answers 412, which gcsfs raises as FileExistsError; tensorboardX's
    re-uploads (ifGenerationMatch=<its last generation>) and tensorstore's conditional writes
    and cached reads work;
  * `generation=` on reads -> ignored; now 404 unless it is the live generation;
  * media downloads: `Range: bytes=-N` (suffix) -> whole object; a start past the end -> an empty
    206; now suffix ranges work and an unsatisfiable range answers 416 (gcsfs' file objects read
    that as end-of-file); x-goog-generation, x-goog-metageneration,
    x-goog-stored-content-length, ETag and Last-Modified were missing -> sent, as GCS does;
  * multipart uploads were parsed with the `email` package, which rewrites line endings: a binary
    body ending in CR lost it -> parsed byte-exact (gcsfs ends its part lines with LF,
    google-cloud-storage with CRLF);
  * resumable uploads: the object got the generation and timestamps of the moment the upload
    *started* -> of the moment it completes; cancelling one (DELETE on the session URL: gcsfs
    `discard`) -> 501 -> 499, as GCS answers;
  * new objects got metageneration 2 whenever the upload carried metadata -> 1.

Listing with prefix/delimiter/matchGlob, copies, rewrites, composes and the batch endpoint work as
released (gcsfs talks to the batch endpoint only on storage.googleapis.com; against an emulator it
deletes one object per request). Buckets made here have no soft-delete retention, so a delete is
final and a wiped bucket frees its memory.
"""

import datetime
import email.utils
import gc
import http.server
import json
import logging
import re
import sys
import threading
import time
import traceback
import types
import urllib.parse
import warnings
from http import HTTPStatus

from gcp_storage_emulator import server as emu_server
from gcp_storage_emulator import settings as emu_settings
from gcp_storage_emulator import storage as emu_storage
from gcp_storage_emulator.exceptions import NotFound
from gcp_storage_emulator.handlers import buckets as emu_buckets
from gcp_storage_emulator.handlers import objects as emu_objects

HOST = '127.0.0.1'
CANCELLED = types.SimpleNamespace(value=499, phrase='Client Closed Request')  # not in HTTPStatus

_original = {}  # name -> the emulator's function that a patch wraps
_upload_conditions = {}  # resumable upload id -> its if...Match query parameters (first values)
_patched = False


class Emulator:
  """The running server: its base URL, storage, and what it answered (for assertions)."""

  def __init__(self, port: int):
    self.port = port
    self.url = f'http://{HOST}:{port}'
    self.storage = emu_storage.Storage(use_memory_fs=True)
    self.storage._write_config_to_file = lambda: None  # pylint: disable=protected-access
    self.lock = threading.RLock()
    self.requests = []  # (method, path?query, status, user agent), in order of answer
    self.errors = []  # handler exceptions and unimplemented routes, as text
    self.disconnects = 0  # requests whose client left before the answer
    self._httpd = None
    self._thread = None

  def start(self) -> 'Emulator':
    """Binds 127.0.0.1:port and serves from a daemon thread; returns self."""
    _patch()
    for name in ('gcp_storage_emulator', 'api.object', 'api.bucket'):
      # Its log is noise in a failing test's report (a warning per batch answer, an error per
      # 404); what matters is in `errors`.
      logging.getLogger(name).setLevel(logging.CRITICAL)
    self._httpd = _Server((HOST, self.port), _Handler)
    self._httpd.emulator = self
    self._thread = threading.Thread(target=self._httpd.serve_forever, name='gcs-emulator',
                                    daemon=True)
    self._thread.start()
    return self

  def stop(self) -> None:
    """Stops serving and closes the listening socket (tensorboardX's bucket writers disarmed
    first: see `_disarm_tensorboardx_writers`)."""
    _disarm_tensorboardx_writers()
    if self._httpd is not None:
      self._httpd.shutdown()
      self._httpd.server_close()
      self._httpd = None

  def create_bucket(self, name: str) -> str:
    """Creates bucket `name` (no soft-delete retention); returns its `gs://name` URL."""
    with self.lock:
      bucket = emu_buckets._make_bucket_resource(name)  # pylint: disable=protected-access
      bucket['softDeletePolicy'] = {'retentionDurationSeconds': '0'}
      self.storage.create_bucket(name, bucket)
    return f'gs://{name}'

  def delete_bucket(self, name: str) -> None:
    """Deletes bucket `name` with every object and unfinished upload in it."""
    with self.lock:
      storage = self.storage
      if name not in storage.buckets:
        return
      for upload_id in [u for u, obj in storage.resumable.items() if obj.get('bucket') == name]:
        _drop_upload(storage, upload_id)
      storage.objects[name] = {}
      storage.delete_bucket(name)

  def object_names(self, name: str) -> list[str]:
    """The names of the objects in bucket `name`, sorted (read straight from the storage)."""
    with self.lock:
      return sorted(self.storage.objects.get(name, {}))


def _disarm_tensorboardx_writers() -> None:
  """Makes the close() of every live tensorboardX GCSRecordWriter a no-op.

  Its __del__ uploads the event file once more, and tensorboardX's own atexit hook keeps every
  writer alive until the interpreter exits, when the emulator no longer answers: each upload
  would then be retried for 120 s ("connection refused") before the process ends. A closed
  writer's file is already in its bucket; an open one's bucket is gone with its test.
  """
  module = sys.modules.get('tensorboardX.record_writer')
  if module is None:
    return
  with warnings.catch_warnings():
    warnings.simplefilter('ignore')  # isinstance on lazy modules (torch) warns
    writers = [o for o in gc.get_objects() if isinstance(o, module.GCSRecordWriter)]
  for writer in writers:
    writer.close = writer.flush = lambda: None


class _Server(http.server.ThreadingHTTPServer):
  daemon_threads = True
  request_queue_size = 128
  allow_reuse_address = True
  emulator: Emulator

  def handle_error(self, request, client_address):
    """A client resetting its idle keep-alive connection (google-cloud-cpp does) is no error;
    anything else is recorded in `errors` (rather than printed)."""
    if not isinstance(sys.exc_info()[1], ConnectionError):
      self.emulator.errors.append(f'connection {client_address}: {traceback.format_exc()}')


class _Handler(emu_server.RequestHandler):
  """The emulator's request handler over HTTP/1.1: one request at a time under the emulator's
  lock, the body read first, handler exceptions answered (500) and recorded."""

  protocol_version = 'HTTP/1.1'
  body = None

  def __init__(self, request, client_address, server):
    self._status = None
    super().__init__(server.emulator.storage, request, client_address, server)

  def send_response(self, code, message=None):
    # Recorded before the client can have the answer, so a test sees it once its call returns.
    # (send_error may come before the request line or the headers are parsed: getattr.)
    self._status = code
    emulator = self.server.emulator
    path = getattr(self, 'path', None)
    if code == HTTPStatus.NOT_IMPLEMENTED:
      emulator.errors.append(f'{self.command} {path}: not implemented by the emulator')
    headers = getattr(self, 'headers', None)
    emulator.requests.append((self.command, path, code, headers and headers.get('User-Agent')))
    super().send_response(code, message)

  def _route(self, method):
    emulator = self.server.emulator
    self._status = None
    # The whole body first, whatever the handler does with it: a 412 answered before reading an
    # upload would leave it in the stream of this keep-alive connection.
    try:
      self.body = emu_server._read_raw_data(self)  # pylint: disable=protected-access
    except ConnectionError:
      self.body = None
    expected = self.headers.get('Content-Length')
    if expected and len(self.body or b'') < int(expected):
      # The client died while sending (a test's SIGKILL): nothing to answer, and no gap.
      self.close_connection = True
      emulator.disconnects += 1
      return
    with emulator.lock:
      try:
        emu_server.Router(self).handle(method)
      except (BrokenPipeError, ConnectionResetError):
        # The client gave up on the request before its answer (gcsfs' `info` asks for the object
        # and for the listing of its name at once and cancels the one it does not need).
        self.close_connection = True
        emulator.disconnects += 1
      except Exception:  # pylint: disable=broad-except
        emulator.errors.append(f'{self.command} {self.path}: {traceback.format_exc()}')
        if self._status is None:
          body = json.dumps({'error': {'code': 500, 'message': 'emulator handler failed'}})
          self.send_response(500)
          self.send_header('Content-Type', 'application/json')
          self.send_header('Content-Length', str(len(body)))
          self.end_headers()
          self.wfile.write(body.encode())

  def do_GET(self):
    self._route('GET')

  def do_HEAD(self):
    self._route('GET')  # _Response leaves the body out when the command is HEAD

  def do_POST(self):
    self._route('POST')

  def do_PUT(self):
    self._route('PUT')

  def do_DELETE(self):
    self._route('DELETE')

  def do_PATCH(self):
    self._route('PATCH')


class _Response(emu_server.Response):
  """The emulator's response, without a body for HEAD (Content-Length still the GET one's)."""

  def close(self):
    content = self._content.encode('utf-8') if isinstance(self._content, str) else self._content
    self._handler.send_response(self.status.value, self.status.phrase)
    for k, v in self._headers.items():
      self._handler.send_header(k, v)
    self._handler.send_header('Content-Length', str(len(content)))
    self._handler.end_headers()
    if self._handler.command != 'HEAD':
      self._handler.wfile.write(content)


# Requests, preconditions.


def _q(request, key):
  """The first value of query parameter `key`, or None."""
  values = request.query.get(key)
  return values[0] if values else None


def _conditions(query: dict) -> dict:
  """The precondition parameters (if...Match) of a parsed query, first values."""
  return {k: v[0] for k, v in query.items() if k.startswith('if') and k.endswith('Match') and v}


def _live(storage, bucket, name):
  """The object resource of `bucket/name`, or None."""
  try:
    return storage.get_file_obj(bucket, name)
  except NotFound:
    return None


def _check(conditions: dict, obj, source: bool = False):
  """Which precondition fails for `obj` (None: absent): 'failed' (412), 'not modified' (304,
  NotMatch), or None when all hold. `source` checks the ifSource... ones (copies, moves)."""
  infix = 'Source' if source else ''
  generation = int(obj['generation']) if obj else 0
  metageneration = int(obj['metageneration']) if obj else None
  value = conditions.get(f'if{infix}GenerationMatch')
  if value is not None and int(value) != generation:
    return 'failed'
  value = conditions.get(f'if{infix}MetagenerationMatch')
  if value is not None and metageneration != int(value):
    return 'failed'
  value = conditions.get(f'if{infix}GenerationNotMatch')
  if value is not None and int(value) == generation:
    return 'not modified'
  value = conditions.get(f'if{infix}MetagenerationNotMatch')
  if value is not None and metageneration == int(value):
    return 'not modified'
  return None


def _answer_failed(response, outcome, reading: bool = False) -> None:
  """412 (or 304 for a read whose NotMatch precondition fails), with GCS's error body."""
  if outcome == 'not modified' and reading:
    response.status = HTTPStatus.NOT_MODIFIED
    return
  response.status = HTTPStatus.PRECONDITION_FAILED
  message = 'At least one of the pre-conditions you specified did not hold.'
  response.json({'error': {'code': 412, 'message': message, 'errors': [
      {'domain': 'global', 'reason': 'conditionNotMet', 'message': message,
       'locationType': 'header', 'location': 'If-Match'}]}})


def _guard_writes(request, response, storage, bucket, name) -> bool:
  """Answers 412 and returns False when a write precondition of `request` fails for `name`."""
  if bucket not in storage.buckets or not name:
    return True  # the handler answers 404 / 400
  outcome = _check(_conditions(request.query), _live(storage, bucket, name))
  if outcome:
    _answer_failed(response, outcome)
    return False
  return True


def _guard_read(request, response, storage):
  """The object of a read, or None after answering 404 (absent, or not the asked `generation`),
  412 or 304 (preconditions)."""
  obj = _live(storage, request.params['bucket_name'], request.params['object_id'])
  generation = _q(request, 'generation')
  if obj is None or (generation is not None and generation != obj['generation']):
    response.status = HTTPStatus.NOT_FOUND
    return None
  outcome = _check(_conditions(request.query), obj)
  if outcome:
    _answer_failed(response, outcome, reading=True)
    return None
  return obj


# Handlers.


def _insert(request, response, storage, *args, **kwargs):
  """Uploads (media, multipart, resumable), with preconditions; remembers those of a resumable
  upload to check them again when it completes."""
  upload_type = _q(request, 'uploadType')
  bucket = request.params['bucket_name']
  starting_resumable = upload_type == 'resumable' and 'upload_id' not in request.query
  if upload_type == 'media':
    name = _q(request, 'name')
  elif upload_type == 'multipart':
    data = request.data
    name = _q(request, 'name') or (data['meta'].get('name') if isinstance(data, dict) else None)
  elif starting_resumable:
    data = request.data
    name = _q(request, 'name') or (data.get('name') if isinstance(data, dict) else None)
  else:
    name = None
  if name is not None and not _guard_writes(request, response, storage, bucket, name):
    return
  _original['insert'](request, response, storage, *args, **kwargs)
  if starting_resumable and 'Location' in response._headers:  # pylint: disable=protected-access
    location = urllib.parse.urlparse(response['Location'])
    upload_id = urllib.parse.parse_qs(location.query)['upload_id'][0]
    _upload_conditions[upload_id] = _conditions(request.query)


def _drop_upload(storage, upload_id) -> None:
  """Forgets resumable upload `upload_id` and the bytes received for it."""
  storage.resumable.pop(upload_id, None)
  # pylint: disable-next=protected-access
  storage._delete_file(emu_storage.RESUMABLE_DIR, storage.safe_id(upload_id))
  _upload_conditions.pop(upload_id, None)


def _finalize_resumable_object(response, storage, obj, data, upload_id):
  """Completes a resumable upload: preconditions checked again, then the object is stamped with
  a generation and times of now (not of the upload's start)."""
  outcome = _check(_upload_conditions.pop(upload_id, {}), _live(storage, obj['bucket'],
                                                                obj['name']))
  if outcome:
    _drop_upload(storage, upload_id)
    _answer_failed(response, outcome)
    return
  _restamp(obj)
  _original['_finalize_resumable_object'](response, storage, obj, data, upload_id)


def _cancel_upload(request, response, storage, *args, **kwargs):
  """DELETE on a resumable session URL: the upload is cancelled (GCS answers 499)."""
  upload_id = _q(request, 'upload_id')
  if upload_id is None or upload_id not in storage.resumable:
    response.status = HTTPStatus.NOT_FOUND
    return
  _drop_upload(storage, upload_id)
  response.status = CANCELLED


def _restamp(obj) -> None:
  """Gives `obj` a new generation (nanoseconds now) and creation/update times of now."""
  generation = time.time_ns()
  now = datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%dT%H:%M:%S.%fZ')
  obj.update(generation=str(generation), metageneration='1', timeCreated=now, updated=now,
             timeStorageClassUpdated=now, id=f"{obj['bucket']}/{obj['name']}/{generation}")
  if obj.get('mediaLink'):
    obj['mediaLink'] = re.sub(r'generation=\d+', f'generation={generation}', obj['mediaLink'])


def _make_object_resource(*args, **kwargs):
  """The emulator's new object resource, with metageneration 1 even when metadata came along."""
  obj = _original['_make_object_resource'](*args, **kwargs)
  obj['metageneration'] = '1'
  return obj


def _get(request, response, storage, *args, **kwargs):
  """Object metadata (or media with alt=media), with `generation=` and preconditions."""
  if _q(request, 'alt') == 'media':
    return _download(request, response, storage)
  if _q(request, 'softDeleted') is None and _guard_read(request, response, storage) is None:
    return None
  return _original['get'](request, response, storage, *args, **kwargs)


def _parse_range(header: str, size: int):
  """[start, end) of a single `bytes=` range of an object of `size` bytes; None to serve the
  whole object (no header, or one this does not handle: several ranges); 'unsatisfiable'."""
  match = re.fullmatch(r'\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*', header or '')
  if not match or match.group(1) == match.group(2) == '':
    return None
  first, last = match.groups()
  if first == '':  # suffix: the last N bytes
    start, end = max(0, size - int(last)), size
  else:
    start, end = int(first), size if last == '' else min(size, int(last) + 1)
  if start >= size or (first != '' and last != '' and int(last) < start):
    return 'unsatisfiable'
  return start, end


def _download(request, response, storage, *args, **kwargs):
  """Media download with byte ranges (bytes=a-b, a-, -n; 416 past the end), `generation=`,
  preconditions (412/304) and the generation/size/ETag headers clients read."""
  obj = _guard_read(request, response, storage)
  if obj is None:
    return
  content = storage.get_file(request.params['bucket_name'], request.params['object_id'])
  size = len(content)
  span = _parse_range(request.get_header('range'), size)
  if span == 'unsatisfiable':
    response.status = HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE
    response['Content-Range'] = f'bytes */{size}'
    response.json({'error': {'code': 416, 'message': 'Requested range not satisfiable',
                             'errors': [{'domain': 'global', 'reason': 'invalid'}]}})
    return
  if span is None:
    response['X-Goog-Hash'] = f"crc32c={obj['crc32c']},md5={obj['md5Hash']}"
  else:
    start, end = span
    content = content[start:end]
    response.status = HTTPStatus.PARTIAL_CONTENT
    response['Content-Range'] = f'bytes {start}-{end - 1}/{size}'
  response['Accept-Ranges'] = 'bytes'
  response['ETag'] = f'"{obj["md5Hash"]}"'
  updated = datetime.datetime.fromisoformat(obj['updated'].replace('Z', '+00:00'))
  response['Last-Modified'] = email.utils.format_datetime(updated, usegmt=True)
  response['x-goog-generation'] = obj['generation']
  response['x-goog-metageneration'] = obj['metageneration']
  response['x-goog-stored-content-length'] = str(size)
  response['x-goog-stored-content-encoding'] = obj.get('contentEncoding') or 'identity'
  if 'response-content-disposition' in request.query:
    response['Content-Disposition'] = _q(request, 'response-content-disposition')
  for key, value in (obj.get('metadata') or {}).items():
    if value is not None:
      response[f'x-goog-meta-{key}'] = str(value)
  response.write_file(content, content_type=obj.get('contentType') or 'application/octet-stream')


def _with_write_guard(name: str, source: bool = False):
  """A handler wrapping the emulator's `name` with the write preconditions of its target
  (dest_object_id if the route has one, else object_id) and, for copies, of its source."""

  def handler(request, response, storage, *args, **kwargs):
    params = request.params
    bucket = params.get('dest_bucket_name') or params['bucket_name']
    target = params.get('dest_object_id') or params['object_id']
    if not _guard_writes(request, response, storage, bucket, target):
      return None
    if source:
      outcome = _check(_conditions(request.query),
                       _live(storage, params['bucket_name'], params['object_id']), source=True)
      if outcome:
        return _answer_failed(response, outcome)
    result = _original[name](request, response, storage, *args, **kwargs)
    if name == 'delete' and response.status == HTTPStatus.OK:
      response.status = HTTPStatus.NO_CONTENT  # what GCS answers
    return result

  handler.__name__ = name
  return handler


def _move(request, response, storage, *args, **kwargs):
  """objects.moveTo within a bucket: the object under its new name (a new generation, same
  content and metadata), the old name gone; ifSource... preconditions on the source, if...
  on the destination; `sourceGeneration` must be the live one."""
  bucket, src, dst = (request.params[k] for k in ('bucket_name', 'object_id', 'dest_object_id'))
  source = _live(storage, bucket, src)
  generation = _q(request, 'sourceGeneration')
  if source is None or (generation is not None and generation != source['generation']):
    response.status = HTTPStatus.NOT_FOUND
    return
  conditions = _conditions(request.query)
  outcome = _check(conditions, source, source=True) or _check(conditions,
                                                              _live(storage, bucket, dst))
  if outcome:
    _answer_failed(response, outcome)
    return
  content = storage.get_file(bucket, src)
  moved = emu_objects._make_object_resource(  # pylint: disable=protected-access
      request.base_url, bucket, dst, source['contentType'], source['size'], source)
  moved = emu_objects._checksums(content, moved)  # pylint: disable=protected-access
  storage.create_file(bucket, dst, content, moved)
  storage.delete_file(bucket, src)
  response.json(moved)


# Multipart bodies, byte-exact.


def _split_multipart(raw: bytes, content_type: str) -> list[tuple[dict, bytes]]:
  """The parts of a multipart body as (lower-cased headers, exact body bytes). The line ending
  before each delimiter belongs to the delimiter (RFC 2046); which one (CRLF or LF) is read from
  the line of the first delimiter."""
  match = re.search(r'boundary="?([^";]+)"?', content_type)
  if not match:
    raise ValueError(f'no boundary in {content_type!r}')
  delimiter = b'--' + match.group(1).encode()
  first = raw.index(delimiter)
  after = raw[first + len(delimiter):first + len(delimiter) + 2]
  eol = b'\r\n' if after == b'\r\n' else b'\n'
  parts = []
  for chunk in raw[first:].split(eol + delimiter):
    chunk = chunk[len(delimiter):] if chunk.startswith(delimiter) else chunk
    if chunk.startswith(b'--'):
      break  # the closing delimiter
    chunk = chunk[len(eol):] if chunk.startswith(eol) else chunk
    head, sep, body = chunk.partition(eol + eol)
    if not sep:
      head, body = b'', chunk[len(eol):] if chunk.startswith(eol) else chunk
    headers = {}
    for line in head.decode('latin-1').split(eol.decode()):
      if ':' in line:
        key, value = line.split(':', 1)
        headers[key.strip().lower()] = value.strip()
    parts.append((headers, body))
  return parts


def _read_data(request_handler, query):
  """The emulator's request body decoding, with multipart/related uploads parsed byte-exact."""
  # pylint: disable-next=protected-access
  raw = emu_server._decode_raw_data(request_handler.body, request_handler)
  if not raw:
    return None
  content_type = request_handler.headers.get('Content-Type') or 'application/octet-stream'
  if content_type.startswith('application/json') and 'upload_id' not in query:
    return json.loads(raw)
  if content_type.startswith('multipart/related'):
    (_, meta), (headers, content) = _split_multipart(raw, content_type)[:2]
    return {'meta': json.loads(meta), 'content': content,
            'content-type': headers.get('content-type', 'application/octet-stream').split(';')[0]}
  if content_type.startswith('multipart/'):  # batch: text, the emulator's parser is fine
    message = email.message_from_bytes(b'Content-Type: ' + content_type.encode() + b'\r\n\r\n'
                                       + raw)
    return [emu_server._parse_batch_item(item)  # pylint: disable=protected-access
            for item in message.get_payload()]
  return raw


def _patch() -> None:
  """Installs the fixes above into the emulator's modules (once)."""
  global _patched
  if _patched:
    return
  _patched = True
  for name in ('insert', 'get', 'download', 'delete', 'patch', 'copy', 'rewrite', 'compose',
               '_finalize_resumable_object', '_make_object_resource'):
    _original[name] = getattr(emu_objects, name)
  replacements = {
      'insert': _insert, 'get': _get, 'download': _download,
      'delete': _with_write_guard('delete'), 'patch': _with_write_guard('patch'),
      'copy': _with_write_guard('copy', source=True),
      'rewrite': _with_write_guard('rewrite', source=True),
      'compose': _with_write_guard('compose'),
      '_finalize_resumable_object': _finalize_resumable_object,
      '_make_object_resource': _make_object_resource,
  }
  by_function = {_original[k]: v for k, v in replacements.items()}
  for name, function in replacements.items():
    setattr(emu_objects, name, function)  # module globals: what the handlers call each other by
  routes = []
  for prefix in (emu_settings.API_ENDPOINT, ''):
    p = re.escape(prefix)
    routes.append((rf'^{p}/b/(?P<bucket_name>[-.\w]+)/o/(?P<object_id>.*[^/]+)/moveTo/o/'
                   rf'(?P<dest_object_id>.*[^/]+)$', {'POST': _move}))
  for regex, handlers in emu_server.HANDLERS:
    handlers = {method: by_function.get(f, f) for method, f in handlers.items()}
    if regex.startswith(f'^{emu_settings.UPLOAD_API_ENDPOINT}/'):
      handlers['DELETE'] = _cancel_upload
    routes.append((regex, handlers))
  emu_server.HANDLERS = tuple(routes)
  emu_server.Response = _Response
  emu_server._read_data = _read_data  # pylint: disable=protected-access


def start(port: int) -> Emulator:
  """A started emulator on 127.0.0.1:`port`."""
  return Emulator(port).start()
