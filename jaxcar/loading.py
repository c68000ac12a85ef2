"""A trained network ready to restore decoded JPEGs: its parameters and the data settings it was trained
with, from a pretrained model shipped with jaxcar (`jaxcar.zoo`), a training workdir or a weights file."""

import dataclasses
import json
from pathlib import Path
from typing import Callable

import ml_collections
import numpy as np

from jaxcar import convert, models, predict, zoo
from jaxcar.data import consistency, jpeg_file, prepare

MANIFEST_SUFFIX = ".json"  # an export `x.safetensors` is described by `x.safetensors.json`


def manifest_path(weights) -> Path:
  return Path(str(weights) + MANIFEST_SUFFIX)


@dataclasses.dataclass
class LoadedModel:
  """A network with the data settings it was trained with (`config.data`)."""
  config: ml_collections.ConfigDict
  predictor: predict.Predictor
  source: str

  @property
  def color(self) -> str:
    return self.config.data.color

  def inputs(self, decoded: np.ndarray, tables: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """(inputs, global_inputs or None) for a decoded uint8 (H, W, C) JPEG and its tables."""
    prepared = prepare.model_inputs(decoded, tables, self.config.data)
    return prepared["inputs"], prepared.get("global_inputs")

  def stored_planes(self, data: bytes) -> jpeg_file.StoredPlanes | None:
    """The colour JPEG `data`'s own planes when this model projects colour outputs (`finish`), else None."""
    if self.color != "rgb" or not self.config.data.get("jpeg_consistency"):
      return None
    return jpeg_file.stored_planes(data)

  def restore(self, decoded: np.ndarray, tables: np.ndarray, plan: predict.Plan = predict.Plan(),
              progress: Callable[[], None] | None = None,
              stored: jpeg_file.StoredPlanes | None = None) -> np.ndarray:
    """The restored uint8 image (the network's channels) of a decoded JPEG and its tables; `stored`
    (the colour JPEG's own planes) lets a colour model's output be projected, as `finish` says."""
    output = predict.run(self.predictor, *self.inputs(decoded, tables), plan, progress)
    return self.finish(output, decoded, tables, stored)

  def finish(self, output: np.ndarray, decoded: np.ndarray, tables: np.ndarray,
             stored: jpeg_file.StoredPlanes | None = None) -> np.ndarray:
    """The restored uint8 image for a decoded JPEG. With `data.jpeg_consistency` it is first projected
    onto the JPEG's quantization intervals (`jaxcar.data.consistency`): a grey output always, a colour
    one when the file's `stored` planes are given (YCbCr 4:4:4 or 4:2:0)."""
    value_range = self.config.data.value_range
    grey = output.shape[-1] == 1
    if not self.config.data.get("jpeg_consistency") or not (grey or stored is not None):
      return prepare.to_uint8(output, value_range)
    # In place where possible: a 12 MP colour image is 288 MB per float64 copy.
    pixels = prepare.from_model_range(np.asarray(output, np.float64), value_range)
    pixels = np.multiply(np.clip(pixels, 0.0, 1.0, out=pixels), 255.0, out=pixels)
    if grey:
      projected = consistency.project(pixels, decoded, tables[0])
    else:
      projected = consistency.project_color(pixels, stored)
    del pixels
    return np.round(np.clip(projected, 0.0, 255.0, out=projected), out=projected).astype(np.uint8)


def load_model(config: ml_collections.ConfigDict | None = None, weights=None, workdir=None,
               pretrained: str | None = None) -> LoadedModel:
  """From a pretrained model shipped with jaxcar (`jaxcar.zoo`), a training workdir (latest checkpoint)
  or a weights file (.h5, .pth, .safetensors, .npz).

  Without `config`, a workdir's own config.json or the export manifest beside `weights` is used.
  """
  if sum(source is not None for source in (weights, workdir, pretrained)) != 1:
    raise ValueError("give exactly one of --model (a pretrained name: python -m jaxcar.zoo), --weights "
                     "(a weights file) or --workdir (a training run)")
  if pretrained is not None:
    if config is not None:
      raise ValueError("--model brings its own config; drop --config")
    shipped = zoo.load(pretrained)
    return LoadedModel(shipped.config, predict.Predictor(models.from_config(shipped.config), shipped.params),
                       f"jaxcar.zoo:{shipped.name}")
  if workdir is not None:
    from jaxcar.training import checkpoint  # Orbax is only needed for this path
    config = config if config is not None else checkpoint.read_config(workdir)
    params = checkpoint.load_params(workdir, config)
    convert.check_finite(params, f"{workdir} (latest checkpoint)")  # a diverged run must not restore to black
    source = str(workdir)
  else:
    config = config if config is not None else _manifest_config(weights)
    params = convert.load_params(weights, config.model.name, models.from_config(config))
    source = str(weights)
  return LoadedModel(config, predict.Predictor(models.from_config(config), params), source)


def _manifest_config(weights) -> ml_collections.ConfigDict:
  path = manifest_path(weights)
  if not path.is_file():
    raise FileNotFoundError(f"{weights} has no manifest ({path.name}); pass --config=NAME to say which network "
                            f"and data settings it belongs to")
  return ml_collections.ConfigDict(json.loads(path.read_text())["config"])
