"""JAX's persistent compilation cache, kept with the run: a resumed or preempted run loads its
compiled programs instead of compiling them again (minutes for a large model on a pod).

`config.compilation_cache_dir`: 'auto' (the default) is `$JAX_COMPILATION_CACHE_DIR` when that is
set, else `<workdir>/compilation_cache`; '' turns the cache off; anything else is the folder
(local or a bucket: JAX writes the cache through etils.epath). `CacheCounter` counts, from JAX's
monitoring events, how many programs came from the cache, for the run's log.
"""

import os

from jax import config as jax_config
from jax import monitoring

from input_pipeline import files

CACHE_DIR = 'compilation_cache'
_HIT = '/jax/compilation_cache/cache_hits'
_MISS = '/jax/compilation_cache/cache_misses'


def cache_dir(config, workdir: str) -> str | None:
  """The folder `config.compilation_cache_dir` names for a run in `workdir` (None: off)."""
  setting = config.compilation_cache_dir
  if setting == 'auto':
    return os.environ.get('JAX_COMPILATION_CACHE_DIR') or os.fspath(
        files.resolve(workdir) / CACHE_DIR)
  return os.fspath(files.resolve(setting)) if setting else None


def use(config, workdir: str) -> str | None:
  """Points JAX's persistent compilation cache at `cache_dir(config, workdir)` (before the first
  compilation of the process); returns the folder, or None when the cache is off."""
  folder = cache_dir(config, workdir)
  jax_config.update('jax_compilation_cache_dir', folder)
  return folder


class CacheCounter:
  """Counts the programs loaded from the persistent cache and those compiled anew, from the
  moment it is made (JAX's monitoring events; listeners cannot be removed, so make one per run)."""

  def __init__(self):
    self.loaded = 0
    self.compiled = 0
    monitoring.register_event_listener(self._on_event)

  def _on_event(self, event: str, **kwargs) -> None:
    del kwargs
    if event == _HIT:
      self.loaded += 1
    elif event == _MISS:
      self.compiled += 1
