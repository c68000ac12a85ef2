"""Keras HDF5 weights (Keras 2.0.5 and 2.12 `model.save`/`save_weights` files) -> Flax, via h5py.

Nothing is unpickled and neither TensorFlow nor Keras is needed. Keras kernels are already HWIO
(conv) or (in, out) (dense), so weights carry over unchanged; only the names differ. The file's
`layer_names` attribute lists the layers in model order; its weighted layers are matched one-to-one
with the Flax modules in the order the network creates them (`conv1..convN` for DACAR/SACAR;
`conv_first`, `dense_block1/conv1..conv4`, `conv_body`, `conv_last` for the NoGAN generator).
"""

from pathlib import Path

import h5py
import numpy as np

from jaxcar.convert.tree import ConversionError, as_params, check_shapes, expected_shapes

Layer = tuple[str, dict[str, np.ndarray]]


def _strings(values) -> list[str]:
  # Keras 2.0.5 stores names as bytes, 2.12 as str; weightless layers hold an empty float array.
  return [v.decode() if isinstance(v, bytes) else str(v) for v in np.asarray(values).ravel()]


def read_layers(path) -> list[Layer]:
  """The weighted layers of a Keras HDF5 file in model order: [(layer name, {"kernel": ..., "bias": ...})]."""
  try:
    with h5py.File(path, "r") as file:
      group = file["model_weights"] if "model_weights" in file else file  # save_weights files are flat
      if "layer_names" not in group.attrs:
        raise ConversionError(f"{path}: no 'layer_names' attribute; not a Keras HDF5 weights file")
      layers = []
      for name in _strings(group.attrs["layer_names"]):
        weights = {_short_name(w): np.asarray(group[name][w], np.float32)
                   for w in _strings(group[name].attrs.get("weight_names", []))}
        if weights:
          layers.append((name, weights))
      return layers
  except OSError as error:
    raise ConversionError(f"{path}: cannot be read as HDF5 ({error})") from None
  except KeyError as error:  # a layer or weight listed in the attributes but absent
    raise ConversionError(f"{path}: incomplete Keras weights file, {error}") from None


def _short_name(weight_name: str) -> str:
  # "conv2d_4/kernel:0" -> "kernel"
  return weight_name.rsplit("/", 1)[-1].split(":", 1)[0]


def layers_to_flax(layers: list[Layer], model, source: str) -> dict:
  """Map weighted Keras layers onto the model's Flax modules in network order, checking every shape."""
  expected = expected_shapes(model)
  modules = list(dict.fromkeys(path[:-1] for path in expected))
  if len(layers) != len(modules):
    raise ConversionError(
        f"{source}: the file has {len(layers)} weighted layers ({', '.join(n for n, _ in layers)}), "
        f"the network has {len(modules)} ({', '.join('/'.join(m) for m in modules)})")
  found, keras_names = {}, {}
  for (layer_name, weights), module in zip(layers, modules):
    for weight_name, value in weights.items():
      found[module + (weight_name,)] = value
      keras_names[module + (weight_name,)] = f"{layer_name}/{weight_name}"
  describe = lambda path: f"{keras_names.get(path, '(no Keras layer)')} -> {'/'.join(path)}"
  check_shapes(found, expected, source, describe)
  return as_params(found, expected, source)


def load(path, model, model_name: str = "") -> dict:
  """Flax params for `model` from the Keras HDF5 file at `path`."""
  path = Path(path)
  if not path.is_file():
    raise FileNotFoundError(f"{path}: no such Keras weights file")
  source = f"{path} ({model_name})" if model_name else str(path)
  return layers_to_flax(read_layers(path), model, source)
