"""PyTorch (eager, CPU) references of the peers' own TSN and TSM models, for conversion parity.

Written for the tests from the peers' published architecture and key layouts, not from the JAX
code (and not copied from the peers' code):

- TSM's repository (mit-han-lab/temporal-shift-module, `ops/models.py:TSN`,
  `ops/temporal_shift.py`): a torchvision ResNet (`base_model`, stride on the 3x3 conv) whose
  blocks get TSM's residual shift by `make_temporal_shift(place='blockres')`, which wraps a block's
  `conv1` as `conv1.net` (shift first, then the conv) in every block of every stage, except that
  when `layer3` has 23 or more blocks (`n_round = 2`) only blocks with `index % 2 == 0` are
  wrapped. `base_model.fc` becomes a dropout and `new_fc` classifies every frame; the consensus
  averages the frames' logits. Input: RGB / 255, minus ImageNet mean, over ImageNet std.
- mmaction2 (`Recognizer2D` with `backbone=ResNet` or `ResNetTSM`, `cls_head=TSNHead` or
  `TSMHead`): every conv with its BN is a ConvModule (`conv`, `bn`; ReLU except after `conv3` and
  the `downsample`), stride on the 3x3 conv (style 'pytorch'). `ResNetTSM` (`shift_div=8`,
  `shift_place='blockres'`) wraps the conv inside a block's first ConvModule (`conv1.conv.net`)
  with the same `n_round` rule. `TSMHead`: pool, dropout, `fc_cls` per frame, mean over frames;
  `TSNHead`: pool, mean of the frames' features, dropout, `fc_cls`. Input: RGB minus
  (123.675, 116.28, 103.53), over (58.395, 57.12, 57.375).

Both take clips `(B, T, H, W, 3)` in [0, 255] and return logits `(B, num_classes)`;
`torch_stm.randomize_` draws their weights and BN statistics.
"""

import torch
from torch import nn
import torch.nn.functional as F

from tests import torch_stm

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
MMACTION2_MEAN = (123.675, 116.28, 103.53)
MMACTION2_STD = (58.395, 57.12, 57.375)
BLOCKS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}


def shifted_blocks(blocks) -> set[tuple[int, int]]:
  """TSM's blockres placement, as its code states it: `n_round` is 2 when the third stage has 23
  or more blocks, else 1; block `i` of every stage is shifted when `i % n_round == 0`."""
  n_round = 2 if blocks[2] >= 23 else 1
  return {(stage, i) for stage, count in enumerate(blocks) for i in range(count)
          if i % n_round == 0}


class TorchvisionBottleneck(nn.Module):
  """torchvision's ResNet v1.5 bottleneck (conv1/bn1, conv2/bn2 with the stride, conv3/bn3)."""

  def __init__(self, inplanes: int, planes: int, stride: int):
    super().__init__()
    self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(planes)
    self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
    self.bn2 = nn.BatchNorm2d(planes)
    self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
    self.bn3 = nn.BatchNorm2d(planes * 4)
    self.downsample = None
    if stride != 1 or inplanes != planes * 4:
      self.downsample = nn.Sequential(nn.Conv2d(inplanes, planes * 4, 1, stride=stride, bias=False),
                                      nn.BatchNorm2d(planes * 4))

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    """`relu(bn3(conv3(...(x))) + shortcut(x))`."""
    out = F.relu(self.bn1(self.conv1(x)))
    out = F.relu(self.bn2(self.conv2(out)))
    out = self.bn3(self.conv3(out))
    return F.relu(out + (x if self.downsample is None else self.downsample(x)))


class ConvModule(nn.Module):
  """mmcv's ConvModule as mmaction2's ResNet builds it: `conv` (no bias), `bn`, optional ReLU."""

  def __init__(self, inplanes: int, planes: int, kernel: int, stride: int = 1, relu: bool = True):
    super().__init__()
    self.conv = nn.Conv2d(inplanes, planes, kernel, stride=stride, padding=kernel // 2, bias=False)
    self.bn = nn.BatchNorm2d(planes)
    self.relu = relu

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    """`relu(bn(conv(x)))` (without the ReLU where `relu` is False)."""
    x = self.bn(self.conv(x))
    return F.relu(x) if self.relu else x


class MMBottleneck(nn.Module):
  """mmaction2's ResNet bottleneck (style 'pytorch': the stride on conv2)."""

  def __init__(self, inplanes: int, planes: int, stride: int):
    super().__init__()
    self.conv1 = ConvModule(inplanes, planes, 1)
    self.conv2 = ConvModule(planes, planes, 3, stride=stride)
    self.conv3 = ConvModule(planes, planes * 4, 1, relu=False)
    self.downsample = None
    if stride != 1 or inplanes != planes * 4:
      self.downsample = ConvModule(inplanes, planes * 4, 1, stride=stride, relu=False)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    """`relu(conv3(conv2(conv1(x))) + shortcut(x))`."""
    out = self.conv3(self.conv2(self.conv1(x)))
    return F.relu(out + (x if self.downsample is None else self.downsample(x)))


def _stages(module: nn.Module, block, depth: int) -> None:
  """Adds `layer1`..`layer4` of a ResNet-`depth` built from `block` to `module`."""
  inplanes = 64
  for index, count in enumerate(BLOCKS[depth]):
    planes = 64 * 2**index
    layer = []
    for i in range(count):
      layer.append(block(inplanes, planes, 2 if i == 0 and index > 0 else 1))
      inplanes = planes * 4
    setattr(module, f'layer{index + 1}', nn.Sequential(*layer))


def _stages_forward(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
  """Runs `layer1`..`layer4`."""
  for index in range(1, 5):
    x = getattr(module, f'layer{index}')(x)
  return x


class TorchvisionResNet(nn.Module):
  """torchvision's ResNet-50/101 layout (`conv1`, `bn1`, `layer1`..`layer4`, `fc`)."""

  def __init__(self, depth: int):
    super().__init__()
    self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
    self.bn1 = nn.BatchNorm2d(64)
    _stages(self, TorchvisionBottleneck, depth)
    self.fc = nn.Dropout(0.5)  # TSM's TSN replaces fc by a dropout (its new_fc classifies).

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    """Frames -> pooled, dropped-out features `(N*T, 2048)`."""
    x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 3, stride=2, padding=1)
    return self.fc(_stages_forward(self, x).mean(dim=(2, 3)))


class TSMRepoTSN(nn.Module):
  """TSM's `TSN` model, TSN (`is_shift=False`) or TSM (`is_shift=True`, `shift_place='blockres'`):
  state dict keys `base_model.*` and `new_fc.*`, shifted convs as `...conv1.net.weight`."""

  def __init__(self, num_classes: int, num_segments: int, depth: int = 50, is_shift: bool = True,
               shift_div: int = 8):
    super().__init__()
    self.num_segments = num_segments
    self.base_model = TorchvisionResNet(depth)
    if is_shift:
      for stage, i in shifted_blocks(BLOCKS[depth]):
        block = getattr(self.base_model, f'layer{stage + 1}')[i]
        block.conv1 = torch_stm.ShiftThen(block.conv1, num_segments, shift_div)
    self.new_fc = nn.Linear(2048, num_classes)
    self.register_buffer('mean', torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
    self.register_buffer('std', torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

  def forward(self, clips: torch.Tensor) -> torch.Tensor:
    """Clips `(B, T, H, W, 3)` in [0, 255] -> logits `(B, classes)`: per-frame, averaged."""
    batch = clips.shape[0]
    x = clips.float().permute(0, 1, 4, 2, 3).flatten(0, 1) / 255.0
    x = (x - self.mean) / self.std
    out = self.new_fc(self.base_model(x))
    return out.view(batch, self.num_segments, -1).mean(dim=1)


class MMResNet(nn.Module):
  """mmaction2's `ResNet` / `ResNetTSM` backbone (`conv1` a ConvModule, `layer1`..`layer4`)."""

  def __init__(self, depth: int, num_segments: int, is_shift: bool, shift_div: int = 8):
    super().__init__()
    self.conv1 = ConvModule(3, 64, 7, stride=2)
    _stages(self, MMBottleneck, depth)
    if is_shift:
      for stage, i in shifted_blocks(BLOCKS[depth]):
        block = getattr(self, f'layer{stage + 1}')[i]
        block.conv1.conv = torch_stm.ShiftThen(block.conv1.conv, num_segments, shift_div)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    """Frames -> feature maps `(N*T, 2048, h, w)`."""
    x = F.max_pool2d(self.conv1(x), 3, stride=2, padding=1)
    return _stages_forward(self, x)


class MMHead(nn.Module):
  """mmaction2's `TSMHead` (`is_shift`: fc per frame, then the mean) or `TSNHead` (the mean of the
  frames' features, then fc); both hold `fc_cls`."""

  def __init__(self, num_classes: int, num_segments: int, is_shift: bool):
    super().__init__()
    self.num_segments = num_segments
    self.is_shift = is_shift
    self.dropout = nn.Dropout(0.5)
    self.fc_cls = nn.Linear(2048, num_classes)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    """Feature maps `(N*T, 2048, h, w)` -> logits `(N, classes)`."""
    x = x.mean(dim=(2, 3))
    if self.is_shift:
      return self.fc_cls(self.dropout(x)).view(-1, self.num_segments, self.fc_cls.out_features
                                               ).mean(dim=1)
    x = x.view(-1, self.num_segments, x.shape[-1]).mean(dim=1)
    return self.fc_cls(self.dropout(x))


class MMRecognizer2D(nn.Module):
  """mmaction2's TSN (`is_shift=False`: ResNet + TSNHead) or TSM (ResNetTSM + TSMHead):
  state dict keys `backbone.*` and `cls_head.fc_cls.*`."""

  def __init__(self, num_classes: int, num_segments: int, depth: int = 50, is_shift: bool = True,
               shift_div: int = 8):
    super().__init__()
    self.backbone = MMResNet(depth, num_segments, is_shift, shift_div)
    self.cls_head = MMHead(num_classes, num_segments, is_shift)
    self.register_buffer('mean', torch.tensor(MMACTION2_MEAN).view(1, 3, 1, 1), persistent=False)
    self.register_buffer('std', torch.tensor(MMACTION2_STD).view(1, 3, 1, 1), persistent=False)

  def forward(self, clips: torch.Tensor) -> torch.Tensor:
    """Clips `(B, T, H, W, 3)` in [0, 255] -> logits `(B, classes)`."""
    x = clips.float().permute(0, 1, 4, 2, 3).flatten(0, 1)
    return self.cls_head(self.backbone((x - self.mean) / self.std))
