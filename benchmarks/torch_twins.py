"""Independent PyTorch versions of the PyTorch-origin networks, written from the official code
(VDIGPKU/QGCN nets/qmar.py, qmarg.py, edsr.py, arcnn.py; TsengMJ/Image_Compressor Src/Model.py) and
torchvision's VGG19 layout, not from the Flax code; and DACAR3/4/5's plain conv stacks
(Fatma-ALbluwi/DACAR-SACAR-models).

Attribute names reproduce the official state_dict keys, so `state_dict()` here is what the original
repositories save. Parity tests (tests/, through tests/optional.py) convert their weights to Flax;
benchmarks reuse them as the PyTorch side of speed comparisons (`create`), so each takes the same
options as `jaxcar.models.create`.
"""

import functools

import torch
from torch import nn

COLOR_CHANNELS = {"rgb": 3, "grey": 1}
QUANTIZATION_MAP_CHANNELS = {3: 2, 1: 1}


DACAR_LAYERS = {  # DACAR_train.py: (kernel, features) of each 'same' conv
    "dacar3": ((9, 64), (7, 32), (5, 1)),
    "dacar4": ((9, 64), (3, 32), (3, 32), (5, 1)),
    "dacar5": ((9, 32), (5, 32), (5, 32), (5, 32), (5, 1)),
}


class DACAR(nn.Sequential):
  """DACAR3/4/5 (`DACAR_train.py`): one grey channel in and out, LeakyReLU(0.3) between the convs (the
  Keras training activation) or ReLU (`activation="relu"`, as the MatConvNet test code runs them)."""

  def __init__(self, variant="dacar3", activation="leaky_relu"):
    layers, width = [], 1
    spec = DACAR_LAYERS[variant]
    for i, (kernel, features) in enumerate(spec):
      layers.append(nn.Conv2d(width, features, kernel, padding=kernel // 2))
      if i < len(spec) - 1:
        layers.append(nn.LeakyReLU(0.3) if activation == "leaky_relu" else nn.ReLU())
      width = features
    super().__init__(*layers)


class ARCNN(nn.Module):
  """QGCN repo `nets/arcnn.py`: 9-7-1-5 convs, 64-32-16 features, a separate PReLU after each hidden conv."""

  def __init__(self, color="rgb"):
    super().__init__()
    channels = COLOR_CHANNELS[color]
    self.base = nn.Sequential(
        nn.Conv2d(channels, 64, 9, padding=4), nn.PReLU(),
        nn.Conv2d(64, 32, 7, padding=3), nn.PReLU(),
        nn.Conv2d(32, 16, 1), nn.PReLU())
    self.last = nn.Conv2d(16, channels, 5, padding=2)

  def forward(self, x):
    return self.last(self.base(x))


class ResidualBlock(nn.Module):
  def __init__(self, features=64, res_scale=0.1):
    super().__init__()
    self.conv1 = nn.Conv2d(features, features, 3, padding=1, bias=False)
    self.relu = nn.ReLU(inplace=True)
    self.conv2 = nn.Conv2d(features, features, 3, padding=1, bias=False)
    self.res_scale = res_scale

  def forward(self, x):
    return x + self.conv2(self.relu(self.conv1(x))) * self.res_scale


def _upscale(features):
  return nn.Sequential(nn.Conv2d(features, features * 4, 3, padding=1), nn.PixelShuffle(2))


def _downscale(features):
  return nn.Sequential(nn.Conv2d(features, features, 4, stride=2, padding=1, bias=False), nn.ReLU(inplace=True))


class QCN(nn.Module):
  """`nets/qmar.py`: input = image + quantization maps; one stride-2 level; long skip from conv_input."""

  def __init__(self, color="rgb", num_blocks=64, features=64, with_maps=True):
    super().__init__()
    channels = COLOR_CHANNELS[color]
    in_channels = channels + (QUANTIZATION_MAP_CHANNELS[channels] if with_maps else 0)
    self.conv_input = nn.Conv2d(in_channels, features, 3, padding=1, bias=False)
    self.downscale = _downscale(features)
    self.residual = nn.Sequential(*[ResidualBlock(features) for _ in range(num_blocks)])
    self.conv_mid = nn.Conv2d(features, features, 3, padding=1, bias=False)
    self.upscale = _upscale(features)
    self.conv_output = nn.Conv2d(features, channels, 3, padding=1, bias=False)

  def forward(self, x):
    skip = self.conv_input(x)
    out = self.conv_mid(self.residual(self.downscale(skip)))
    return self.conv_output(self.upscale(out) + skip)


class EDSR(QCN):
  """`nets/edsr.py`: QCN without quantization maps."""

  def __init__(self, color="rgb", num_blocks=64, features=64):
    super().__init__(color, num_blocks, features, with_maps=False)


class QGCN(nn.Module):
  """`nets/qmarg.py`: QCN split around a 64-vector from a 112x112 global image."""

  def __init__(self, color="rgb", num_blocks=64, features=64):
    super().__init__()
    channels = COLOR_CHANNELS[color]
    global_layers, width = [], channels
    for out, stride_two in ((32, True), (32, False), (64, True), (64, False),
                            (128, True), (128, False), (128, True), (128, False)):
      kernel, stride = (4, 2) if stride_two else (3, 1)
      global_layers += [nn.Conv2d(width, out, kernel, stride=stride, padding=1), nn.ReLU(inplace=True)]
      width = out
    self.conv_global = nn.Sequential(*global_layers)
    self.conv_global_l = nn.Sequential(nn.Linear(6272, 1024), nn.ReLU(inplace=True), nn.Linear(1024, 64))
    self.conv_input = nn.Conv2d(channels + QUANTIZATION_MAP_CHANNELS[channels], features, 3, padding=1, bias=False)
    self.downscale = _downscale(features)
    self.residual1 = nn.Sequential(*[ResidualBlock(features) for _ in range(num_blocks // 2)])
    self.conv_res_mid = nn.Conv2d(features + 64, features, 3, padding=1)
    self.relu_mid = nn.ReLU(inplace=True)
    self.residual2 = nn.Sequential(*[ResidualBlock(features) for _ in range(num_blocks // 2)])
    self.conv_mid = nn.Conv2d(features, features, 3, padding=1, bias=False)
    self.upscale = _upscale(features)
    self.conv_output = nn.Conv2d(features, channels, 3, padding=1, bias=False)

  def forward(self, x, global_image):
    assert global_image.shape[-2:] == (112, 112)
    g = self.conv_global_l(self.conv_global(global_image).view(-1, 6272))
    d = self.downscale(self.conv_input(x))
    r1 = self.residual1(d) + d
    g = g[:, :, None, None].expand(-1, -1, r1.shape[2], r1.shape[3])
    m = self.relu_mid(self.conv_res_mid(torch.cat([r1, g], dim=1)))
    r2 = self.residual2(m) + m
    return self.conv_output(self.upscale(self.conv_mid(r2)))


class ConvUnit(nn.Module):
  """`Src/Model.py`: 3x3 -> 3x3 -> PReLU -> 3x3 -> the same PReLU again."""

  def __init__(self, in_channels, out_channels):
    super().__init__()
    self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
    self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
    self.prelu = nn.PReLU()
    self.conv3 = nn.Conv2d(out_channels, out_channels, 3, padding=1)

  def forward(self, x):
    x = self.prelu(self.conv2(self.conv1(x)))
    return self.prelu(self.conv3(x))


class Restorer(nn.Module):
  """Image Restorer: `variant="shipped"` (`My_Model`) or `"readme"` (`Model_old.ipynb`'s `base` + `last`)."""

  def __init__(self, variant="shipped"):
    super().__init__()
    self.variant = variant
    if variant == "shipped":
      self.convUnit1, self.convUnit2, self.convUnit3 = ConvUnit(3, 128), ConvUnit(128, 64), ConvUnit(64, 32)
      self.conv1 = nn.Conv2d(32, 16, 1)
      self.prelu = nn.PReLU()
      self.conv2 = nn.Conv2d(16, 3, 5, padding=2)
    elif variant == "readme":
      layers, width = [], 3
      for out in (128, 64, 32):
        layers += [nn.Conv2d(width, out, 3, padding=1), nn.Conv2d(out, out, 1), nn.PReLU(),
                   nn.Conv2d(out, out, 3, padding=1), nn.PReLU()]
        width = out
      self.base = nn.Sequential(*layers, nn.Conv2d(32, 16, 1), nn.PReLU())
      self.last = nn.Conv2d(16, 3, 5, padding=2)
    else:
      raise ValueError(f"unknown variant {variant!r}")

  def forward(self, x):
    if self.variant == "readme":
      return self.last(self.base(x))
    x = self.convUnit3(self.convUnit2(self.convUnit1(x)))
    return self.conv2(self.prelu(self.conv1(x)))


VGG19_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M")


class VGG19Features(nn.Module):
  """torchvision `vgg19().features[:last_index + 1]`, keys `features.N.weight/bias`."""

  def __init__(self, last_index=35):
    super().__init__()
    layers, width = [], 3
    for item in VGG19_CFG:
      if item == "M":
        layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
      else:
        layers += [nn.Conv2d(width, item, 3, padding=1), nn.ReLU(inplace=True)]
        width = item
    self.features = nn.Sequential(*layers[:last_index + 1])

  def forward(self, x):
    return self.features(x)


# The single-input networks the benchmarks time against PyTorch, by `jaxcar.models` name.
FACTORIES = {"arcnn": ARCNN, "dacar3": functools.partial(DACAR, "dacar3"),
             "dacar4": functools.partial(DACAR, "dacar4"), "dacar5": functools.partial(DACAR, "dacar5"),
             "qcn": QCN, "edsr": EDSR}


def create(name: str, **options) -> nn.Module:
  """The twin of `jaxcar.models.create(name, **options)` with torch's own initialisation (benchmarks
  compare speed only); `dtype` is ignored: a benchmark applies autocast instead, as a PyTorch user would."""
  if name not in FACTORIES:
    raise ValueError(f"no PyTorch equivalent of {name!r} for benchmarking; available: {sorted(FACTORIES)}")
  return FACTORIES[name](**{k: v for k, v in options.items() if k != "dtype"})
