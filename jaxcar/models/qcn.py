"""QCN, QGCN (Li et al., TIP 2020, `VDIGPKU/QGCN`) and the EDSR baseline (QCN without maps).

Inputs are normalised to [-1, 1]. QCN/QGCN take the image concatenated with its quantization maps
(RGB: [R, G, B, QM_Y, QM_C] = 5 channels; grey: [Y, QM_Y] = 2); EDSR takes the image alone. H and W
must be even (one stride-2 downscale, PixelShuffle(2) back up). Submodule names follow the PyTorch
state_dict (`residual_3` = `residual.3`, `conv_global_l_0` = `conv_global_l.0`).
"""

import jax.numpy as jnp
import flax.linen as nn

from jaxcar.models import layers, registry

GLOBAL_SIZE = 112  # QGCN's global branch is asserted to take a 112x112 image
QUANTIZATION_MAP_CHANNELS = {3: 2, 1: 1}  # RGB: luma + chroma table maps; grey: luma only


def _conv(features, kernel, dtype, name, *, stride=1, use_bias=False, relu=False, kernel_init=layers.qcn_kernel):
  # QCN's init: conv weights N(0, sqrt(2/(k*k*out))), biases 0; 4x4 stride-2 convs pad 1 symmetrically.
  # relu=True applies a ReLU to the result (fused into the convolution on the oneDNN path).
  return layers.torch_conv(features, kernel, stride=stride, padding=1, use_bias=use_bias,
                           kernel_init=kernel_init, bias_init=nn.initializers.zeros, dtype=dtype, name=name,
                           negative_slope=0.0 if relu else None)


class ResidualBlock(nn.Module):
  """conv3x3 -> ReLU -> conv3x3, scaled by `res_scale`, plus the input (no biases)."""
  features: int = 64
  res_scale: float = 0.1
  dtype: layers.Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    y = _conv(self.features, 3, self.dtype, "conv1", relu=True)(x)
    y = _conv(self.features, 3, self.dtype, "conv2")(y)
    return x + y * self.res_scale


def _check_even(x):
  if x.shape[1] % 2 or x.shape[2] % 2:
    raise ValueError(f"QCN-family networks need even height and width, got {x.shape[1]}x{x.shape[2]}; pad first")


def _upscale(x, features, dtype):
  x = _conv(features * 4, 3, dtype, "upscale_0", use_bias=True)(x)
  return layers.pixel_shuffle(x, 2)


class QCN(nn.Module):
  """QCN (`nets/qmar.py`); with `in_channels` = image channels only it is the EDSR baseline.

  `residual_output` (jaxcar's zoo, not the paper) returns the input image plus the network's output,
  with the last convolution initialised to zero: the untrained network is the identity (the JPEG
  itself) and training learns only the correction. The addition runs in float32, so a bfloat16
  network never rounds the image it passes through.
  """
  in_channels: int = 5
  out_channels: int = 3
  num_blocks: int = 64
  features: int = 64
  dtype: layers.Dtype = jnp.float32
  residual_output: bool = False
  size_multiple = 2  # one stride-2 downscale, PixelShuffle(2) back up

  @property
  def input_channels(self) -> int:
    return self.in_channels

  @nn.compact
  def __call__(self, x):
    _check_even(x)
    image = x[..., :self.out_channels].astype(jnp.float32)
    x = x.astype(self.dtype)
    skip = _conv(self.features, 3, self.dtype, "conv_input")(x)
    x = _conv(self.features, 4, self.dtype, "downscale_0", stride=2, relu=True)(skip)
    for i in range(self.num_blocks):
      x = ResidualBlock(self.features, dtype=self.dtype, name=f"residual_{i}")(x)
    x = _conv(self.features, 3, self.dtype, "conv_mid")(x)
    x = _upscale(x, self.features, self.dtype) + skip
    if not self.residual_output:
      return _conv(self.out_channels, 3, self.dtype, "conv_output")(x)
    correction = _conv(self.out_channels, 3, self.dtype, "conv_output", kernel_init=nn.initializers.zeros)(x)
    return image + correction.astype(jnp.float32)


class QGCN(nn.Module):
  """QGCN (`nets/qmarg.py`): QCN's restoration branch split in two halves, joined by a global vector."""
  in_channels: int = 5
  out_channels: int = 3
  num_blocks: int = 64
  features: int = 64
  dtype: layers.Dtype = jnp.float32
  size_multiple = 2

  @property
  def input_channels(self) -> int:
    return self.in_channels

  @property
  def global_input_shape(self) -> tuple[int, int, int]:
    """The second input: the whole image, resized, in the output's channels."""
    return (GLOBAL_SIZE, GLOBAL_SIZE, self.out_channels)

  @nn.compact
  def __call__(self, x, global_image):
    _check_even(x)
    g = self._global_features(global_image)
    x = _conv(self.features, 3, self.dtype, "conv_input")(x.astype(self.dtype))
    x = _conv(self.features, 4, self.dtype, "downscale_0", stride=2, relu=True)(x)
    x = self._residual_group(x, "residual1")
    g = jnp.broadcast_to(g[:, None, None, :], x.shape[:3] + g.shape[-1:])
    x = jnp.concatenate([x, g], axis=-1)  # local channels first, global second
    x = _conv(self.features, 3, self.dtype, "conv_res_mid", use_bias=True, relu=True)(x)
    x = self._residual_group(x, "residual2")
    x = _conv(self.features, 3, self.dtype, "conv_mid")(x)
    x = _upscale(x, self.features, self.dtype)
    return _conv(self.out_channels, 3, self.dtype, "conv_output")(x)

  def _residual_group(self, x, prefix):
    y = x
    for i in range(self.num_blocks // 2):
      y = ResidualBlock(self.features, dtype=self.dtype, name=f"{prefix}_{i}")(y)
    return y + x

  def _global_features(self, image):
    """The global branch: 8 convs (every other one stride 2) on a 112x112 image -> a 64-vector."""
    if image.shape[1:3] != (GLOBAL_SIZE, GLOBAL_SIZE):
      raise ValueError(f"QGCN's global input must be {GLOBAL_SIZE}x{GLOBAL_SIZE}, got {image.shape[1]}x{image.shape[2]}")
    x = image.astype(self.dtype)
    for i, features in enumerate((32, 32, 64, 64, 128, 128, 128, 128)):
      stride_two = i % 2 == 0
      x = _conv(features, 4 if stride_two else 3, self.dtype, f"conv_global_{2 * i}",
                stride=2 if stride_two else 1, use_bias=True, relu=True)(x)
    x = layers.flatten_channels_first(x)  # PyTorch view(-1, 6272) flattens (c, h, w)
    dense = lambda features, fan_in, name: nn.Dense(
        features, dtype=self.dtype, param_dtype=jnp.float32, kernel_init=layers.torch_default_kernel,
        bias_init=layers.torch_default_bias(fan_in), name=name)
    x = nn.relu(dense(1024, x.shape[-1], "conv_global_l_0")(x))
    return dense(64, 1024, "conv_global_l_2")(x)


@registry.register("qcn", origin="pytorch", value_range="minus_one_one", quantization_maps=True)
def create_qcn(color="rgb", num_blocks=64, features=64, dtype="float32", residual_output=False):
  channels = registry.channels(color)
  return QCN(in_channels=channels + QUANTIZATION_MAP_CHANNELS[channels], out_channels=channels,
             num_blocks=num_blocks, features=features, dtype=registry.dtype(dtype), residual_output=residual_output)


@registry.register("qgcn", origin="pytorch", value_range="minus_one_one", quantization_maps=True,
                   global_size=GLOBAL_SIZE)
def create_qgcn(color="rgb", num_blocks=64, features=64, dtype="float32"):
  channels = registry.channels(color)
  return QGCN(in_channels=channels + QUANTIZATION_MAP_CHANNELS[channels], out_channels=channels,
              num_blocks=num_blocks, features=features, dtype=registry.dtype(dtype))


# QGCN's repository's EDSR baseline: QCN without the maps.
@registry.register("edsr", origin="pytorch", value_range="minus_one_one")
def create_edsr(color="rgb", num_blocks=64, features=64, dtype="float32"):
  channels = registry.channels(color)
  return QCN(in_channels=channels, out_channels=channels, num_blocks=num_blocks, features=features,
             dtype=registry.dtype(dtype))
