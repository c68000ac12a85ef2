"""Layers and initialisers shared by the model families.

The seeds come from three frameworks (Keras 2.0.5, TF1, PyTorch); each initialiser below reproduces
one framework's default exactly, so a fresh jaxcar model starts from the same distribution as the
original recipe (each seed's official code).
"""

import math
from typing import Any

import jax
import jax.numpy as jnp
import flax.linen as nn

from jaxcar.ops import activations, conv

Dtype = Any


def _fan_in(shape) -> int:
  # Flax kernels are (..., in, out): conv HWIO or dense IO.
  return math.prod(shape[:-1])


def torch_default_kernel(key, shape, dtype=jnp.float32):
  """PyTorch Conv/Linear default: kaiming_uniform(a=sqrt(5)) = U(-1/sqrt(fan_in), +1/sqrt(fan_in))."""
  bound = 1.0 / math.sqrt(_fan_in(shape))
  return jax.random.uniform(key, shape, dtype, -bound, bound)


def torch_default_bias(fan_in: int):
  """PyTorch Conv/Linear default bias: U(-1/sqrt(fan_in), +1/sqrt(fan_in))."""
  bound = 1.0 / math.sqrt(fan_in)
  return lambda key, shape, dtype=jnp.float32: jax.random.uniform(key, shape, dtype, -bound, bound)


def normal(stddev: float):
  """N(0, stddev), as torch's `weight.data.normal_(0, stddev)`."""
  return lambda key, shape, dtype=jnp.float32: stddev * jax.random.normal(key, shape, dtype)


def qcn_kernel(key, shape, dtype=jnp.float32):
  """QCN/QGCN conv init: N(0, sqrt(2 / (kh*kw*out_channels))) (fan-out, as VDIGPKU/QGCN's nets initialise)."""
  kh, kw, _, out = shape
  return normal(math.sqrt(2.0 / (kh * kw * out)))(key, shape, dtype)


def truncated_normal_2sigma(stddev: float):
  """TF/Keras-2.0 truncated normal: N(0, stddev) redrawn beyond 2 sigma, std *not* rescaled."""
  return lambda key, shape, dtype=jnp.float32: stddev * jax.random.truncated_normal(key, -2.0, 2.0, shape, dtype)


def keras205_he_normal(key, shape, dtype=jnp.float32):
  """Keras 2.0.5 `he_normal`: truncated normal with std sqrt(2/fan_in) (no truncation correction)."""
  return truncated_normal_2sigma(math.sqrt(2.0 / _fan_in(shape)))(key, shape, dtype)


class PReLU(nn.Module):
  """PyTorch `nn.PReLU()`: one slope shared by all channels, initialised to 0.25."""
  dtype: Dtype = jnp.float32

  def setup(self):
    self.slope = self.param("slope", nn.initializers.constant(0.25), (), jnp.float32)

  def __call__(self, x):
    return activations.prelu(x.astype(self.dtype), self.slope)

  def after(self, conv: "Conv", x):
    """This PReLU applied to `conv(x)`: the same result, fused into the convolution where it can be."""
    return conv(x, prelu_slope=self.slope).astype(self.dtype)


class Conv(nn.Module):
  """`nn.Conv` for 2-D NHWC inputs (same arguments, parameters and result), computed by
  `jaxcar.ops.conv.conv2d`: oneDNN with the bias fused on a single CPU device, XLA elsewhere; can also
  apply a (leaky) ReLU (`negative_slope`) or a PReLU (`PReLU.after`) to its result."""
  features: int
  kernel_size: tuple[int, int]
  strides: tuple[int, int] = (1, 1)
  padding: Any = "SAME"
  use_bias: bool = True
  kernel_init: Any = nn.initializers.lecun_normal()
  bias_init: Any = nn.initializers.zeros
  dtype: Dtype | None = None
  param_dtype: Dtype = jnp.float32
  # None: a linear output, as nn.Conv; 0.0: ReLU; > 0: leaky ReLU with that slope. Applied to the
  # result, fused into the convolution on the oneDNN path (`conv.conv2d`).
  negative_slope: float | None = None

  @nn.compact
  def __call__(self, x, prelu_slope=None):
    """`prelu_slope` (a float32 scalar): a PReLU applied to the result instead (see `PReLU.after`)."""
    shape = (*self.kernel_size, x.shape[-1], self.features)
    kernel = self.param("kernel", self.kernel_init, shape, self.param_dtype)
    bias = self.param("bias", self.bias_init, (self.features,), self.param_dtype) if self.use_bias else None
    x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
    return conv.conv2d(x, kernel, bias, strides=self.strides, padding=self.padding,
                       negative_slope=self.negative_slope, prelu_slope=prelu_slope)


def torch_conv(features: int, kernel: int, *, stride: int = 1, padding: int | None = None, use_bias: bool = True,
               kernel_init=torch_default_kernel, bias_init=None, in_features: int | None = None,
               dtype: Dtype = jnp.float32, name: str | None = None,
               negative_slope: float | None = None) -> Conv:
  """A Conv with PyTorch semantics: symmetric integer padding (default (k-1)//2) and torch default init.

  `in_features` is needed only for torch's default bias init, whose bound depends on fan-in;
  `negative_slope` is Conv's (an activation applied to the result).
  """
  pad = (kernel - 1) // 2 if padding is None else padding
  if bias_init is None:
    bias_init = torch_default_bias(in_features * kernel * kernel) if in_features else nn.initializers.zeros
  return Conv(features, (kernel, kernel), strides=(stride, stride), padding=((pad, pad), (pad, pad)),
              use_bias=use_bias, kernel_init=kernel_init, bias_init=bias_init, dtype=dtype,
              param_dtype=jnp.float32, name=name, negative_slope=negative_slope)


def pixel_shuffle(x, factor: int = 2):
  """PyTorch `PixelShuffle` in NHWC: out[2h+i, 2w+j, c] = in[h, w, c*f*f + i*f + j] (channel-major)."""
  n, h, w, c = x.shape
  out_c = c // (factor * factor)
  x = x.reshape(n, h, w, out_c, factor, factor)
  x = x.transpose(0, 1, 4, 2, 5, 3)
  return x.reshape(n, h * factor, w * factor, out_c)


def flatten_channels_first(x):
  """Flatten NHWC features in PyTorch's NCHW `view(N, -1)` order, so Linear weights port unchanged."""
  return x.transpose(0, 3, 1, 2).reshape(x.shape[0], -1)
