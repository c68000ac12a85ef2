"""Parameter trees and the checks every reader applies (shared by `keras`, `pytorch` and the package).

A reader compares what it found with the parameter tree the model expects (built with `jax.eval_shape`,
so nothing is allocated) and stops at the first mismatch with a one-line error.
"""

from collections.abc import Callable, Mapping

import jax
import numpy as np

from jaxcar import models

Path_ = tuple[str, ...]

class ConversionError(ValueError):
  """Weights that do not fit the target network (missing, unexpected or misshapen parameters)."""


def flatten(tree) -> dict[Path_, object]:
  """Nested dicts -> {path tuple: leaf}, keeping insertion order (for Flax params: creation order)."""
  flat = {}
  for key, value in tree.items():
    if isinstance(value, Mapping):
      flat.update({(key,) + path: leaf for path, leaf in flatten(value).items()})
    else:
      flat[(key,)] = value
  return flat


def unflatten(flat: dict[Path_, object]) -> dict:
  tree = {}
  for path, leaf in flat.items():
    node = tree
    for key in path[:-1]:
      node = node.setdefault(key, {})
    node[path[-1]] = leaf
  return tree


def expected_shapes(model) -> dict[Path_, tuple[int, ...]]:
  """{param path: shape} of `model` in network (creation) order, from an abstract init."""
  order = []

  def init_params(rng):
    params = models.init(model, rng)["params"]
    order.extend(flatten(params))  # jax.eval_shape re-sorts dict keys on return; record the order here
    return params

  shapes = flatten(jax.eval_shape(init_params, jax.random.key(0)))
  return {path: tuple(shapes[path].shape) for path in order}


def check_shapes(found: dict[Path_, np.ndarray], expected: dict[Path_, tuple], source: str,
                 describe: Callable[[Path_], str] = "/".join) -> None:
  """One-line ConversionError at the first parameter that is missing, unexpected or misshapen."""
  for path in expected:
    if path not in found:
      raise ConversionError(f"{source}: missing {describe(path)} (expected shape {expected[path]})")
  for path in found:
    if path not in expected:
      raise ConversionError(f"{source}: unexpected {describe(path)} {tuple(found[path].shape)}; "
                            f"the network has no such parameter")
  for path, shape in expected.items():
    if tuple(found[path].shape) != shape:
      raise ConversionError(f"{source}: {describe(path)} has shape {tuple(found[path].shape)}, "
                            f"the network expects {shape}")


def as_params(found: dict[Path_, np.ndarray], expected: dict[Path_, tuple], source: str = "weights") -> dict:
  """The exact Flax tree (float32 numpy leaves) in the model's order; refuses NaN or Inf values, which
  would otherwise restore every image to black without an error."""
  params = {path: np.asarray(found[path], np.float32) for path in expected}
  check_finite(params, source)
  return unflatten(params)


def check_finite(params, source: str = "weights") -> None:
  """ConversionError naming the first parameters with NaN or Inf (a flat {path: array} or a nested tree)."""
  flat = params if all(isinstance(path, tuple) for path in params) else flatten(params)
  damaged = ["/".join(path) for path, value in flat.items() if not np.isfinite(np.asarray(value)).all()]
  if damaged:
    raise ConversionError(f"{source}: non-finite (NaN or Inf) values in {damaged[:3]}; the weights are damaged")
