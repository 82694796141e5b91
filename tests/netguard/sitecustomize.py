"""The network guard of the tests: a connection to an address that is not loopback fails, loudly.

This file is imported twice over: by tests/conftest.py in the pytest process, and as
`sitecustomize` (which `site` imports at start-up) by every Python subprocess whose PYTHONPATH holds
this folder (conftest puts it in os.environ['PYTHONPATH'] and in the environment of any subprocess
started with an explicit env; `tests/jax_subprocess.env()` keeps it). It is inert unless
STM_NETGUARD_LOG names a file, so the folder on a path outside the tests changes nothing.

An audit hook (PEP 578) sees every `socket.connect`/`connect_ex`, `sendto`, `sendmsg` and name
lookup made by Python code, before the system call, and raises NetworkGuardError there: no packet
is sent. Allowed: loopback (127.0.0.0/8, ::1, `localhost`), the unspecified address (this host),
and non-IP sockets (unix, netlink). NetworkGuardError is not an OSError, so no client retries or
falls back on it quietly; and every refusal is also appended to the STM_NETGUARD_LOG file and
printed to stderr, so conftest fails the test even when a library swallows the exception (an
`except Exception:` around a probe). C++ clients (tensorstore, array_record's google-cloud-cpp, gRPC)
open their sockets below Python: conftest's environment points them at 127.0.0.1 instead.
"""

import os
import sys

LOG_VARIABLE = 'STM_NETGUARD_LOG'
_LOOPBACK_NAMES = ('localhost', 'ip6-localhost', 'ip6-loopback')
_installed = False


class NetworkGuardError(RuntimeError):
  """A test (or a library under test) tried to reach an address outside 127.0.0.1."""


def _host_allowed(host) -> bool:
  """Whether `host` (an IP literal or a name) is this machine: loopback or unspecified."""
  if host is None:
    return True
  if isinstance(host, (bytes, bytearray)):
    host = bytes(host).decode('ascii', 'replace')
  host = str(host).strip().rstrip('.').lower()
  if host == '<broadcast>':
    return False
  if host == '' or host in _LOOPBACK_NAMES or host.endswith('.localhost'):
    return True
  import ipaddress  # pylint: disable=g-import-not-at-top  (lazy: few processes get here)
  try:
    ip = ipaddress.ip_address(host.split('%', 1)[0])
  except ValueError:
    return False  # a name other than localhost: resolving it may ask a DNS server
  if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
    ip = ip.ipv4_mapped
  return ip.is_loopback or ip.is_unspecified


def _refuse(what: str, target) -> None:
  """Records the refusal (stderr, the shared log file) and raises NetworkGuardError."""
  argv = ' '.join(sys.argv)[:200] if getattr(sys, 'argv', None) else sys.executable
  message = (f'NETWORK GUARD: {what} {target!r} refused in process {os.getpid()} ({argv}): '
             f'the tests may only reach 127.0.0.1')
  try:
    sys.stderr.write(message + '\n')
    sys.stderr.flush()
  except Exception:  # pylint: disable=broad-except  (stderr closed: the log file still has it)
    pass
  path = os.environ.get(LOG_VARIABLE)
  if path:
    line = (message.replace('\n', ' ') + '\n').encode('utf-8', 'replace')
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
      os.write(fd, line)  # one write with O_APPEND: lines of concurrent processes do not mix
    finally:
      os.close(fd)
  raise NetworkGuardError(message)


def _check_address(what: str, sock, address) -> None:
  """Refuses `address` when `sock` is an IP socket and the host is not this machine."""
  import _socket
  family = getattr(sock, 'family', None)
  if family not in (_socket.AF_INET, _socket.AF_INET6) or address is None:
    return  # unix, netlink, ...: never leaves the machine
  host = address[0] if isinstance(address, tuple) and address else address
  if not _host_allowed(host):
    _refuse(what, address)


def _keep_guard_in(env) -> None:
  """Puts this folder on the PYTHONPATH (and STM_NETGUARD_LOG) of `env`, the environment a
  subprocess is being started with, so that the guard is installed there too, even when the
  caller set PYTHONPATH itself (several tests pass `PYTHONPATH=<repository>`)."""
  if env is None or env is os.environ or LOG_VARIABLE not in os.environ:
    return  # inherits os.environ, which has both
  try:
    if any(not isinstance(k, str) for k in env):
      return
    here = os.path.dirname(os.path.abspath(__file__))
    paths = [p for p in env.get('PYTHONPATH', '').split(os.pathsep) if p]
    if here not in paths:
      env['PYTHONPATH'] = os.pathsep.join([here] + paths)  # first: no other sitecustomize wins
    env.setdefault(LOG_VARIABLE, os.environ[LOG_VARIABLE])
  except TypeError:  # a read-only mapping: left as given
    pass


def _hook(event: str, args) -> None:
  """The audit hook: cheap for every other event (one prefix test)."""
  if not event.startswith('socket.'):
    if event == 'subprocess.Popen':
      _keep_guard_in(args[3])
    elif event == 'os.posix_spawn' or event == 'os.exec':
      _keep_guard_in(args[2])
    return
  if event == 'socket.connect':
    _check_address('connection to', args[0], args[1])
  elif event in ('socket.sendto', 'socket.sendmsg'):
    _check_address('datagram to', args[0], args[1])
  elif event in ('socket.getaddrinfo', 'socket.gethostbyname', 'socket.gethostbyname_ex',
                 'socket.gethostbyaddr'):
    if not _host_allowed(args[0]):
      _refuse('name lookup of', args[0])
  elif event == 'socket.getnameinfo':
    sockaddr = args[0]
    if not _host_allowed(sockaddr[0] if isinstance(sockaddr, tuple) else sockaddr):
      _refuse('name lookup of', sockaddr)


def install() -> bool:
  """Installs the hook in this process if STM_NETGUARD_LOG is set (once; hooks cannot be removed).
  Returns whether the guard is active."""
  global _installed
  if not _installed and os.environ.get(LOG_VARIABLE):
    sys.addaudithook(_hook)
    _installed = True
  return _installed


def _chain_next_sitecustomize() -> None:
  """Runs the sitecustomize this file shadows, if a later sys.path entry has one (Debian's
  system Python does), so that putting this folder first changes nothing else."""
  import importlib.machinery
  import importlib.util
  here = os.path.dirname(os.path.abspath(__file__))
  rest = [p for p in sys.path if p and os.path.abspath(p) != here]
  spec = importlib.machinery.PathFinder.find_spec('sitecustomize', rest)
  if spec is not None and spec.loader is not None:
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)


if __name__ == 'sitecustomize':  # imported by `site` at the start of a subprocess
  install()
  _chain_next_sitecustomize()
