"""Defaults shared by every recipe: the paper's STM-ResNet-50 at 8 frames, 224x224.

Dataset recipes import this and set what differs (class count, data paths, schedule).
Every field can be overridden on the command line, e.g. `--config.model.temporal_module=none`.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  """Returns the default config (STM-ResNet-50, T=8, 224x224)."""
  config = ml_collections.ConfigDict()
  # Seeds the initialisation, the data order and the augmentation (one seed fixes a run).
  config.seed = 0
  # Global batch (clips, or val/test views), split evenly over the hosts (paper: 8 GPUs x 8).
  config.batch_size = 64

  config.model = ml_collections.ConfigDict()
  # 50 or 101: ResNet depth (blocks per stage 3-4-6-3 or 3-4-23-3).
  config.model.depth = 50
  # none (TSN) | tsm | cstm | cmm | stm (summation fusion) | stm_concat (Table 6).
  config.model.temporal_module = 'stm'
  # channelwise (the paper's CSTM) | full (ordinary temporal conv, Table 8).
  config.model.temporal_conv = 'channelwise'
  # Which of the ResNet stages 2-5 get the temporal module (Table 7).
  config.model.stages = (2, 3, 4, 5)
  # True: only the first block of each chosen stage gets the module (Table 7).
  config.model.first_block_only = False
  # Base width (planes of stage 2). 64 is ResNet-50; tests use narrow widths.
  config.model.width = 64
  # Blocks per stage; empty means "from depth". Tests use (1, 1, 1, 1).
  config.model.blocks = ()
  # CMM channel reduction r (paper: 16). width // r must be >= 1.
  config.model.cmm_reduction = 16
  # TSM shifts 1/tsm_fold_div of the channels each way (TSM paper: 8).
  config.model.tsm_fold_div = 8
  # Which blocks `tsm` shifts. tsm: TSM's own rule (its code and mmaction2's): every block, but
  # only every other block of each stage when conv4_x has 23+ blocks (ResNet-101: 18 of 33).
  # every_block: all blocks at any depth.
  config.model.tsm_placement = 'tsm'
  # Dropout before the classifier (TSN/TSM: 0.5).
  config.model.dropout_rate = 0.5
  # The online (causal) variant: no frame's features depend on a later frame. CSTM's temporal
  # kernel sees t-1 and t (2 taps), CMM is the difference to the previous frame
  # (m_t = d_t - r_{t-1}), TSM shifts from the past only (TSM's online shift).
  config.model.causal = False
  # Compute dtype: auto (bfloat16 on GPU/TPU, float32 on CPU) | float32 | bfloat16. Parameters
  # and BN statistics stay float32. A run records the dtype it used in its config.json.
  config.model.dtype = 'auto'
  # How channel-wise (grouped/depthwise) convs are computed: auto | shift | grouped.
  # Both give the same numbers; auto picks the faster one measured on the backend
  # (docs/benchmarks.md).
  config.model.channelwise_impl = 'auto'

  config.data = ml_collections.ConfigDict()
  # The dataset's name: its layout reader (prepare) and its folder stm_<dataset> in data_dir.
  config.data.dataset = 'sthv1'
  # Classes of the dataset (checked against the prepared dataset).
  config.data.num_classes = 174
  # T: frames per clip (one per TSN segment).
  config.data.num_frames = 8
  # Side of the square clips the network sees.
  config.data.crop_size = 224
  # Flip policy: False where left/right is part of the label (Something-Something, Jester).
  config.data.random_flip = True
  # Optional label swap applied with a flip: pairs (label, label after flip), e.g.
  # ((86, 87), (87, 86)).
  config.data.flip_label_map = ()
  # Loading (input_pipeline/pipeline.py). Train: TSN sampling + multi-scale crop; val: segment
  # centres, centre crop; test: num_clips x num_crops views per video (paper 4.2: 10 x 3).
  # Multi-scale crop (TSN/TSM): the crop's sides are these fractions of the short side...
  config.data.scales = (1.0, 0.875, 0.75, 0.66)
  # ...with the two sides at most this many scale steps apart (aspect jitter).
  config.data.max_distort = 1
  # 13 crop positions (TSM's default) instead of the 4 corners and the centre.
  config.data.more_fix_crop = False
  # The split `launch.py --mode=eval` reads ('validation', or 'test' where it is labelled).
  config.data.eval_split = 'validation'
  # The test protocol's views (input_pipeline/protocols.py): clips spread inside the segments...
  config.data.num_clips = 10
  # ...x 1 (centre) or 3 (both ends and centre of the long side) crops of the full short side,
  # resized to crop_size.
  config.data.num_crops = 3
  # Where the test clips sit inside each segment (input_pipeline/sampling.py). even: clip c of
  # num_clips at (c + 1/2) / num_clips (ours); tsm_twice: TSM's and mmaction2's twice_sample, two
  # clips at 1/2 and at 0 of each segment (needs num_clips = 2).
  config.data.test_clip_offsets = 'even'
  # grain worker processes building batches: -1 = auto (hosts with GPUs/TPUs: one a core but
  # two; CPU-only: 0), 0 = in this process (pipeline.loader_size; README "Throughput").
  config.data.num_workers = -1
  # Threads building batches in each loading process (decode and resize release the GIL);
  # 0 = auto (2).
  config.data.num_threads = 0

  # Preparation (`launch.py --mode=prepare`, input_pipeline/prepare/converter.py).
  # Where the official download was unpacked; the converter finds its files inside.
  config.data.raw_dir = ''
  # TFDS data_dir: the prepared dataset goes to <data_dir>/stm_<dataset>[/split<k>]/1.0.0. A
  # local folder or a bucket (gs://...); empty: $TFDS_DATA_DIR. With format 'tfrecord' it may
  # also be a folder of DMVR TFRecord shards themselves (split in the file names).
  config.data.data_dir = ''
  # The format training and evaluation read: 'array_record' (a TFDS dataset, what prepare writes
  # by default) | 'tfrecord' (DMVR/scenic SequenceExample shards, read in place through an offset
  # index; docs/data.md says when to pick which).
  config.data.format = 'array_record'
  # prepare: the format to write ('array_record' | 'tfrecord'); empty: data.format.
  config.data.output_format = ''
  # native: the dataset's own layout | tfrecord: DMVR/scenic SequenceExample TFRecord files.
  config.data.raw_format = 'native'
  # Official split for UCF-101 / HMDB-51 (1, 2 or 3); ignored elsewhere.
  config.data.split = 1
  # Frames are stored as JPEG with this shorter side (never upscaled); JPEG input already at or
  # under it is copied byte for byte. Training, eval, predict and visualize cut their clips from
  # frames resized to it, whatever size they were stored at (larger: area-resized; smaller:
  # upscaled, with a warning).
  config.data.short_side = 256
  # The short side the frames were (or are to be) stored at, when it is not short_side (0: it
  # is): prepare stores at it, and predict/visualize store a raw video's frames at it before
  # cutting views, so that they equal eval's of the prepared video. E.g. data prepared at 256 and a
  # run at short_side 128: stored_short_side=256.
  config.data.stored_short_side = 0
  # JPEG quality of re-encoded frames (prepare, and predict on raw videos).
  config.data.jpeg_quality = 90
  # prepare: store at most this many frames a second of video (0 = every frame). Frames are
  # dropped evenly (the first at or after each 1/max_fps s; input_pipeline/video.py:keeps_frame)
  # and `fps` records the stored rate. Saves disk and prepare time only: reads cost the same for
  # any video length (docs/data.md says when a cap keeps the paper's sampling).
  config.data.max_fps = 0.0
  # Videos per ArrayRecord shard: the unit of parallel work and of resumption.
  config.data.videos_per_shard = 128
  # prepare: worker processes converting shards; 0 = one per CPU core.
  config.data.prepare_workers = 0
  # prepare: replace an existing dataset made from other annotations or settings.
  config.data.overwrite = False

  # Training (`launch.py --mode=train`, stm_jax/train/; paper 4.2, docs/design.md section 4).
  config.optim = ml_collections.ConfigDict()
  # Learning rate for a global batch of 64 clips; the run uses base_lr * batch_size / 64.
  config.optim.base_lr = 0.01
  # SGD momentum (PyTorch's form: buf = momentum * buf + grad).
  config.optim.momentum = 0.9
  # Nesterov momentum instead of the heavy ball.
  config.optim.nesterov = False
  # L2 weight decay, added to the gradient before momentum (PyTorch SGD).
  config.optim.weight_decay = 5e-4
  # False: decay conv/dense kernels only, not BatchNorm scales/offsets nor biases (TSM's code);
  # True: decay every parameter.
  config.optim.decay_all_params = False
  # Passes over the training split.
  config.optim.epochs = 50
  # The learning rate is multiplied by decay_factor at the start of each of these epochs.
  config.optim.decay_epochs = (30, 40, 45)
  config.optim.decay_factor = 0.1
  # Linear warmup from base/warmup_steps to the scheduled rate over this many epochs (0 = none).
  config.optim.warmup_epochs = 0.0
  # Clip the gradient to this global L2 norm before weight decay (0 = off; TSM uses 20).
  config.optim.clip_grad_norm = 0.0
  # Split each global batch into this many sequential micro-batches, one update per batch
  # (BatchNorm statistics are then per micro-batch).
  config.optim.grad_accum_steps = 1

  # Run bookkeeping. A checkpoint every this many steps (and on SIGTERM and at the end).
  config.checkpoint_every_steps = 1000
  # Checkpoints kept in <workdir>/checkpoints (the oldest are deleted).
  config.keep_checkpoints = 3
  # A console line, TensorBoard and metrics.jsonl entry every this many steps.
  config.log_every_steps = 50
  # Trace training steps (first, last) with jax.profiler into <workdir>/tensorboard/plugins/
  # profile (TensorBoard's profile tab); () = off. Step 1 includes compilation: trace later ones.
  config.profile_steps = ()
  # JAX's persistent compilation cache, so that a resumed run does not recompile: auto =
  # $JAX_COMPILATION_CACHE_DIR if set, else <workdir>/compilation_cache (a bucket works); '' = off.
  config.compilation_cache_dir = 'auto'
  # Evaluate on the eval split (val protocol) every this many epochs (may be fractional; 0 =
  # never) and keep the best top-1 checkpoint in <workdir>/best.
  config.eval_every_epochs = 1.0
  # '' = from scratch; else a directory written by `launch.py --mode=convert` (ImageNet init).
  config.init_checkpoint = ''
  # --mode=train in a workdir whose config.json describes another model or dataset (any model
  # field but dtype/channelwise_impl/dropout_rate; data.dataset, split, num_classes) refuses to
  # start unless this is True; checkpoints of another architecture are never restored anyway.
  # Fine-tuning is config.init_checkpoint=<run> into a new workdir.
  config.allow_config_change = False

  # Weight import (`launch.py --mode=convert`, stm_jax/tools/convert.py).
  config.convert = ml_collections.ConfigDict()
  # False: a whole video checkpoint (TSN, TSM, STM...) must be the model the config describes, else
  # the conversion stops naming the overrides that fit it. True: load only its backbone (convs,
  # BN, and fc where the class count matches) into the config's model; its temporal modules keep
  # their initialisation. ImageNet ResNet weights are always loaded this way.
  config.convert.backbone_only = False
  return config


def use_fine_tune_schedule(config: ml_collections.ConfigDict) -> None:
  """Sets the paper's UCF-101/HMDB-51 schedule (4.2): from Kinetics weights, lr 0.001 for 25
  epochs, x0.1 every 15. Set `config.init_checkpoint` to Kinetics STM weights converted with
  `launch.py --mode=convert`."""
  config.optim.base_lr = 0.001
  config.optim.epochs = 25
  config.optim.decay_epochs = (15,)
