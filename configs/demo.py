"""The out-of-the-box demo (`python launch.py` with no flags; stm_jax/demo/comparison.py).

Synthetic videos whose classes come in time-reversed pairs (stm_jax/demo/videos.py), in the
Something-Something v2 layout; tiny TSN, CSTM, CMM and STM networks, each trained to convergence
on CPU. Sized to finish within 10 minutes on 2 CPU cores (8 min 27 s measured on a 2-core
development machine: 33 s writing the videos, 17 s preparing them, 67-199 s per model).

`configs/demo.py:quick` is a shorter version (the four models on the two pairs they learn fastest)
that the tests run.
"""

import ml_collections

from configs import default


def get_config(variant: str = 'full') -> ml_collections.ConfigDict:
  """Returns the demo recipe ('full' or 'quick'): the data generator's settings in
  `config.demo`, the rest as usual."""
  config = default.get_config()
  config.seed = 0

  demo = config.demo = ml_collections.ConfigDict()
  # Which model variants to compare (config.model.temporal_module values), in table order.
  demo.models = ('none', 'cstm', 'cmm', 'stm')
  # Pairs of classes that are each other's time reversal (demo_data.PAIRS): 2 classes each.
  demo.pairs = ('left_right', 'approach', 'rotate', 'appear')
  demo.videos_per_class = 128  # training videos per class
  demo.val_videos_per_class = 16
  demo.seed = 0  # the dataset's seed (training uses config.seed)
  # Frames per video file: an odd multiple of data.num_frames, so that both the training
  # segments and the validation segment centres are mirror-symmetric in time (TSN then sees a
  # video and its time reversal through the same frame distribution).
  demo.num_frames = 24
  demo.frame_size = ml_collections.FieldReference(40)  # videos are frame_size x frame_size px
  demo.fps = 12
  demo.shapes = ('square', 'triangle', 'bar', 'plus', 'ell', 'circle')
  demo.backgrounds = ('solid', 'gradient', 'noise')
  # Object radius as a fraction of the frame side.
  demo.min_radius = 0.18
  demo.max_radius = 0.28
  # Colours of object and background are at least this far apart (RGB Euclidean, 0-441).
  demo.min_contrast = 150.0
  # The motion fills a random window of at least this fraction of the video.
  demo.min_motion_fraction = 0.6
  # left_right: distance travelled, as a fraction of the frame side.
  demo.min_travel = 0.25
  demo.max_travel = 0.5
  # approach: the object's size grows by this factor (receding: shrinks by it).
  demo.min_growth = 2.0
  demo.max_growth = 4.0
  # rotate: degrees turned over the motion.
  demo.min_turn = 90.0
  demo.max_turn = 180.0
  # appear: half the videos only fade in; the others also scale up from this fraction or more.
  demo.min_appear_scale = 0.3

  config.data.dataset = 'sthv2'
  config.data.num_frames = 8
  config.data.short_side = demo.get_ref('frame_size')  # frames stored as generated
  config.data.crop_size = 32
  # Multi-scale crop scales (default: 1, .875, .75, .66): the smallest would cut too much of
  # these small frames.
  config.data.scales = (1.0, 0.875, 0.75)
  # Left/right is in the labels.
  config.data.random_flip = False
  config.data.videos_per_shard = 64
  config.data.prepare_workers = 1

  config.model.width = 16
  config.model.blocks = (1, 1, 1, 1)
  config.model.cmm_reduction = 4
  config.model.dropout_rate = 0.0

  config.batch_size = 16
  config.optim.base_lr = 0.1
  # Each compared model trains until it has converged on this task (measured; README): CSTM's
  # temporal kernels start as a shift and need three times TSN's, CMM's and STM's budget.
  # TSN cannot go above chance within pairs at any budget (its logits ignore frame order).
  demo.epochs = ml_collections.ConfigDict({'none': 12, 'tsm': 12, 'cstm': 36, 'cmm': 12,
                                            'stm': 12, 'stm_concat': 12})
  # The learning rate drops x0.1 at these fractions of a model's epochs (12 epochs: 9 and 11).
  demo.decay_at = (0.75, 11 / 12)
  config.optim.epochs = 12  # Replaced per model by demo.epochs.
  config.optim.decay_epochs = (9, 11)
  config.optim.warmup_epochs = 1.0
  config.optim.weight_decay = 1e-4

  config.eval_every_epochs = 0.0
  config.checkpoint_every_steps = 200
  config.keep_checkpoints = 1
  config.log_every_steps = 50

  if variant == 'quick':
    demo.pairs = ('left_right', 'appear')
    demo.videos_per_class = 96
    demo.val_videos_per_class = 32
    demo.epochs = ml_collections.ConfigDict({'none': 10, 'tsm': 10, 'cstm': 30, 'cmm': 10,
                                              'stm': 10, 'stm_concat': 10})
    demo.decay_at = (0.7, 0.9)
    config.optim.epochs = 10
    config.optim.decay_epochs = (7, 9)
  elif variant != 'full':
    raise ValueError(f'configs/demo.py: variant {variant!r} is not full or quick')
  config.data.num_classes = 2 * len(demo.pairs)
  return config
