"""jaxcar's pretrained models, shipped inside the package: one safetensors file and one manifest each.

    import jaxcar.zoo
    model = jaxcar.zoo.load("color")          # an alias; or a versioned name such as "color-v1"
    model.config, model.params, model.manifest["scores"]

`python -m jaxcar.zoo` lists them with their scores; `--model=NAME` in evaluate, restore and export
loads one, and `python -m jaxcar.restore photo.jpg --output out` picks `color` or `grey` by itself.

A manifest (`NAME.json`) holds the training config (which rebuilds the network and its input
settings), the SHA-256 of the weights, how the model was trained (command, data, steps, CPU-hours,
code commit) and its scores. Weights are checked against that digest, against the network's
parameter shapes, and for non-finite values before use.
"""

import dataclasses
import functools
import hashlib
import json
from pathlib import Path

import ml_collections
import safetensors.numpy

from jaxcar import convert, models

FOLDER = Path(__file__).parent
# What restore uses for a file when no model is named: by the file's colour.
DEFAULT_FOR_COLOR = {"rgb": "color", "grey": "grey"}


class ZooError(ValueError):
  """An unknown model name or a shipped file that fails its checks (the message says which)."""


@dataclasses.dataclass(frozen=True)
class Pretrained:
  name: str
  manifest: dict
  config: ml_collections.ConfigDict
  params: dict


@functools.cache
def manifests() -> dict[str, dict]:
  """{versioned name: manifest} of every shipped model."""
  found = {}
  for path in sorted(FOLDER.glob("*.json")):
    manifest = json.loads(path.read_text())
    found[manifest["name"]] = manifest
  return found


def aliases() -> dict[str, str]:
  """{alias: versioned name}, e.g. {"color": "color-v1"}."""
  return {alias: name for name, manifest in manifests().items() for alias in manifest.get("aliases", ())}


def names() -> list[str]:
  """Every name `load` accepts: aliases first, then versioned names."""
  return sorted(aliases()) + sorted(manifests())


def resolve(name: str) -> str:
  """The versioned name behind `name`, or a one-line error listing the valid ones."""
  name = aliases().get(name, name)
  if name not in manifests():
    raise ZooError(f"no pretrained model {name!r}; available: {names() or 'none shipped'} (python -m jaxcar.zoo)")
  return name


def manifest(name: str) -> dict:
  return manifests()[resolve(name)]


def weights_path(name: str) -> Path:
  return FOLDER / manifest(name)["file"]


def load(name: str) -> Pretrained:
  """The checked parameters and config of a shipped model."""
  name = resolve(name)
  entry = manifests()[name]
  path = FOLDER / entry["file"]
  data = path.read_bytes()
  if hashlib.sha256(data).hexdigest() != entry["sha256"]:
    raise ZooError(f"{path}: contents do not match the manifest's SHA-256; reinstall jaxcar")
  config = ml_collections.ConfigDict(entry["config"])
  model = models.from_config(config)
  params = convert.flax_named_params(safetensors.numpy.load(data), model, str(path))  # shapes, finite values
  return Pretrained(name, entry, config, params)
