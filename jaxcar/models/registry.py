"""What each network is and needs, declared once, beside the network (`@register` on its factory).

The rest of jaxcar asks here instead of checking classes: the data settings a config starts from
(value range, quantization maps, QGCN's global image), whether its published weights are PyTorch
files (export to `.pth`), whether those files hold more than the network. What depends on the options
(input channels, the size multiple, the shape of a second input) is a property of the Flax module.
"""

import dataclasses
from typing import Callable

import flax.linen as nn
import jax.numpy as jnp

COLOR_CHANNELS = {"rgb": 3, "grey": 1}
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
ORIGINS = ("pytorch", "keras", "tensorflow")


@dataclasses.dataclass(frozen=True)
class Network:
  name: str
  factory: Callable[..., nn.Module]  # keyword options -> the Flax module
  origin: str  # the framework of the seed's code and of its released weights
  value_range: str = "zero_one"  # the pixel range the seed feeds it (jaxcar.data.prepare)
  quantization_maps: bool = False  # the input is the image followed by the JPEG's quantization maps
  global_size: int = 0  # > 0: a second input, the whole image resized to this side (QGCN)
  partial_weights: bool = False  # its published files hold more than the network (torchvision's VGG19)


NETWORKS: dict[str, Network] = {}


def register(name: str, **traits) -> Callable:
  """Decorator: `factory(**options) -> nn.Module` is the network `name`, with these traits."""
  def decorate(factory):
    if name in NETWORKS:
      raise ValueError(f"network {name!r} is registered twice")
    network = Network(name, factory, **traits)
    if network.origin not in ORIGINS:
      raise ValueError(f"{name}: origin must be one of {ORIGINS}")
    NETWORKS[name] = network
    return factory
  return decorate


def channels(color: str) -> int:
  if color not in COLOR_CHANNELS:
    raise ValueError(f"unknown color {color!r}; valid: {sorted(COLOR_CHANNELS)}")
  return COLOR_CHANNELS[color]


def dtype(name: str):
  if name not in DTYPES:
    raise ValueError(f"unknown dtype {name!r}; valid: {sorted(DTYPES)}")
  return DTYPES[name]
