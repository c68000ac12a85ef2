"""PyTorch state_dicts <-> Flax params for the PyTorch-origin networks (ARCNN, QCN, QGCN, EDSR,
Image Restorer) and torchvision's VGG19 features.

Flax module names mirror the state_dict paths: a name segment ending in `_<digits>` is the torch
`.<digits>` (`residual_3` = `residual.3`, `conv_global_l_0` = `conv_global_l.0`). Leaves:
conv `kernel` HWIO = `weight` OIHW, Dense `kernel` (in, out) = Linear `weight` (out, in), PReLU
`slope` () = `weight` (1,), `bias` = `bias`. QGCN flattens channel-first like `view(-1, 6272)`, so
its Linear weights port unchanged. Files are read without running pickled code: `.pth`/`.pt` through
`torch.load(weights_only=True)` (torch imported only then), `.safetensors` through safetensors.
"""

import re
from pathlib import Path

import numpy as np

from jaxcar.convert.tree import ConversionError, Path_, as_params, check_shapes, expected_shapes, flatten

TORCH_LEAF = {"kernel": "weight", "bias": "bias", "slope": "weight"}
DATAPARALLEL_PREFIX = "module."
NESTED_KEYS = ("state_dict", "model")  # common wrappers: {"state_dict": {...}}, {"model": {...}}


def torch_key(path: Path_) -> str:
  """("residual_3", "conv1", "kernel") -> "residual.3.conv1.weight"."""
  *modules, leaf = path
  return ".".join([re.sub(r"_(\d+)$", r".\1", m) for m in modules] + [TORCH_LEAF[leaf]])


def to_torch_layout(leaf: str, value: np.ndarray) -> np.ndarray:
  if leaf == "kernel" and value.ndim == 4:
    return value.transpose(3, 2, 0, 1)  # HWIO -> OIHW
  if leaf == "kernel" and value.ndim == 2:
    return value.T  # (in, out) -> (out, in)
  if leaf == "slope":
    return value.reshape(1)
  return value


def to_flax_layout(leaf: str, value: np.ndarray) -> np.ndarray:
  if leaf == "kernel" and value.ndim == 4:
    return value.transpose(2, 3, 1, 0)  # OIHW -> HWIO
  if leaf == "kernel" and value.ndim == 2:
    return value.T
  if leaf == "slope" and value.size == 1:
    return value.reshape(())
  return value


def _torch_shape(leaf: str, shape: tuple) -> tuple:
  return to_torch_layout(leaf, np.broadcast_to(np.float32(0), shape)).shape  # a view: nothing allocated


def flax_to_state_dict(params) -> dict[str, np.ndarray]:
  """Flax params -> {torch key: float32 array in torch layout}, loadable with `load_state_dict`."""
  return {torch_key(path): np.array(to_torch_layout(path[-1], np.asarray(value, np.float32)), order="C")
          for path, value in flatten(params).items()}


def state_dict_to_flax(state_dict, model, *, source: str = "state_dict", strict: bool = True) -> dict:
  """A torch state_dict (tensors or arrays; `module.` prefix optional) -> Flax params for `model`.

  `strict=False` ignores keys the model does not use (e.g. torchvision VGG19's classifier).
  """
  state_dict = {_strip_prefix(key): value for key, value in state_dict.items()}
  expected = expected_shapes(model)
  flax_path = {torch_key(path): path for path in expected}
  found = {}
  for key, value in state_dict.items():
    if key in flax_path:
      found[flax_path[key]] = _to_numpy(value)
    elif strict:
      raise ConversionError(f"{source}: unexpected key {key!r} {tuple(value.shape)}; the network has no such parameter")
  # Compare in torch layout, so the message shows the shapes as the file holds them.
  torch_shapes = {path: _torch_shape(path[-1], shape) for path, shape in expected.items()}
  check_shapes(found, torch_shapes, source, lambda path: f"{torch_key(path)!r} (Flax {'/'.join(path)})")
  return as_params({path: to_flax_layout(path[-1], value) for path, value in found.items()}, expected, source)


def _strip_prefix(key: str) -> str:
  return key[len(DATAPARALLEL_PREFIX):] if key.startswith(DATAPARALLEL_PREFIX) else key


def _to_numpy(value) -> np.ndarray:
  if hasattr(value, "detach"):  # a torch tensor; bfloat16 has no numpy dtype, so widen first
    value = value.detach().cpu().float()
  return np.asarray(value, np.float32)


def read_state_dict(path) -> dict:
  """A state_dict from `.pth`/`.pt` (weights_only, never arbitrary pickles) or `.safetensors`."""
  path = Path(path)
  if not path.is_file():
    raise FileNotFoundError(f"{path}: no such PyTorch weights file")
  if path.suffix.lower() == ".safetensors":
    import safetensors.numpy
    try:
      return safetensors.numpy.load_file(str(path))
    except Exception as error:  # header, dtype (e.g. bfloat16) or truncation problems
      raise ConversionError(f"{path}: not a readable float safetensors file ({error})") from None
  import torch  # only needed to read .pth files
  try:
    loaded = torch.load(path, map_location="cpu", weights_only=True)
  except Exception as error:  # torch raises UnpicklingError, RuntimeError, ... for unsafe or corrupt files
    first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    raise ConversionError(f"{path}: not loadable with weights_only=True ({first_line}); if it pickles a whole "
                          f"nn.Module, re-save `module.state_dict()` from the original code") from None
  return _unwrap(loaded, path)


def _unwrap(loaded, path) -> dict:
  for key in NESTED_KEYS:
    if isinstance(loaded, dict) and isinstance(loaded.get(key), dict):
      loaded = loaded[key]
  if not isinstance(loaded, dict):
    raise ConversionError(f"{path}: holds a {type(loaded).__name__}, not a state_dict")
  return loaded
