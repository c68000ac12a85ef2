"""Image Restorer (TsengMJ/Image_Compressor, `Src/Model.py`). RGB in [0, 1] -> RGB.

Two variants behind `variant`:
- "shipped" (default): the code that was trained. Each ConvUnit is 3x3 -> 3x3 -> PReLU -> 3x3 ->
  the *same* PReLU again (one slope used twice). Names follow the state_dict (`convUnit1.conv2`).
- "readme": the README/diagram network (`Model_old.ipynb`): units of 3x3 -> 1x1 -> PReLU -> 3x3 ->
  PReLU with separate slopes, as one `nn.Sequential` `base` (indices `base_0`..`base_16`) + `last`.
Neither variant has a skip connection; the output is linear.
"""

import jax.numpy as jnp
import flax.linen as nn

from jaxcar.models import layers, registry

UNIT_WIDTHS = (128, 64, 32)
VARIANTS = ("shipped", "readme")


def _conv(features, kernel, in_features, dtype, name):
  # The seed's init: weights N(0, 0.001); biases keep the PyTorch default uniform.
  return layers.torch_conv(features, kernel, kernel_init=layers.normal(0.001), in_features=in_features,
                           dtype=dtype, name=name)


class ConvUnit(nn.Module):
  features: int
  in_features: int
  dtype: layers.Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    prelu = layers.PReLU(dtype=self.dtype, name="prelu")  # shared by both activations, as shipped
    x = _conv(self.features, 3, self.in_features, self.dtype, "conv1")(x)
    x = prelu.after(_conv(self.features, 3, self.features, self.dtype, "conv2"), x)
    return prelu.after(_conv(self.features, 3, self.features, self.dtype, "conv3"), x)


class Restorer(nn.Module):
  variant: str = "shipped"
  dtype: layers.Dtype = jnp.float32
  input_channels = 3

  @nn.compact
  def __call__(self, x):
    if self.variant not in VARIANTS:
      raise ValueError(f"unknown restorer variant {self.variant!r}; valid: {list(VARIANTS)}")
    x = x.astype(self.dtype)
    if self.variant == "shipped":
      return self._shipped(x)
    return self._readme(x)

  def _shipped(self, x):
    in_features = 3
    for i, width in enumerate(UNIT_WIDTHS):
      x = ConvUnit(width, in_features, self.dtype, name=f"convUnit{i + 1}")(x)
      in_features = width
    x = layers.PReLU(dtype=self.dtype, name="prelu").after(_conv(16, 1, 32, self.dtype, "conv1"), x)
    return _conv(3, 5, 16, self.dtype, "conv2")(x)

  def _readme(self, x):
    index, in_features = 0, 3

    def conv(features, kernel, fan_in, x):
      nonlocal index
      x = _conv(features, kernel, fan_in, self.dtype, f"base_{index}")(x)
      index += 1
      return x

    def prelu(x):
      nonlocal index
      x = layers.PReLU(dtype=self.dtype, name=f"base_{index}")(x)
      index += 1
      return x

    for width in UNIT_WIDTHS:
      x = prelu(conv(width, 1, width, conv(width, 3, in_features, x)))
      x = prelu(conv(width, 3, width, x))
      in_features = width
    x = prelu(conv(16, 1, 32, x))
    return _conv(3, 5, 16, self.dtype, "last")(x)


@registry.register("restorer", origin="pytorch")
def create(variant="shipped", dtype="float32"):
  return Restorer(variant=variant, dtype=registry.dtype(dtype))
