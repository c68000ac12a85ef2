"""Every network of the seed systems, created by name.

    model = jaxcar.models.create("qcn", color="grey", num_blocks=16, dtype="bfloat16")
    params = jaxcar.models.init(model, jax.random.key(0))["params"]
    restored = model.apply({"params": params}, *inputs)

Options are the keyword arguments of the factory below; an unknown name or option is an error that
lists the valid ones. `dtype` is the compute dtype; parameters are always float32.
"""

import inspect

import jax
import jax.numpy as jnp
import flax.linen as nn

from jaxcar.models import arcnn, carcnn, dacar, nogan, qcn, restorer, vgg

COLOR_CHANNELS = {"rgb": 3, "grey": 1}
QUANTIZATION_MAP_CHANNELS = {3: 2, 1: 1}  # RGB: luma + chroma table maps; grey: luma only
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def _channels(color: str) -> int:
  if color not in COLOR_CHANNELS:
    raise ValueError(f"unknown color {color!r}; valid: {sorted(COLOR_CHANNELS)}")
  return COLOR_CHANNELS[color]


def _arcnn(color="rgb", dtype="float32"):
  return arcnn.ARCNN(channels=_channels(color), dtype=_dtype(dtype))


def _direct(name):
  def factory(activation="leaky_relu", dtype="float32"):
    return dacar.DACAR(layer_spec=dacar.DIRECT_LAYERS[name], activation=activation, dtype=_dtype(dtype))
  return factory


def _sacar6(activation="leaky_relu", dtype="float32"):
  return dacar.SACAR6(activation=activation, dtype=_dtype(dtype))


def _carcnn(final_relu=True, dtype="float32"):
  return carcnn.CARCNN(final_relu=final_relu, dtype=_dtype(dtype))


def _restorer(variant="shipped", dtype="float32"):
  return restorer.Restorer(variant=variant, dtype=_dtype(dtype))


def _nogan_generator(dense_blocks=1, dtype="float32"):
  return nogan.Generator(dense_blocks=dense_blocks, dtype=_dtype(dtype))


def _nogan_discriminator(design="as_coded", logits=False, dtype="float32"):
  return nogan.Discriminator(design=design, logits=logits, dtype=_dtype(dtype))


def _vgg19(last_index=35, dtype="float32"):
  return vgg.VGG19Features(last_index=last_index, dtype=_dtype(dtype))


def _quantization_net(cls, with_maps):
  def factory(color="rgb", num_blocks=64, features=64, dtype="float32"):
    channels = _channels(color)
    map_channels = QUANTIZATION_MAP_CHANNELS[channels] if with_maps else 0
    return cls(in_channels=channels + map_channels, out_channels=channels, num_blocks=num_blocks, features=features, dtype=_dtype(dtype))
  return factory


def _qcn(color="rgb", num_blocks=64, features=64, dtype="float32", residual_output=False):
  channels = _channels(color)
  return qcn.QCN(in_channels=channels + QUANTIZATION_MAP_CHANNELS[channels], out_channels=channels,
                 num_blocks=num_blocks, features=features, dtype=_dtype(dtype), residual_output=residual_output)


def _dtype(name):
  if name not in DTYPES:
    raise ValueError(f"unknown dtype {name!r}; valid: {sorted(DTYPES)}")
  return DTYPES[name]


FACTORIES = {
    "arcnn": _arcnn,
    "dacar3": _direct("dacar3"),
    "dacar4": _direct("dacar4"),
    "dacar5": _direct("dacar5"),
    "sacar6": _sacar6,
    "carcnn": _carcnn,
    "restorer": _restorer,
    "nogan_generator": _nogan_generator,
    "nogan_discriminator": _nogan_discriminator,
    "vgg19": _vgg19,
    "qcn": _qcn,
    "qgcn": _quantization_net(qcn.QGCN, with_maps=True),
    "edsr": _quantization_net(qcn.QCN, with_maps=False),
}


def names() -> list[str]:
  return sorted(FACTORIES)


def options(name: str) -> dict:
  """The options of a model and their defaults."""
  _check_name(name)
  return {p.name: p.default for p in inspect.signature(FACTORIES[name]).parameters.values()}


def create(name: str, **opts) -> nn.Module:
  _check_name(name)
  unknown = sorted(set(opts) - set(options(name)))
  if unknown:
    raise ValueError(f"unknown option(s) {unknown} for model {name!r}; valid: {sorted(options(name))}")
  return FACTORIES[name](**opts)


def _check_name(name):
  if name not in FACTORIES:
    raise ValueError(f"unknown model {name!r}; valid: {names()}")


def input_channels(model: nn.Module) -> int:
  """Channels of the main input (image plus quantization maps where the network takes them)."""
  if isinstance(model, (qcn.QCN, qcn.QGCN)):
    return model.in_channels
  if isinstance(model, arcnn.ARCNN):
    return model.channels
  if isinstance(model, (dacar.DACAR, dacar.SACAR6, carcnn.CARCNN)):
    return 1
  return 3


def dummy_inputs(model: nn.Module, batch: int = 1, height: int = 64, width: int = 64) -> tuple:
  """Zero inputs with the shapes `model` takes: (image,) or, for QGCN, (image, global_image)."""
  image = jnp.zeros((batch, height, width, input_channels(model)), jnp.float32)
  if isinstance(model, qcn.QGCN):
    global_channels = model.out_channels
    return image, jnp.zeros((batch, qcn.GLOBAL_SIZE, qcn.GLOBAL_SIZE, global_channels), jnp.float32)
  return (image,)


def init(model: nn.Module, rng: jax.Array, height: int = 64, width: int = 64):
  """Variables of `model` initialised as its seed does, on a (1, height, width, C) input."""
  return model.init(rng, *dummy_inputs(model, 1, height, width))


def param_count(params) -> int:
  return sum(x.size for x in jax.tree_util.tree_leaves(params))
