"""ARCNN as re-implemented in the QGCN repository (`src/nets/arcnn.py`; after Dong et al., ICCV 2015).

9-7-1-5 convolutions with 64-32-16 features and a PReLU after each hidden layer. Submodule names
follow the PyTorch `nn.Sequential` indices (`base_0` = `base.0`) so weights convert by name.
"""

import jax.numpy as jnp
import flax.linen as nn

from jaxcar.models import layers, registry


class ARCNN(nn.Module):
  """ARCNN. `channels` = 3 (RGB) or 1 (grey); input and output in the same value range."""
  channels: int = 3
  dtype: layers.Dtype = jnp.float32

  @property
  def input_channels(self) -> int:
    return self.channels

  @nn.compact
  def __call__(self, x):
    x = x.astype(self.dtype)
    hidden = [(64, 9, self.channels), (32, 7, 64), (16, 1, 32)]
    for i, (features, kernel, in_features) in enumerate(hidden):
      conv = layers.torch_conv(features, kernel, kernel_init=layers.normal(0.001), in_features=in_features,
                               dtype=self.dtype, name=f"base_{2 * i}")
      x = layers.PReLU(dtype=self.dtype, name=f"base_{2 * i + 1}").after(conv, x)
    return layers.torch_conv(self.channels, 5, kernel_init=layers.normal(0.001), in_features=16,
                             dtype=self.dtype, name="last")(x)


@registry.register("arcnn", origin="pytorch", value_range="minus_one_one")  # as QGCN's main.py feeds it
def create(color="rgb", dtype="float32"):
  return ARCNN(channels=registry.channels(color), dtype=registry.dtype(dtype))
