"""`launch.py --mode=predict`: the top-5 classes of videos that were never prepared.

`--input` is a video file (any container PyAV reads: mp4, webm, avi, mkv, mov, ...), a folder of
JPEG frames (one video), or a folder of videos: every video file and frame folder under it,
recursively, in path order (`input_pipeline/video_clips.py` says what counts). Each video gets the
evaluation protocol's views of the run it is scored with (frame count, crop size and short side
come from the checkpoint's config, so that a clip equals the one `--mode=eval` reads for the same
video once prepared):
  val   1 clip: T frames at the segment centres, at the run's short side, centre crop (the
        default);
  test  the run's `data.num_clips x num_crops` views (or the command line's), softmax scores
        averaged (input_pipeline/protocols.py).

A single video prints its top 5 and raises PredictError if it cannot be read. A folder prints a
progress line per video, skips the unreadable ones (listed at the end with the reason) and
writes `<folder>/predictions.csv` (or `output`): path (relative to the folder), frame count,
top-5 names and probabilities, and every class's probability (`score_<c>`, as eval's CSV).
"""

import csv
import dataclasses
import functools
import os
from typing import Any, Callable

import jax
import ml_collections
import numpy as np

from input_pipeline import errors
from input_pipeline import files
from input_pipeline import pipeline
from input_pipeline import protocols
from input_pipeline import video
from input_pipeline import video_clips
from stm_jax.core import weights
from stm_jax.evaluation import metrics
from stm_jax.evaluation import runner

TOP_K = 5
CSV_NAME = 'predictions.csv'


class PredictError(errors.UserError):
  """A video or folder that cannot be predicted on; the message names it and says why."""


@dataclasses.dataclass
class Predictor:
  """Scores videos with a loaded model under one protocol."""
  loaded: weights.Weights
  spec: pipeline.ClipSpec
  protocol: protocols.Protocol
  jpeg_quality: int
  threads: int
  scores_fn: Callable[[Any, np.ndarray], jax.Array]

  def predict(self, path: str) -> dict[str, Any]:
    """Returns a video's prediction: path, num_frames, views, top5 [(index, name, probability)]
    and scores (every class's probability, averaged over views). Raises VideoError."""
    frames = video_clips.read_frames(path, self.spec, self.protocol, self.jpeg_quality,
                                     self.threads)
    clips = video_clips.views(frames, self.spec, self.protocol)
    scores = np.asarray(self.scores_fn(self.loaded.variables, clips), np.float64).mean(axis=0)
    order = metrics.top_k(scores[None], TOP_K)[0]
    names = self.loaded.class_names
    return {'path': path, 'num_frames': len(frames), 'views': len(clips),
            'top5': [(int(c), names[c], float(scores[c])) for c in order], 'scores': scores}


def create_predictor(loaded: weights.Weights, protocol_name: str = 'val') -> Predictor:
  """A predictor for `loaded` under the protocol `protocol_name`, clip geometry and view counts
  from the model's config (a run's own, with the command line's overrides)."""
  return Predictor(loaded=loaded, spec=pipeline.ClipSpec.from_config(loaded.config),
                   protocol=protocols.from_config(loaded.config, protocol_name),
                   jpeg_quality=int(loaded.config.data.jpeg_quality),
                   threads=min(8, os.cpu_count() or 1),
                   scores_fn=jax.jit(functools.partial(runner.class_scores,
                                                       model=loaded.model)))


def format_prediction(prediction: dict[str, Any]) -> str:
  """The top-5 lines printed for a video: probability in percent, then the class name."""
  return '\n'.join(f'  {100 * p:6.2f}%  {name}' for _, name, p in prediction['top5'])


def write_csv(path: str, predictions: list[dict[str, Any]], num_classes: int,
              relative_to: str | None = None) -> None:
  """Writes predictions as CSV, atomically (files.atomic_write)."""
  header = ['path', 'num_frames', 'views']
  for k in range(1, TOP_K + 1):
    header += [f'top{k}', f'top{k}_probability']
  header += [f'score_{c}' for c in range(num_classes)]
  with files.atomic_write(path, newline='', encoding='utf-8') as f:
    writer = csv.writer(f)
    writer.writerow(header)
    for p in predictions:
      name = os.path.relpath(p['path'], relative_to) if relative_to else p['path']
      row = [name, p['num_frames'], p['views']]
      for k in range(TOP_K):
        row += [p['top5'][k][1], f'{p["top5"][k][2]:.7g}'] if k < len(p['top5']) else ['', '']
      writer.writerow(row + [f'{v:.7g}' for v in p['scores']])


def predict_file(predictor: Predictor, path: str) -> dict[str, Any]:
  """Predicts one video file or frame folder; raises PredictError naming it if unreadable."""
  try:
    return predictor.predict(path)
  except video_clips.VideoError as e:
    raise PredictError(f'{path}: {e}') from None


def predict_folder(predictor: Predictor, folder: str, output: str | None = None
                   ) -> tuple[list[dict[str, Any]], list[tuple[str, str]]]:
  """Predicts every video under `folder` (a progress line each) and writes the CSV; returns the
  predictions and the (path, reason) of the videos skipped as unreadable."""
  paths, other = video_clips.find_videos(folder)
  if not paths:
    raise PredictError(f'{folder}: no video files ({", ".join(video.VIDEO_EXTENSIONS)}) or '
                       'folders of JPEG frames in it')
  predictions, failed = [], []
  width = len(str(len(paths)))
  for i, path in enumerate(paths, 1):
    rel = os.path.relpath(path, folder)
    try:
      p = predictor.predict(path)
    except video_clips.VideoError as e:
      failed.append((path, str(e)))
      print(f'[{i:{width}}/{len(paths)}] {rel}: skipped, {e}', flush=True)
      continue
    predictions.append(p)
    top = ', '.join(f'{name} {100 * prob:.1f}%' for _, name, prob in p['top5'])
    print(f'[{i:{width}}/{len(paths)}] {rel} ({p["num_frames"]} frames): {top}', flush=True)
  if other:
    print(f'{other} other file(s) in {folder} passed over (not a video file extension)')
  if failed:
    print(f'{len(failed)} of {len(paths)} video(s) could not be read and were skipped:')
    for path, reason in failed:
      print(f'  {os.path.relpath(path, folder)}: {reason}')
  if not predictions:
    raise PredictError(f'{folder}: none of its {len(paths)} video(s) could be read')
  csv_path = output or os.fspath(files.resolve(folder) / CSV_NAME)
  write_csv(csv_path, predictions, len(predictor.loaded.class_names), relative_to=folder)
  print(f'wrote {len(predictions)} prediction(s) to {csv_path}', flush=True)
  return predictions, failed


def main(config: ml_collections.ConfigDict, checkpoint: str, input_path: str,
         output: str | None = None, protocol: str = 'val') -> list[dict[str, Any]]:
  """`--mode=predict`: prints the top-5 classes of `input_path` (a video, a frame folder or a
  folder of videos) under the checkpoint's model; returns the predictions.

  `config` describes the model (a run's own config: `run_directory.resolve_config`)."""
  protocols.check_name(protocol)
  if files.is_remote(input_path):
    raise PredictError(f'{input_path}: predict reads local videos; copy them here first (e.g. '
                       'gcloud storage cp -r)')
  if not os.path.exists(input_path):
    raise PredictError(f'{input_path}: no such file or folder')
  loaded = weights.load(checkpoint, config)
  predictor = create_predictor(loaded, protocol)
  spec = predictor.spec
  print(f'model: {loaded.description}; {protocol} protocol, '
        f'{predictor.protocol.views_per_video} view(s) of {spec.num_frames} x {spec.crop_size} x '
        f'{spec.crop_size}', flush=True)
  if os.path.isdir(input_path) and not video_clips.is_frame_folder(input_path):
    predictions, _ = predict_folder(predictor, input_path, output)
    return predictions
  prediction = predict_file(predictor, input_path)
  print(f'{input_path} ({prediction["num_frames"]} frames):\n{format_prediction(prediction)}',
        flush=True)
  if output:
    write_csv(output, [prediction], len(loaded.class_names))
    print(f'wrote the prediction to {output}', flush=True)
  return [prediction]
