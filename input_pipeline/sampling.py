"""Which frames of a video make a clip: TSN segment sampling (paper 4.2, docs/design.md section 3).

A video of `n` frames is cut into `T` equal segments; segment `k` covers the real interval
`[k * n / T, (k + 1) * n / T)`. A clip takes one frame from each segment:

  train  one uniformly random frame from each segment. Segment `k` owns the integer frames
         `[floor(k * n / T), floor((k + 1) * n / T))`, so the segments partition the video, none is
         empty (n >= T) and no frame is left out (TSN's integer `n // T` segments drop the tail).
  val    the centre of each segment: `floor((k + 0.5) * n / T)` (TSN/TSM's validation indices).
  test   `num_clips` clips with evenly spaced offsets inside the segments: clip `c` of `C` takes
         `floor((k + (c + 0.5) / C) * n / T)`. One clip is the val clip; ten clips spread over each
         segment at 1/20, 3/20, ..., 19/20 of its length (deterministic, unlike the paper's
         "randomly sample 10 times", so that a test run can be repeated exactly).

Videos shorter than `T` frames (all modes): `indices = floor(arange(T) * n / T)`, every frame in
order, each repeated `T // n` or `T // n + 1` times (n=3, T=8: 0 0 0 1 1 1 2 2). Every test clip of
such a video is the same clip. A video with no frames is an error.

Indices are int64 arrays of length `T`, non-decreasing, in `[0, n)`.
"""

import numpy as np


def _check(num_frames: int, num_segments: int) -> None:
  if num_segments < 1:
    raise ValueError(f'num_segments must be >= 1, got {num_segments}.')
  if num_frames < 1:
    raise ValueError(f'Cannot sample a clip from a video with {num_frames} frames.')


def _repeat_short(num_frames: int, num_segments: int) -> np.ndarray:
  return np.arange(num_segments, dtype=np.int64) * num_frames // num_segments


def train_indices(num_frames: int, num_segments: int, rng: np.random.Generator) -> np.ndarray:
  """Returns one random frame per segment: TSN's training clip, a new temporal jitter each epoch."""
  _check(num_frames, num_segments)
  if num_frames < num_segments:
    return _repeat_short(num_frames, num_segments)
  k = np.arange(num_segments + 1, dtype=np.int64)
  bounds = k * num_frames // num_segments
  return rng.integers(bounds[:-1], bounds[1:]).astype(np.int64)


def val_indices(num_frames: int, num_segments: int) -> np.ndarray:
  """Returns the centre frame of each segment: the deterministic single clip of validation."""
  return test_indices(num_frames, num_segments, num_clips=1)[0]


def test_indices(num_frames: int, num_segments: int, num_clips: int) -> np.ndarray:
  """Returns `(num_clips, T)` indices: clips evenly spread inside the segments (multi-clip test)."""
  _check(num_frames, num_segments)
  if num_clips < 1:
    raise ValueError(f'num_clips must be >= 1, got {num_clips}.')
  if num_frames < num_segments:
    return np.tile(_repeat_short(num_frames, num_segments), (num_clips, 1))
  # floor((k + (c + 0.5) / C) * n / T) in exact integer arithmetic (no float rounding at bounds).
  k = np.arange(num_segments, dtype=np.int64)[None, :]
  c = np.arange(num_clips, dtype=np.int64)[:, None]
  return (2 * k * num_clips + 2 * c + 1) * num_frames // (2 * num_clips * num_segments)
