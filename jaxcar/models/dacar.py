"""DACAR3/4/5 and SACAR6 (Albluwi et al., IMVIP 2018; Fatma-ALbluwi/DACAR-SACAR-models).

Keras models on the luminance channel in [0, 1], output the restored image itself (no residual).
Quirk kept behind `activation`: the released weights were trained with LeakyReLU(0.3) (the default
here); the authors' MatConvNet test script ran them with plain ReLU (`activation="relu"`), which
gives ~7 dB with the released weights (BUILD_NOTES.md, Released weights).
"""

from typing import Sequence

import jax.numpy as jnp
import flax.linen as nn

from jaxcar.models import layers, registry

# Each activation as the negative slope the convolution before it applies (layers.Conv.negative_slope).
ACTIVATIONS = {
    "leaky_relu": 0.3,  # Keras LeakyReLU default
    "relu": 0.0,
}

# (kernel, features) of every layer; the last one is linear. Param counts in the comments.
DIRECT_LAYERS = {
    "dacar3": ((9, 64), (7, 32), (5, 1)),                          # 106,433
    "dacar4": ((9, 64), (3, 32), (3, 32), (5, 1)),                  # 33,761
    "dacar5": ((9, 32), (5, 32), (5, 32), (5, 32), (5, 1)),         # 80,321
}


def _keras_conv(features, kernel, dtype, name, negative_slope=None):
  # Keras 'same' at stride 1 with odd kernels is symmetric, like Flax 'SAME'.
  return layers.Conv(features, (kernel, kernel), padding="SAME", kernel_init=layers.keras205_he_normal,
                     bias_init=nn.initializers.zeros, dtype=dtype, param_dtype=jnp.float32, name=name,
                     negative_slope=negative_slope)


def _negative_slope(name: str) -> float:
  if name not in ACTIVATIONS:
    raise ValueError(f"unknown activation {name!r}; valid: {sorted(ACTIVATIONS)}")
  return ACTIVATIONS[name]


class DACAR(nn.Module):
  """Direct architecture: a plain stack of convolutions (`conv1`..`convN`)."""
  layer_spec: Sequence[tuple[int, int]] = DIRECT_LAYERS["dacar3"]
  activation: str = "leaky_relu"
  dtype: layers.Dtype = jnp.float32
  input_channels = 1  # luminance

  @nn.compact
  def __call__(self, x):
    slope = _negative_slope(self.activation)
    x = x.astype(self.dtype)
    for i, (kernel, features) in enumerate(self.layer_spec):
      hidden = i < len(self.layer_spec) - 1
      x = _keras_conv(features, kernel, self.dtype, f"conv{i + 1}", slope if hidden else None)(x)
    return x


class SACAR6(nn.Module):
  """Skip architecture: c3 sees concat([c1, c2]) (c1 first); 7 convolutions in all."""
  activation: str = "leaky_relu"
  dtype: layers.Dtype = jnp.float32
  input_channels = 1  # luminance

  @nn.compact
  def __call__(self, x):
    slope = _negative_slope(self.activation)
    conv = lambda features, kernel, name: _keras_conv(features, kernel, self.dtype, name, slope)
    c1 = conv(32, 9, "conv1")(x.astype(self.dtype))
    c2 = conv(32, 5, "conv2")(c1)
    x = conv(32, 5, "conv3")(jnp.concatenate([c1, c2], axis=-1))
    for name in ("conv4", "conv5", "conv6"):
      x = conv(32, 5, name)(x)
    return _keras_conv(1, 5, self.dtype, "conv7")(x)


def _register_direct(name):
  @registry.register(name, origin="keras")
  def create(activation="leaky_relu", dtype="float32"):
    return DACAR(layer_spec=DIRECT_LAYERS[name], activation=activation, dtype=registry.dtype(dtype))


for _name in DIRECT_LAYERS:
  _register_direct(_name)


@registry.register("sacar6", origin="keras")
def create_sacar6(activation="leaky_relu", dtype="float32"):
  return SACAR6(activation=activation, dtype=registry.dtype(dtype))
