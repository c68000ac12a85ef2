"""Foreign weights -> jaxcar parameters, checked against the network they are meant for.

    model = jaxcar.models.create("dacar3")
    params = jaxcar.convert.load_params("dacar3_q10_keras.h5", "dacar3", model)
    restored = model.apply({"params": params}, image)

The file suffix picks the reader: Keras HDF5 (`.h5`, see `keras.py`), PyTorch state_dicts (`.pth`,
`.pt`, `.safetensors`, see `pytorch.py`) and jaxcar's own `.npz` exports (`/`-joined Flax names).
Every reader compares what it found with the parameter tree the model expects (built with
`jax.eval_shape`, so nothing is allocated) and stops at the first mismatch with a one-line error.
"""

from collections.abc import Callable, Mapping
from pathlib import Path

import jax
import numpy as np

import jaxcar.models

Path_ = tuple[str, ...]
READERS = {".h5": "keras", ".hdf5": "keras", ".pth": "pytorch", ".pt": "pytorch", ".safetensors": "pytorch",
           ".npz": "npz"}
# torchvision's VGG19 file also holds the classifier (and, for a shorter `last_index`, deeper features).
PARTIAL_SOURCES = ("vgg19",)


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
    params = jaxcar.models.init(model, rng)["params"]
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
  damaged = ["/".join(path) for path, value in params.items() if not np.isfinite(value).all()]
  if damaged:
    raise ConversionError(f"{source}: non-finite (NaN or Inf) values in {damaged[:3]}; the weights are damaged")
  return unflatten(params)


def load_params(path, model_name: str, model=None) -> dict:
  """Parameters for `model` (default: `jaxcar.models.create(model_name)`) from a weights file."""
  path = Path(path)
  if not path.is_file():
    raise FileNotFoundError(f"{path}: no such weights file")
  reader = READERS.get(path.suffix.lower())
  if reader is None:
    raise ValueError(f"{path}: unknown weights format {path.suffix!r}; valid suffixes: {sorted(READERS)}")
  model = jaxcar.models.create(model_name) if model is None else model
  if reader == "keras":
    from jaxcar.convert import keras
    return keras.load(path, model, model_name)
  source = f"{path} ({model_name})"
  if reader == "pytorch":
    from jaxcar.convert import pytorch
    state_dict = pytorch.read_state_dict(path)
    if any("/" in key for key in state_dict):  # jaxcar's own safetensors export: Flax names
      return flax_named_params(state_dict, model, source)
    return pytorch.state_dict_to_flax(state_dict, model, source=source, strict=model_name not in PARTIAL_SOURCES)
  try:
    with np.load(path, allow_pickle=False) as archive:
      arrays = {key: archive[key] for key in archive.files}
  except ValueError as error:
    raise ConversionError(f"{path}: not a plain-array .npz ({error})") from None
  return flax_named_params(arrays, model, source)


def flax_named_params(arrays: dict[str, np.ndarray], model, source: str) -> dict:
  """Parameters from arrays named by `/`-joined Flax paths (jaxcar's .safetensors and .npz exports)."""
  expected = expected_shapes(model)
  found = {tuple(key.split("/")): value for key, value in arrays.items()}
  check_shapes(found, expected, source)
  return as_params(found, expected, source)
