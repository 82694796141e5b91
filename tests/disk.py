"""What is on disk under a folder, as one value: a refused command must leave it unchanged."""

import hashlib
import os


def digest(root) -> str:
  """SHA-256 over every folder name, file name and file content under `root` (sorted), so that
  any file created, removed, renamed or changed by one byte changes it."""
  h = hashlib.sha256()
  root = str(root)
  for dirpath, dirnames, filenames in os.walk(root):
    dirnames.sort()
    rel = os.path.relpath(dirpath, root)
    h.update(f'dir {rel}\n'.encode())
    for name in sorted(filenames):
      h.update(f'file {os.path.join(rel, name)}\n'.encode())
      with open(os.path.join(dirpath, name), 'rb') as f:
        h.update(hashlib.sha256(f.read()).digest())
  return h.hexdigest()


def flip_bytes(path, count: int = 64) -> None:
  """Inverts `count` bytes in the middle of a file, keeping its size (silent corruption)."""
  with open(path, 'rb') as f:
    data = bytearray(f.read())
  middle = len(data) // 2
  for i in range(middle, min(middle + count, len(data))):
    data[i] ^= 0xFF
  with open(path, 'wb') as f:
    f.write(data)


def largest_file(root) -> str:
  """The largest file under `root` (a checkpoint's biggest array data)."""
  found = [os.path.join(d, n) for d, _, names in os.walk(str(root)) for n in names]
  return max(found, key=os.path.getsize)
