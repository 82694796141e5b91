"""In-memory video records for the pipeline tests: every frame carries its index in its pixels.

Frame i is a JPEG whose red and green channels are flat and encode i (red: i mod 32, green:
i // 32, in steps of 8 grey levels, far apart enough to survive JPEG), and whose blue channel is a
left-to-right ramp (0 at the left edge, 255 at the right), so a test can read which frame it got
and whether and where it was cropped or flipped.
"""

import numpy as np
import simplejpeg


def frame(i: int, height: int, width: int) -> np.ndarray:
  """Returns frame i as uint8 RGB."""
  a = np.empty((height, width, 3), np.uint8)
  a[..., 0] = 4 + 8 * (i % 32)
  a[..., 1] = 4 + 8 * (i // 32)
  a[..., 2] = np.round(np.linspace(0, 255, width)).astype(np.uint8)[None, :]
  return a


def frame_index(image: np.ndarray) -> int:
  """Returns the index a (decoded, cropped, resized) frame carries."""
  r = float(image[..., 0].mean())
  g = float(image[..., 1].mean())
  return int(round((r - 4) / 8)) + 32 * int(round((g - 4) / 8))


def clip_indices(clip: np.ndarray) -> list[int]:
  """Returns the frame index carried by every frame of a `(T, H, W, 3)` clip."""
  return [frame_index(f) for f in clip]


def ramp_direction(image: np.ndarray) -> int:
  """Returns +1 if the blue ramp rises left to right (not flipped), -1 if it falls."""
  b = image[..., 2].astype(np.float64).mean(axis=0)
  return 1 if b[-1] > b[0] else -1


def record(video: int, num_frames: int, height: int = 40, width: int = 56,
           label: int | None = None) -> dict:
  """Returns a record as the converter writes it; the label defaults to the video number."""
  frames = [simplejpeg.encode_jpeg(frame(i, height, width), quality=95, colorsubsampling='420')
            for i in range(num_frames)]
  return {'id': f'video{video}'.encode(), 'label': video if label is None else label,
          'num_frames': num_frames, 'fps': 12.0, 'frames': frames}


def source(num_frames: list[int], height: int = 40, width: int = 56) -> list[dict]:
  """Returns a list source of videos with these frame counts (label = position in the list)."""
  return [record(v, n, height, width) for v, n in enumerate(num_frames)]
