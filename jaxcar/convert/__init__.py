"""Foreign weights -> jaxcar parameters, checked against the network they are meant for.

    model = jaxcar.models.create("dacar3")
    params = jaxcar.convert.load_params("dacar3_q10_keras.h5", "dacar3", model)
    restored = model.apply({"params": params}, image)

The file suffix picks the reader: Keras HDF5 (`.h5`, see `keras.py`), PyTorch state_dicts (`.pth`,
`.pt`, `.safetensors`, see `pytorch.py`) and jaxcar's own `.npz` exports (`/`-joined Flax names).
Every reader compares what it found with the parameter tree the model expects (`tree.py`) and stops
at the first mismatch with a one-line error.
"""

from pathlib import Path

import numpy as np

from jaxcar import models
from jaxcar.convert import keras, pytorch
from jaxcar.convert.tree import (ConversionError, Path_, as_params, check_finite, check_shapes, expected_shapes,
                                 flatten, unflatten)

READERS = {".h5": "keras", ".hdf5": "keras", ".pth": "pytorch", ".pt": "pytorch", ".safetensors": "pytorch",
           ".npz": "npz"}


def load_params(path, model_name: str, model=None) -> dict:
  """Parameters for `model` (default: `jaxcar.models.create(model_name)`) from a weights file."""
  path = Path(path)
  if not path.is_file():
    raise FileNotFoundError(f"{path}: no such weights file")
  reader = READERS.get(path.suffix.lower())
  if reader is None:
    raise ValueError(f"{path}: unknown weights format {path.suffix!r}; valid suffixes: {sorted(READERS)}")
  model = models.create(model_name) if model is None else model
  if reader == "keras":
    return keras.load(path, model, model_name)
  source = f"{path} ({model_name})"
  if reader == "pytorch":
    state_dict = pytorch.read_state_dict(path)
    if any("/" in key for key in state_dict):  # jaxcar's own safetensors export: Flax names
      return flax_named_params(state_dict, model, source)
    return pytorch.state_dict_to_flax(state_dict, model, source=source, strict=not models.network(model_name).partial_weights)
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
