"""Every network of the seed systems, created by name.

    model = jaxcar.models.create("qcn", color="grey", num_blocks=16, dtype="bfloat16")
    params = jaxcar.models.init(model, jax.random.key(0))["params"]
    restored = model.apply({"params": params}, *inputs)

Options are the keyword arguments of each network's factory (`@registry.register` in its module); an
unknown name or option is an error that lists the valid ones. `dtype` is the compute dtype; parameters
are always float32. Adding a network: a module here with the Flax class and its registered factory.
"""

import importlib
import inspect
import pkgutil

import jax
import jax.numpy as jnp
import flax.linen as nn
import ml_collections

from jaxcar.models import registry

NOT_NETWORKS = ("layers", "registry")
for _module in pkgutil.iter_modules(__path__):
  if _module.name not in NOT_NETWORKS:
    importlib.import_module(f"{__name__}.{_module.name}")  # each registers its networks


def names() -> list[str]:
  return sorted(registry.NETWORKS)


def network(name: str) -> registry.Network:
  """What `name` is and needs (origin, value range, extra inputs): see `registry.Network`."""
  if name not in registry.NETWORKS:
    raise ValueError(f"unknown model {name!r}; valid: {names()}")
  return registry.NETWORKS[name]


def options(name: str) -> dict:
  """The options of a model and their defaults."""
  return {p.name: p.default for p in inspect.signature(network(name).factory).parameters.values()}


def create(name: str, **opts) -> nn.Module:
  unknown = sorted(set(opts) - set(options(name)))
  if unknown:
    raise ValueError(f"unknown option(s) {unknown} for model {name!r}; valid: {sorted(options(name))}")
  return network(name).factory(**opts)


def from_config(config: ml_collections.ConfigDict) -> nn.Module:
  """The network a run's config names (`config.model.name` with `config.model.options`)."""
  return create(config.model.name, **dict(config.model.get("options", {})))


def size_multiple(model: nn.Module) -> int:
  """Whole-image height and width must be multiples of this (QCN's family downscales by 2)."""
  return getattr(model, "size_multiple", 1)


def dummy_inputs(model: nn.Module, batch: int = 1, height: int = 64, width: int = 64) -> tuple:
  """Zero inputs with the shapes `model` takes: (image,) or, for QGCN, (image, global_image)."""
  image = jnp.zeros((batch, height, width, model.input_channels), jnp.float32)
  second = getattr(model, "global_input_shape", None)
  return (image,) if second is None else (image, jnp.zeros((batch, *second), jnp.float32))


def init(model: nn.Module, rng: jax.Array, height: int = 64, width: int = 64):
  """Variables of `model` initialised as its seed does, on a (1, height, width, C) input."""
  return model.init(rng, *dummy_inputs(model, 1, height, width))


def param_count(params) -> int:
  return sum(x.size for x in jax.tree_util.tree_leaves(params))
