"""A PyTorch (eager, CPU) reference of the STM network family, for weight-conversion parity tests.

Written from docs/design.md section 1, not from the JAX code, with the authors' PyTorch key layout
(`layer1.0.conv1`, `layer1.0.shift`, `layer1.0.mb.stage_conv`, `layer1.0.downsample.0`, `fc`...),
so that a state dict of this model is what `stm_jax.convert.from_torch` reads. A TSM block wraps
its first conv in the shift, as TSM's code does (`layer1.0.conv1.net.weight`).
"""

import math

import torch
from torch import nn
import torch.nn.functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_USES_CSTM = ('cstm', 'stm', 'stm_concat')
_USES_CMM = ('cmm', 'stm', 'stm_concat')


def _clips(x: torch.Tensor, num_frames: int) -> torch.Tensor:
  """Frames `(N*T, C, H, W)` -> clips `(N, T, C, H, W)`."""
  return x.view(-1, num_frames, *x.shape[1:])


def temporal_shift(x: torch.Tensor, num_frames: int, fold_div: int) -> torch.Tensor:
  """TSM: channels [0, fold) take x[t+1], [fold, 2 fold) take x[t-1], zeros at the ends."""
  clips = _clips(x, num_frames)
  fold = clips.shape[2] // fold_div
  out = torch.zeros_like(clips)
  out[:, :-1, :fold] = clips[:, 1:, :fold]
  out[:, 1:, fold:2 * fold] = clips[:, :-1, fold:2 * fold]
  out[:, :, 2 * fold:] = clips[:, :, 2 * fold:]
  return out.view_as(x)


class ShiftThen(nn.Module):
  """TSM's wrapper: shifts its input in time, then runs `net` (so `net`'s keys gain `.net.`)."""

  def __init__(self, net: nn.Module, num_frames: int, fold_div: int):
    super().__init__()
    self.net = net
    self.num_frames = num_frames
    self.fold_div = fold_div

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    """`net(temporal_shift(x))`."""
    return self.net(temporal_shift(x, self.num_frames, self.fold_div))


class CMM(nn.Module):
  """Channel-wise motion: `m_t = depthwise3x3(r)_{t+1} - r_t`, `m_{T-1} = 0`, a 1x1 conv, pooled."""

  def __init__(self, planes: int, reduced: int, num_frames: int, stride: int):
    super().__init__()
    self.num_frames = num_frames
    self.stride = stride
    self.stage_conv = nn.Conv2d(planes, reduced, 1, bias=False)
    self.stage_bn = nn.BatchNorm2d(reduced)
    self.shift = nn.Conv2d(reduced, reduced, 3, padding=1, groups=reduced, bias=False)
    self.conv1x1 = nn.Conv2d(reduced, planes, 1, bias=False)

  def forward(self, u: torch.Tensor) -> torch.Tensor:
    """Returns the motion branch `b` for the block's reduced features `u`."""
    r = self.stage_bn(self.stage_conv(u))
    d = self.shift(r)
    r, d = _clips(r, self.num_frames), _clips(d, self.num_frames)
    m = torch.zeros_like(r)
    m[:, :-1] = d[:, 1:] - r[:, :-1]
    b = self.conv1x1(m.view(-1, *m.shape[2:]))
    if self.stride == 2:  # Ceil mode: meets the strided 3x3's output at odd sizes too.
      b = F.max_pool2d(b, 2, 2, ceil_mode=True)
    return b


class Bottleneck(nn.Module):
  """ResNet v1 bottleneck (stride on the 3x3) with one temporal module, as docs/design.md section 1."""

  def __init__(self, inplanes: int, planes: int, stride: int, downsample: bool, module: str,
               temporal_conv: str, num_frames: int, cmm_reduction: int, tsm_fold_div: int):
    super().__init__()
    self.module = module
    self.num_frames = num_frames
    self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
    if module == 'tsm':  # The shortcut reads the unshifted input.
      self.conv1 = ShiftThen(self.conv1, num_frames, tsm_fold_div)
    self.bn1 = nn.BatchNorm2d(planes)
    self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
    self.bn2 = nn.BatchNorm2d(planes)
    self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
    self.bn3 = nn.BatchNorm2d(planes * 4)
    if module in _USES_CSTM:
      groups = planes if temporal_conv == 'channelwise' else 1
      self.shift = nn.Conv1d(planes, planes, 3, padding=1, groups=groups, bias=False)
    if module in _USES_CMM:
      self.mb = CMM(planes, planes // cmm_reduction, num_frames, stride)
    if module == 'stm_concat':
      self.fuse = nn.Conv2d(2 * planes, planes, 1, bias=False)
    self.downsample = None
    if downsample:
      self.downsample = nn.Sequential(
          nn.Conv2d(inplanes, planes * 4, 1, stride=stride, bias=False), nn.BatchNorm2d(planes * 4))

  def _temporal_conv(self, u: torch.Tensor) -> torch.Tensor:
    """Conv1d over T at every pixel: `(N*T, C, H, W)` -> `(N*H*W, C, T)` and back."""
    clips = _clips(u, self.num_frames)
    n, t, c, h, w = clips.shape
    seq = clips.permute(0, 3, 4, 2, 1).reshape(n * h * w, c, t)
    out = self.shift(seq).view(n, h, w, c, t).permute(0, 4, 3, 1, 2)
    return out.reshape(n * t, c, h, w)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    """Returns `relu(bn3(conv3(fused branches)) + shortcut(x))`."""
    shortcut = x if self.downsample is None else self.downsample(x)
    u = F.relu(self.bn1(self.conv1(x)))
    v = self._temporal_conv(u) if self.module in _USES_CSTM else u
    a = F.relu(self.bn2(self.conv2(v)))
    if self.module in _USES_CMM:
      b = self.mb(u)
      a = self.fuse(torch.cat([a, b], dim=1)) if self.module == 'stm_concat' else a + b
    return F.relu(self.bn3(self.conv3(a)) + shortcut)


class TorchSTMResNet(nn.Module):
  """STM-ResNet in PyTorch: clips `(B, T, H, W, 3)` in [0, 255] -> logits `(B, num_classes)`."""

  def __init__(self, num_classes, num_frames, blocks=(3, 4, 6, 3), width=64,
               temporal_module='stm', temporal_conv='channelwise', stages=(2, 3, 4, 5),
               first_block_only=False, cmm_reduction=16, tsm_fold_div=8, dropout_rate=0.5):
    super().__init__()
    self.num_frames = num_frames
    self.register_buffer('mean', torch.tensor(IMAGENET_MEAN) * 255, persistent=False)
    self.register_buffer('std', torch.tensor(IMAGENET_STD) * 255, persistent=False)
    self.conv1 = nn.Conv2d(3, width, 7, stride=2, padding=3, bias=False)
    self.bn1 = nn.BatchNorm2d(width)
    inplanes = width
    for index, num_blocks in enumerate(blocks):
      stage, planes = index + 2, width * 2**index
      layer = []
      for block in range(num_blocks):
        with_module = stage in stages and (block == 0 or not first_block_only)
        layer.append(Bottleneck(
            inplanes, planes, stride=2 if block == 0 and index > 0 else 1, downsample=block == 0,
            module=temporal_module if with_module else 'none', temporal_conv=temporal_conv,
            num_frames=num_frames, cmm_reduction=cmm_reduction, tsm_fold_div=tsm_fold_div))
        inplanes = planes * 4
      setattr(self, f'layer{index + 1}', nn.Sequential(*layer))
    self.dropout = nn.Dropout(dropout_rate)
    self.fc = nn.Linear(inplanes, num_classes)

  def forward(self, clips: torch.Tensor) -> torch.Tensor:
    """Normalises, runs every frame through the network and averages the logits over T."""
    batch, frames = clips.shape[:2]
    x = ((clips.float() - self.mean) / self.std).permute(0, 1, 4, 2, 3).flatten(0, 1)
    x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 3, stride=2, padding=1)
    for index in range(1, 5):
      x = getattr(self, f'layer{index}')(x)
    x = self.fc(self.dropout(x.mean(dim=(2, 3))))
    return x.view(batch, frames, -1).mean(dim=1)


@torch.no_grad()
def randomize_(model: nn.Module, seed: int = 0) -> nn.Module:
  """Draws every weight and BN statistic at random, so parity tests cannot pass by symmetry.

  Weights ~ N(0, 2 / fan_in) (He, keeps activations at scale), biases ~ N(0, 0.1); BN weight
  ~ U(0.5, 1.5), bias ~ N(0, 0.1), running mean ~ N(0, 0.1), running var ~ U(0.5, 1.5).
  Returns the model, in eval mode.
  """
  gen = torch.Generator().manual_seed(seed)
  normal = lambda t, std: t.copy_(torch.randn(t.shape, generator=gen) * std)
  uniform = lambda t: t.copy_(torch.rand(t.shape, generator=gen) + 0.5)
  for module in model.modules():
    if isinstance(module, nn.BatchNorm2d):
      uniform(module.weight)
      normal(module.bias, 0.1)
      normal(module.running_mean, 0.1)
      uniform(module.running_var)
    elif isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Linear)):
      normal(module.weight, math.sqrt(2.0 / module.weight[0].numel()))
      if module.bias is not None:
        normal(module.bias, 0.1)
  return model.eval()
