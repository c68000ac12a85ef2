"""NoGAN generator and discriminator (mathanprasannakumar/JPEG-ARTIFACT-REMOVER notebook). RGB [0, 1].

Generator (recovered one-block code): conv_first -> dense block(s) -> conv_body (LReLU 0.2) ->
conv_last (sigmoid). A dense block has 4 convs whose inputs are the *already concatenated* tensors
(64 -> 128 -> 256 -> 512 channels) and adds its input back without ESRGAN's 0.2 scaling. The
README's "double" generator is `dense_blocks=2` (each block adds its own input), 1,146,883 params.

Discriminator, `design` option:
- "as_coded" (default): the first Conv(64, s2) output is discarded by the original code, so the
  network is LReLU(input) -> 5 stride-2 convs (128,128,256,256,512) -> per-pixel Dense 1024 -> Dense 1.
- "readme": the 6-conv network the README describes (the first conv kept: 64,128,128,256,256,512).
Both give a patch map of shape (N, ceil(H/32), ceil(W/32), 1) (ceil(H/64) for "readme"); TF 'SAME'
stride-2 padding is asymmetric, which Flax's 'SAME' reproduces.
"""

import functools

import jax.numpy as jnp
import flax.linen as nn

from jaxcar.models import layers, registry
from jaxcar.ops import activations

LEAKY_SLOPE = 0.2
leaky_relu_02 = functools.partial(activations.leaky_relu, negative_slope=LEAKY_SLOPE)
DISCRIMINATOR_DESIGNS = {
    "as_coded": (128, 128, 256, 256, 512),
    "readme": (64, 128, 128, 256, 256, 512),
}


def _keras_conv(features, dtype, name, stride=1, leaky=False):
  # Keras Conv2D defaults: GlorotUniform kernels, zero biases. leaky=True applies LeakyReLU(0.2) to the
  # result (fused into the convolution on the oneDNN path).
  return layers.Conv(features, (3, 3), strides=(stride, stride), padding="SAME", dtype=dtype,
                     param_dtype=jnp.float32, kernel_init=nn.initializers.glorot_uniform(),
                     bias_init=nn.initializers.zeros, name=name, negative_slope=LEAKY_SLOPE if leaky else None)


class DenseBlock(nn.Module):
  dtype: layers.Dtype = jnp.float32

  @nn.compact
  def __call__(self, x0):
    a1 = _keras_conv(64, self.dtype, "conv1", leaky=True)(x0)
    c1 = jnp.concatenate([x0, a1], axis=-1)
    a2 = _keras_conv(64, self.dtype, "conv2", leaky=True)(c1)
    c2 = jnp.concatenate([x0, c1, a2], axis=-1)
    a3 = _keras_conv(64, self.dtype, "conv3", leaky=True)(c2)
    c3 = jnp.concatenate([x0, c1, c2, a3], axis=-1)
    return _keras_conv(64, self.dtype, "conv4")(c3) + x0


class Generator(nn.Module):
  dense_blocks: int = 1
  dtype: layers.Dtype = jnp.float32
  input_channels = 3

  @nn.compact
  def __call__(self, x):
    x = _keras_conv(64, self.dtype, "conv_first", leaky=True)(x.astype(self.dtype))
    for i in range(self.dense_blocks):
      x = DenseBlock(self.dtype, name=f"dense_block{i + 1}")(x)
    x = _keras_conv(64, self.dtype, "conv_body", leaky=True)(x)
    return nn.sigmoid(_keras_conv(3, self.dtype, "conv_last")(x))


class Discriminator(nn.Module):
  design: str = "as_coded"
  logits: bool = False  # True returns pre-sigmoid scores (for a numerically stable BCE)
  dtype: layers.Dtype = jnp.float32
  input_channels = 3

  @nn.compact
  def __call__(self, x):
    if self.design not in DISCRIMINATOR_DESIGNS:
      raise ValueError(f"unknown discriminator design {self.design!r}; valid: {sorted(DISCRIMINATOR_DESIGNS)}")
    x = x.astype(self.dtype)
    if self.design == "as_coded":
      x = leaky_relu_02(x)  # the original applies the activation to the input, not to the first conv
    for i, features in enumerate(DISCRIMINATOR_DESIGNS[self.design]):
      x = _keras_conv(features, self.dtype, f"conv{i + 1}", stride=2, leaky=True)(x)
    dense = functools.partial(nn.Dense, dtype=self.dtype, param_dtype=jnp.float32,
                              kernel_init=nn.initializers.glorot_uniform())
    x = leaky_relu_02(dense(1024, name="dense1")(x))
    scores = dense(1, name="dense2")(x)
    return scores if self.logits else nn.sigmoid(scores)


@registry.register("nogan_generator", origin="keras")
def create_generator(dense_blocks=1, dtype="float32"):
  return Generator(dense_blocks=dense_blocks, dtype=registry.dtype(dtype))


@registry.register("nogan_discriminator", origin="keras")
def create_discriminator(design="as_coded", logits=False, dtype="float32"):
  return Discriminator(design=design, logits=logits, dtype=registry.dtype(dtype))
