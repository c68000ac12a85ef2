"""CNN-CAR (shimrite/CompressionArtifactReductionCNN, seed version: modelCAR.py at 339d977).

Four TF convolutions 9-7-1-5 (64-32-16-1), ReLU after every layer *including the output* as coded.
Trained on raw 0-255 grey values. Init: truncated normal std 0.1, biases 0.1.
"""

import jax.numpy as jnp
import flax.linen as nn

from jaxcar.models import layers, registry


class CARCNN(nn.Module):
  final_relu: bool = True  # the seed applies ReLU to the output too; False gives a linear output
  dtype: layers.Dtype = jnp.float32
  input_channels = 1  # grey

  @nn.compact
  def __call__(self, x):
    x = x.astype(self.dtype)
    spec = ((9, 64), (7, 32), (1, 16), (5, 1))
    for i, (kernel, features) in enumerate(spec):
      relu = i < len(spec) - 1 or self.final_relu
      x = layers.Conv(features, (kernel, kernel), padding="SAME", kernel_init=layers.truncated_normal_2sigma(0.1),
                      bias_init=nn.initializers.constant(0.1), dtype=self.dtype, param_dtype=jnp.float32,
                      name=f"conv{i + 1}", negative_slope=0.0 if relu else None)(x)
    return x


@registry.register("carcnn", origin="tensorflow", value_range="zero_255")
def create(final_relu=True, dtype="float32"):
  return CARCNN(final_relu=final_relu, dtype=registry.dtype(dtype))
