"""PyTorch equivalents of the networks the benchmarks compare against: same layers, shapes and FLOPs.

Only speed is compared, so weights are torch's own initialisation; the parity tests
(tests/torch_twins.py, which the installed package cannot import) check numerical equivalence.
`create(name, **options)` takes the options of `jaxcar.models.create` it needs and ignores `dtype`
(the benchmark applies autocast instead, as a PyTorch user would).
"""

import torch
from torch import nn

from jaxcar.models import dacar

COLOR_CHANNELS = {"rgb": 3, "grey": 1}
QUANTIZATION_MAP_CHANNELS = {3: 2, 1: 1}


def arcnn(color="rgb"):
  channels = COLOR_CHANNELS[color]
  return nn.Sequential(nn.Conv2d(channels, 64, 9, padding=4), nn.PReLU(), nn.Conv2d(64, 32, 7, padding=3),
                       nn.PReLU(), nn.Conv2d(32, 16, 1), nn.PReLU(), nn.Conv2d(16, channels, 5, padding=2))


def direct(name):
  """DACAR3/4/5: a plain conv stack with LeakyReLU(0.3) between layers, one grey channel in and out."""
  def factory(activation="leaky_relu"):
    layers, in_features = [], 1
    spec = dacar.DIRECT_LAYERS[name]
    for i, (kernel, features) in enumerate(spec):
      layers.append(nn.Conv2d(in_features, features, kernel, padding=kernel // 2))
      if i < len(spec) - 1:
        layers.append(nn.LeakyReLU(0.3) if activation == "leaky_relu" else nn.ReLU())
      in_features = features
    return nn.Sequential(*layers)
  return factory


class _ResidualBlock(nn.Module):
  def __init__(self, features):
    super().__init__()
    self.conv1 = nn.Conv2d(features, features, 3, padding=1, bias=False)
    self.conv2 = nn.Conv2d(features, features, 3, padding=1, bias=False)

  def forward(self, x):
    return x + self.conv2(torch.relu(self.conv1(x))) * 0.1


class _QCN(nn.Module):
  """QCN (with maps) and EDSR (without): conv, stride-2 down, residual blocks, PixelShuffle up, long skip."""

  def __init__(self, in_channels, out_channels, num_blocks, features):
    super().__init__()
    self.conv_input = nn.Conv2d(in_channels, features, 3, padding=1, bias=False)
    self.downscale = nn.Conv2d(features, features, 4, stride=2, padding=1, bias=False)
    self.residual = nn.Sequential(*[_ResidualBlock(features) for _ in range(num_blocks)])
    self.conv_mid = nn.Conv2d(features, features, 3, padding=1, bias=False)
    self.upscale = nn.Sequential(nn.Conv2d(features, features * 4, 3, padding=1), nn.PixelShuffle(2))
    self.conv_output = nn.Conv2d(features, out_channels, 3, padding=1, bias=False)

  def forward(self, x):
    skip = self.conv_input(x)
    x = self.conv_mid(self.residual(torch.relu(self.downscale(skip))))
    return self.conv_output(self.upscale(x) + skip)


def quantization_net(with_maps):
  def factory(color="rgb", num_blocks=64, features=64):
    channels = COLOR_CHANNELS[color]
    maps = QUANTIZATION_MAP_CHANNELS[channels] if with_maps else 0
    return _QCN(channels + maps, channels, num_blocks, features)
  return factory


FACTORIES = {"arcnn": arcnn, "dacar3": direct("dacar3"), "dacar4": direct("dacar4"), "dacar5": direct("dacar5"),
             "qcn": quantization_net(True), "edsr": quantization_net(False)}


def create(name: str, **options) -> nn.Module:
  if name not in FACTORIES:
    raise ValueError(f"no PyTorch equivalent of {name!r} for benchmarking; available: {sorted(FACTORIES)}")
  options = {k: v for k, v in options.items() if k != "dtype"}
  return FACTORIES[name](**options)
