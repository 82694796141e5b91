"""Val/test views of videos that were never prepared: a file or frame folder -> uint8 clips.

A view is built exactly as evaluation builds it from the prepared dataset: the frames the
converter would store (`video.py`: upright, square pixels, short side `spec.storage_short_side`,
i.e. `data.stored_short_side` or else `data.short_side`, JPEG at `jpeg_quality`), sampled,
resized to `short_side` and cropped by the pipeline's own `EvalView` (val: segment centres, centre
crop; test: `num_clips x num_crops` views). So the clip of a file equals the clip `--mode=eval`
reads for that file once prepared with the same short side and quality, pixel for pixel, whatever
the run's `short_side`. Only the frames the views need are kept while decoding.

What counts as a video in a folder (`find_videos`): every file whose extension is a video
container's (`layouts.video.VIDEO_EXTENSIONS`) and every frame folder (a folder holding JPEG files
directly), searched recursively, sorted by path. Frame folders are not searched further; hidden
files and folders (`.name`) are skipped.
"""

import os
from typing import Sequence

import numpy as np

from input_pipeline import pipeline
from input_pipeline import protocols
from input_pipeline import video

VideoError = video.VideoError


def is_frame_folder(path: str) -> bool:
  """Whether `path` is a folder holding JPEG frames directly (one video, as prepare reads it)."""
  if not os.path.isdir(path):
    return False
  with os.scandir(path) as it:
    return any(e.is_file() and e.name.lower().endswith(video.JPEG_EXTENSIONS) for e in it)


def find_videos(folder: str) -> tuple[list[str], int]:
  """Returns the video files and frame folders under `folder` (sorted paths) and how many other
  files were passed over (see the module docstring for the rule)."""
  found, other = [], 0
  for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
    dirnames[:] = sorted(d for d in dirnames if not d.startswith('.'))
    frame_dirs = [d for d in dirnames if is_frame_folder(os.path.join(dirpath, d))]
    found.extend(os.path.join(dirpath, d) for d in frame_dirs)
    dirnames[:] = [d for d in dirnames if d not in frame_dirs]
    for name in filenames:
      if name.startswith('.'):
        continue
      if name.lower().endswith(video.VIDEO_EXTENSIONS):
        found.append(os.path.join(dirpath, name))
      else:
        other += 1
  return sorted(found), other


def read_frames(path: str, spec: pipeline.ClipSpec, protocol: protocols.Protocol,
                jpeg_quality: int, threads: int = 1) -> Sequence[bytes]:
  """The JPEG frames of a video file or frame folder that its `protocol` views need, indexable by
  frame number (`len()` is the video's frame count; for a video file, of the frames prepare stores
  under `spec.max_fps`; a frame folder's rate is unknown here, so all its frames count). Raises
  VideoError (the reason) if the source is unusable."""
  if os.path.isdir(path):
    if not is_frame_folder(path):
      raise VideoError('not a video: a folder without JPEG frames')
    return video.frame_folder_to_jpegs(path, spec.storage_short_side, jpeg_quality)
  frames, _ = video.sampled_video_to_jpegs(
      path, spec.storage_short_side, jpeg_quality,
      lambda n: protocol.clip_indices(n, spec.num_frames).ravel(), threads, spec.max_fps)
  return frames


def views(frames: Sequence[bytes], spec: pipeline.ClipSpec,
          protocol: protocols.Protocol) -> np.ndarray:
  """The `protocol` views of a video's frames as uint8 `(views, T, crop, crop, 3)`, in
  evaluation's order (clip-major, then crop), built by the pipeline's `EvalView`."""
  count = protocol.views_per_video
  view = pipeline.EvalView([{'frames': frames, 'label': -1}], spec, protocol,
                           global_batch_size=count, shard_index=0, shard_count=1)
  return np.stack([view.map(i)['clips'] for i in range(count)])
