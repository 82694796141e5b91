"""A small synthetic temporal-reasoning dataset, written as Something-Something v2 raw data.

Why: the demo (stm_jax/demo/comparison.py) must show, without any download, what STM adds to TSN. Every class
here has a partner that differs only in the direction of time:

  left_right  Moving [something] from left to right  <->  Moving [something] from right to left
  approach    Moving [something] closer to the camera  <->  Moving [something] away from the camera
  rotate      Turning [something] clockwise  <->  Turning [something] counterclockwise
  appear      Making [something] appear  <->  Making [something] disappear

A video of the second class of a pair is rendered as a clip of the first class played backwards,
from parameters drawn from the same distribution, so the reverse-pair property is exact: any clip
of class A played backwards is a clip of class B, and the two classes have the same distribution
of frames. A network that pools frames without order (TSN) cannot tell the partners apart; one
that encodes motion can.

Videos vary in shape, colour, size, speed, timing (the motion fills a random window of the clip),
start position and background (solid, gradient, noise texture). Everything is drawn from
`numpy.random.default_rng((seed, split, index))`, so a dataset is a pure function of the config.

`write_dataset(raw_dir, config)` writes `<raw_dir>/20bn-something-something-v2/<id>.webm` (VP9)
and `<raw_dir>/labels/{labels,train,validation}.json`, the layout input_pipeline/prepare/layouts/sthv2.py
reads, and skips the work when the same dataset is already there.
"""

import dataclasses
import hashlib
import json
import os
from typing import Any

import av
import ml_collections
import numpy as np

from input_pipeline import errors
from input_pipeline import files

# pair name -> (template of the forward class, template of its time-reversed partner)
PAIRS = {
    'left_right': ('Moving [something] from left to right',
                   'Moving [something] from right to left'),
    'approach': ('Moving [something] closer to the camera',
                 'Moving [something] away from the camera'),
    'rotate': ('Turning [something] clockwise', 'Turning [something] counterclockwise'),
    'appear': ('Making [something] appear', 'Making [something] disappear'),
}
SHAPES = ('square', 'triangle', 'bar', 'plus', 'ell', 'circle')
# Shapes whose rotation cannot be seen.
_ROUND = ('circle',)
BACKGROUNDS = ('solid', 'gradient', 'noise')
SPLITS = ('train', 'validation')
VIDEO_DIR = '20bn-something-something-v2'
LABEL_DIR = 'labels'
MANIFEST = 'demo_data.json'
PARTIAL = 'demo_data.partial.json'  # marks a dataset being written, with its fingerprint
_SUPERSAMPLE = 3  # sub-pixel samples per pixel side, for smooth (anti-aliased) edges
_FORMAT = 1  # bump when the rendering changes for the same config


@dataclasses.dataclass(frozen=True)
class VideoSpec:
  """Everything that determines one video: its class, object, background and motion."""
  pair: str
  reverse: bool  # True: the pair's second class (the forward clip played backwards)
  shape: str
  colour: tuple[float, float, float]
  background: str
  background_colours: tuple[tuple[float, float, float], tuple[float, float, float]]
  background_angle: float  # gradient direction (radians)
  texture_seed: int  # noise background
  radius: float  # object radius in pixels (before the motion's scaling)
  centre: tuple[float, float]  # (x, y) in pixels at the start of the forward clip
  angle: float  # orientation (radians) at the start of the forward clip
  amount: float  # pair-dependent extent: travel (px), growth factor, turn (radians), scale-in
  window: tuple[float, float]  # the motion runs from frame window[0] to frame window[1]


def class_names(config: ml_collections.ConfigDict) -> list[str]:
  """Class names (templates without brackets) in label order: pair by pair, forward first."""
  return [t.replace('[', '').replace(']', '') for t in templates(config)]


def templates(config: ml_collections.ConfigDict) -> list[str]:
  """sthv2-style templates ('Moving [something] ...') in label order."""
  return [t for pair in config.demo.pairs for t in PAIRS[pair]]


def partner(label: int) -> int:
  """The label of the class that is `label` played backwards (classes come in pairs 2k, 2k+1)."""
  return label ^ 1


def _colour_distance(a, b) -> float:
  return float(np.linalg.norm(np.asarray(a) - np.asarray(b)))


def _random_colour(rng: np.random.Generator) -> tuple[float, float, float]:
  """A colour with random hue, saturation and value (RGB in [0, 255])."""
  h, s, v = rng.uniform(0, 1), rng.uniform(0.2, 1.0), rng.uniform(0.15, 1.0)
  i = int(h * 6) % 6
  f = h * 6 - int(h * 6)
  p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
  rgb = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i]
  return tuple(float(255 * c) for c in rgb)


def sample_spec(rng: np.random.Generator, label: int,
                config: ml_collections.ConfigDict) -> VideoSpec:
  """Draws the spec of one video of class `label`. The parameters' distribution is the same for
  both classes of a pair; only `reverse` differs, so partners are exact time reversals."""
  d = config.demo
  pair = d.pairs[label // 2]
  size = float(d.frame_size)
  shapes = [s for s in d.shapes if pair != 'rotate' or s not in _ROUND]
  shape = shapes[rng.integers(len(shapes))]
  colour = _random_colour(rng)
  background = d.backgrounds[rng.integers(len(d.backgrounds))]
  bg = []
  while len(bg) < 2:  # background colours far enough from the object's to see it
    c = _random_colour(rng)
    if _colour_distance(c, colour) >= d.min_contrast:
      bg.append(c)
  radius = rng.uniform(d.min_radius, d.max_radius) * size
  n = int(d.num_frames)
  length = rng.uniform(d.min_motion_fraction, 1.0) * (n - 1)
  start = rng.uniform(0.0, n - 1 - length)
  angle = rng.uniform(0, 2 * np.pi)
  margin = radius
  if pair == 'left_right':
    amount = rng.uniform(d.min_travel, d.max_travel) * size
    x = rng.uniform(margin, max(margin, size - margin - amount))
    y = rng.uniform(margin, size - margin)
  elif pair == 'approach':
    amount = rng.uniform(d.min_growth, d.max_growth)
    radius = radius / np.sqrt(amount)  # grows from r/sqrt(g) to r*sqrt(g)
    x, y = rng.uniform(margin, size - margin, size=2)
  elif pair == 'rotate':
    amount = np.deg2rad(rng.uniform(d.min_turn, d.max_turn))
    x, y = rng.uniform(margin, size - margin, size=2)
  else:  # appear: fade in, scaling from `amount` to 1 (1: fade only)
    amount = 1.0 if rng.uniform() < 0.5 else rng.uniform(d.min_appear_scale, 1.0)
    x, y = rng.uniform(margin, size - margin, size=2)
  return VideoSpec(
      pair=pair, reverse=bool(label % 2), shape=shape, colour=colour, background=background,
      background_colours=(bg[0], bg[1]), background_angle=float(rng.uniform(0, 2 * np.pi)),
      texture_seed=int(rng.integers(2**31)), radius=float(radius), centre=(float(x), float(y)),
      angle=float(angle), amount=float(amount), window=(float(start), float(start + length)))


def _inside(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
  """Whether object-frame points (u, v) (radius 1) are inside `shape`."""
  au, av_ = np.abs(u), np.abs(v)
  if shape == 'circle':
    return u * u + v * v <= 1.0
  if shape == 'square':
    return np.maximum(au, av_) <= 0.8
  if shape == 'bar':
    return (au <= 1.0) & (av_ <= 0.35)
  if shape == 'plus':
    return ((au <= 1.0) & (av_ <= 0.3)) | ((au <= 0.3) & (av_ <= 1.0))
  if shape == 'ell':
    return (((u >= -0.8) & (u <= -0.25) & (av_ <= 0.9)) |
            ((u >= -0.8) & (u <= 0.8) & (v >= 0.35) & (v <= 0.9)))
  if shape == 'triangle':  # points up at angle 0
    return (v <= 0.5) & (np.sqrt(3) * u - v <= 1.0) & (-np.sqrt(3) * u - v <= 1.0)
  raise ValueError(f'unknown shape {shape!r}; choose from {SHAPES}')


def _background(spec: VideoSpec, size: int) -> np.ndarray:
  """The static background, float (size, size, 3)."""
  c0, c1 = (np.asarray(c, np.float32) for c in spec.background_colours)
  if spec.background == 'solid':
    return np.broadcast_to(c0, (size, size, 3)).copy()
  yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / max(size - 1, 1) - 0.5
  if spec.background == 'gradient':
    w = np.cos(spec.background_angle) * xx + np.sin(spec.background_angle) * yy + 0.5
    w = np.clip(w, 0, 1)[..., None]
    return (1 - w) * c0 + w * c1
  if spec.background == 'noise':  # smooth blotches mixing the two colours, plus grain
    rng = np.random.default_rng(spec.texture_seed)
    grid = rng.uniform(0, 1, (5, 5)).astype(np.float32)
    pos = (np.arange(size, dtype=np.float32) + 0.5) / size * 4
    i = np.minimum(pos.astype(int), 3)
    f = pos - i
    rows = grid[i] * (1 - f)[:, None] + grid[i + 1] * f[:, None]  # (size, 5)
    w = rows[:, i] * (1 - f) + rows[:, i + 1] * f  # (size, size)
    w = np.clip(w + rng.normal(0, 0.08, (size, size)), 0, 1)[..., None]
    return (1 - w) * c0 + w * c1
  raise ValueError(f'unknown background {spec.background!r}; choose from {BACKGROUNDS}')


def _progress(spec: VideoSpec, num_frames: int) -> np.ndarray:
  """Motion progress in [0, 1] per frame of the forward clip: still, linear ramp, still."""
  t = np.arange(num_frames, dtype=np.float64)
  a, b = spec.window
  return np.clip((t - a) / max(b - a, 1e-6), 0.0, 1.0)


def _pose(spec: VideoSpec, p: float) -> tuple[float, float, float, float, float]:
  """(x, y, radius, angle, alpha) of the object at forward progress p."""
  x, y = spec.centre
  radius, angle, alpha = spec.radius, spec.angle, 1.0
  if spec.pair == 'left_right':
    x += p * spec.amount
  elif spec.pair == 'approach':
    radius *= spec.amount ** p
  elif spec.pair == 'rotate':
    angle += p * spec.amount  # image y points down: a growing angle turns clockwise on screen
  elif spec.pair == 'appear':
    alpha = p
    radius *= spec.amount + (1 - spec.amount) * p
  else:
    raise ValueError(f'unknown pair {spec.pair!r}; choose from {tuple(PAIRS)}')
  return x, y, radius, angle, alpha


def render(spec: VideoSpec, num_frames: int, size: int,
           with_masks: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
  """Renders the video: uint8 (num_frames, size, size, 3); with `with_masks` also the object's
  coverage times opacity per pixel, float (num_frames, size, size) in [0, 1] (for tests).

  The forward clip is rendered and, for the pair's second class, returned backwards."""
  ss = _SUPERSAMPLE
  sub = (np.arange(size * ss, dtype=np.float64) + 0.5) / ss  # sample points in pixel units
  py, px = np.meshgrid(sub, sub, indexing='ij')
  colour = np.asarray(spec.colour, np.float32)
  bg = _background(spec, size)
  frames, masks = [], []
  for p in _progress(spec, num_frames):
    x, y, radius, angle, alpha = _pose(spec, float(p))
    dx, dy = (px - x) / radius, (py - y) / radius
    c, s = np.cos(angle), np.sin(angle)
    u, v = c * dx + s * dy, -s * dx + c * dy  # rotate the sample points by -angle
    cover = _inside(spec.shape, u, v).reshape(size, ss, size, ss).mean(axis=(1, 3))
    m = (alpha * cover).astype(np.float32)[..., None]
    frames.append(np.clip(np.rint(bg * (1 - m) + colour * m), 0, 255).astype(np.uint8))
    masks.append(m[..., 0])
  video, mask = np.stack(frames), np.stack(masks)
  if spec.reverse:
    video, mask = video[::-1].copy(), mask[::-1].copy()
  return (video, mask) if with_masks else video


def write_webm(path: str, frames: np.ndarray, fps: int) -> None:
  """Encodes RGB frames as a VP9 webm (as Something-Something v2 ships), atomically.

  Lossless VP9 (only the 4:2:0 chroma subsampling loses anything), so that no frame is coded
  better than another (a keyframe is sharper than the frames predicted from it): played
  backwards, a video still carries no trace of its direction but the motion itself."""
  tmp = path + '.tmp.webm'
  with av.open(tmp, 'w') as container:
    stream = container.add_stream('libvpx-vp9', rate=fps)
    stream.height, stream.width = frames.shape[1:3]
    stream.pix_fmt = 'yuv420p'
    stream.options = {'lossless': '1'}
    for f in frames:
      for packet in stream.encode(av.VideoFrame.from_ndarray(f, format='rgb24')):
        container.mux(packet)
    for packet in stream.encode():
      container.mux(packet)
  os.replace(tmp, path)


def describe(spec: VideoSpec) -> str:
  """The placeholder text of a video, e.g. 'red square' (filled into the class template)."""
  r, g, b = spec.colour
  hi, lo = max(r, g, b), min(r, g, b)
  if hi - lo < 40:
    name = 'white' if hi > 200 else 'black' if hi < 60 else 'grey'
  else:
    hue = np.degrees(np.arctan2(np.sqrt(3) * (g - b), 2 * r - g - b)) % 360
    names = ((20, 'red'), (45, 'orange'), (70, 'yellow'), (160, 'green'), (200, 'cyan'),
             (260, 'blue'), (300, 'purple'), (340, 'pink'), (361, 'red'))
    name = next(n for limit, n in names if hue < limit)
  shape = {'ell': 'L-shape', 'plus': 'cross'}.get(spec.shape, spec.shape)
  return f'a {name} {shape}'


def dataset_plan(config: ml_collections.ConfigDict) -> dict[str, list[tuple[str, int]]]:
  """Split -> [(video id, label)]: numeric ids as in sthv2, classes interleaved."""
  d = config.demo
  num_classes = 2 * len(d.pairs)
  counts = {'train': int(d.videos_per_class), 'validation': int(d.val_videos_per_class)}
  plan, next_id = {}, 1
  for split in SPLITS:
    n = counts[split] * num_classes
    plan[split] = [(str(next_id + i), i % num_classes) for i in range(n)]
    next_id += n
  return plan


def video_spec(config: ml_collections.ConfigDict, split: str, index: int,
               label: int) -> VideoSpec:
  """The spec of video `index` of `split`: a pure function of (seed, split, index, label)."""
  rng = np.random.default_rng((int(config.demo.seed), SPLITS.index(split), index, label))
  return sample_spec(rng, label, config)


def fingerprint(config: ml_collections.ConfigDict) -> str:
  """A hash of everything that determines the dataset's content (the `config.demo` fields)."""
  blob = json.dumps({'format': _FORMAT, 'demo': config.demo.to_dict()}, sort_keys=True,
                    default=list)
  return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _annotation(vid: str, label: int, spec: VideoSpec, config) -> dict[str, Any]:
  template = templates(config)[label]
  thing = describe(spec)
  return {'id': vid, 'label': template.replace('[something]', thing), 'template': template,
          'placeholders': [thing]}


def write_dataset(raw_dir: str, config: ml_collections.ConfigDict) -> dict[str, Any]:
  """Writes the dataset of `config.demo` into `raw_dir` (sthv2 layout); returns the manifest.

  Idempotent and resumable: a finished dataset with the same fingerprint is left as it is; an
  interrupted one of the same settings keeps the videos already written (each is written to a
  temporary name and renamed). The manifest (`demo_data.json`: fingerprint, counts, class
  names) is written last. A dataset of other settings, finished or not, is an error
  (FileExistsError), never overwritten.
  """
  d = config.demo
  manifest_path = os.path.join(raw_dir, MANIFEST)
  fp = fingerprint(config)
  if os.path.exists(manifest_path):
    manifest = files.read_json(manifest_path)
    if manifest.get('fingerprint') == fp:
      manifest['skipped'] = True
      return manifest
    raise errors.ExistsError(f'{raw_dir} holds a demo dataset made with other settings '
                             f'(fingerprint {manifest.get("fingerprint")}, now {fp}): delete it or '
                             'choose another workdir')
  video_dir = os.path.join(raw_dir, VIDEO_DIR)
  label_dir = os.path.join(raw_dir, LABEL_DIR)
  partial_path = os.path.join(raw_dir, PARTIAL)
  if os.path.exists(partial_path):  # an interrupted run: its videos are reused if it was ours
    partial = files.read_json(partial_path).get('fingerprint')
    if partial != fp:
      raise errors.ExistsError(f'{raw_dir} holds an unfinished demo dataset made with other '
                               f'settings (fingerprint {partial}, now {fp}): delete it or choose '
                               'another workdir')
  os.makedirs(video_dir, exist_ok=True)
  os.makedirs(label_dir, exist_ok=True)
  files.write_json(partial_path, {'fingerprint': fp})
  names = templates(config)
  files.write_json(os.path.join(label_dir, 'labels.json'),
              {n: str(i) for i, n in enumerate(class_names(config))})
  counts = {}
  for split, items in dataset_plan(config).items():
    annotations = []
    for index, (vid, label) in enumerate(items):
      spec = video_spec(config, split, index, label)
      path = os.path.join(video_dir, f'{vid}.webm')
      if not os.path.exists(path):
        write_webm(path, render(spec, int(d.num_frames), int(d.frame_size)), int(d.fps))
      annotations.append(_annotation(vid, label, spec, config))
    files.write_json(os.path.join(label_dir, f'{split}.json'), annotations)
    counts[split] = len(annotations)
  manifest = {'fingerprint': fp, 'counts': counts, 'classes': names,
              'num_frames': int(d.num_frames), 'frame_size': int(d.frame_size)}
  files.write_json(manifest_path, manifest)
  os.remove(partial_path)
  return dict(manifest, skipped=False)
