"""Running jax programs as test subprocesses: a fixed device count needs a fresh process."""

import os
import socket
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def env(cache_dir, **extra) -> dict[str, str]:
  """Environment for a jax subprocess: CPU, cheap XLA optimisation (compiles ~3x faster), and a
  persistent compilation cache shared by the subprocesses of a test session. The path holds the
  repository and tests/netguard (whose sitecustomize installs the network guard of conftest)."""
  result = dict(os.environ)
  result.update(JAX_PLATFORMS='cpu', XLA_FLAGS='--xla_backend_optimization_level=0',
                JAX_COMPILATION_CACHE_DIR=str(cache_dir),
                JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0',
                JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES='0',
                PYTHONPATH=os.pathsep.join([ROOT, os.path.join(ROOT, 'tests', 'netguard')]),
                **extra)
  return result


def free_port() -> int:
  """A TCP port free on 127.0.0.1 right now (for a jax.distributed coordinator)."""
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def launch(*args: str, cache) -> subprocess.CompletedProcess:
  """Runs `python launch.py *args` from the repository root in a jax subprocess (`env(cache)`),
  capturing its output; never raises on a non-zero exit (the tests read the status)."""
  return subprocess.run([sys.executable, 'launch.py', *args], cwd=ROOT, env=env(cache),
                        capture_output=True, text=True, timeout=300, check=False)
