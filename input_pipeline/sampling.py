"""Which frames of a video make a clip: TSN segment sampling (paper 4.2, docs/design.md section 3).

A video of `n` frames is cut into `T` equal segments; segment `k` covers the real interval
`[k * n / T, (k + 1) * n / T)`. A clip takes one frame from each segment:

  train  one uniformly random frame from each segment. Segment `k` owns the integer frames
         `[floor(k * n / T), floor((k + 1) * n / T))`, so the segments partition the video, none is
         empty (n >= T) and no frame is left out. (TSM's and mmaction2's code use segments of
         `n // T` frames from frame 0, which never sample the last `n mod T` frames.)
  val    the centre of each segment: `floor((k + 0.5) * n / T)`. For n > T these are the indices
         of TSM's `_get_val_indices` and of mmaction2's test-mode `SampleFrames` (which compute
         them in floating point: equal for T = 8 and 16 up to n = 300, tested); they differ at
         n <= T (below, and docs/conventions.md).
  test   `num_clips` clips at fixed offsets inside the segments, by `test_clip_offsets`:
         `even` (ours, the default): clip `c` of `C` takes `floor((k + (c + 0.5) / C) * n / T)`.
           One clip is the val clip; ten clips spread over each segment at 1/20, 3/20, ..., 19/20
           of its length (deterministic, unlike the paper's "randomly sample 10 times", so that a
           test run can be repeated exactly).
         `tsm_twice`: TSM's (and mmaction2's) `twice_sample`, two clips: the segment centres
           `floor((k + 1/2) * n / T)`, then the segment starts `floor(k * n / T)`.

Videos shorter than `T` frames (all modes): `indices = floor(arange(T) * n / T)`, every frame in
order, each repeated `T // n` or `T // n + 1` times (n=3, T=8: 0 0 0 1 1 1 2 2), so that training
and evaluation see the same clip of a short video and it keeps its motion. Every test clip of such
a video is the same clip. (TSM takes frame 0 T times for such videos in training and validation,
and in validation also at n == T, since its test there is `n > T`; mmaction2 takes
`round(k * n / T)` in training and the segment centres in evaluation.) A video with no frames is
an error.

Indices are int64 arrays of length `T`, non-decreasing, in `[0, n)`.
"""

from fractions import Fraction

import numpy as np

# `test_clip_offsets` (config.data.test_clip_offsets) -> the offsets of its clips inside a segment,
# as fractions of the segment's length, given the number of clips; None where any count works.
_TWICE = (Fraction(1, 2), Fraction(0))
TEST_CLIP_OFFSETS = {
    'even': None,  # (c + 1/2) / C for clip c of C.
    'tsm_twice': _TWICE,
}


def _check(num_frames: int, num_segments: int) -> None:
  if num_segments < 1:
    raise ValueError(f'num_segments must be >= 1, got {num_segments}.')
  if num_frames < 1:
    raise ValueError(f'Cannot sample a clip from a video with {num_frames} frames.')


def _repeat_short(num_frames: int, num_segments: int) -> np.ndarray:
  return np.arange(num_segments, dtype=np.int64) * num_frames // num_segments


def clip_offsets(name: str, num_clips: int) -> tuple[Fraction, ...]:
  """The offsets of the test clips inside a segment, as fractions of its length, for
  `test_clip_offsets=name` and `num_clips` clips; raises a ValueError naming what does not fit."""
  if name not in TEST_CLIP_OFFSETS:
    raise ValueError(f'test clip offsets {name!r}: must be one of {", ".join(TEST_CLIP_OFFSETS)}')
  if num_clips < 1:
    raise ValueError(f'num_clips must be >= 1, got {num_clips}.')
  fixed = TEST_CLIP_OFFSETS[name]
  if fixed is None:
    return tuple(Fraction(2 * c + 1, 2 * num_clips) for c in range(num_clips))
  if num_clips != len(fixed):
    raise ValueError(f'test clip offsets {name!r} take {len(fixed)} clips, not {num_clips}')
  return fixed


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


def test_indices(num_frames: int, num_segments: int, num_clips: int,
                 offsets: str = 'even') -> np.ndarray:
  """Returns `(num_clips, T)` indices: the multi-clip test's clips, at the offsets `offsets`
  names inside the segments (`even`: spread evenly; `tsm_twice`: TSM's two clips)."""
  _check(num_frames, num_segments)
  fractions = clip_offsets(offsets, num_clips)
  if num_frames < num_segments:
    return np.tile(_repeat_short(num_frames, num_segments), (num_clips, 1))
  # floor((k + f) * n / T) in exact integer arithmetic (no float rounding at bounds).
  k = np.arange(num_segments, dtype=np.int64)
  rows = [(k * f.denominator + f.numerator) * num_frames // (f.denominator * num_segments)
          for f in fractions]
  return np.stack(rows).astype(np.int64)
