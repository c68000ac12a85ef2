"""Whole-image inference shared by evaluate, restore and export.

A `Predictor` wraps one jitted forward pass. Images arrive as float32 (H, W, C) arrays already in the
model's value range (quantization-map channels included), plus QGCN's (G, G, C) global image:
- `predict` pads bottom/right (edge values) to a multiple of `bucket`, so the 9 sizes of LIVE1 compile
  4 programs, then crops back (the padding changes the outputs near the bottom/right border slightly:
  +0.002 dB on LIVE1 for DACAR3; `bucket=0` pads nothing and compiles per size);
- `predict_ensemble` averages the 8 flips/rotations (each undone on the output);
- `predict_tiled` runs fixed-size tiles with `overlap` pixels of context on each inner side and keeps
  each tile's centre, for images too large for memory. Tiles never leave the image (the last one is
  shifted back), so the image border sees the same zero padding as a whole-image pass: with an overlap
  at least the network's receptive radius the result equals `predict(..., bucket=0)`. Quantization
  maps and QGCN's global image are made once for the whole image, so tiles need no JPEG-grid alignment.
"""

import dataclasses
import json
import math
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import linen as nn

from jaxcar import convert, host_memory, models, zoo
from jaxcar.models import qcn
from jaxcar.data import consistency, prepare

DEFAULT_BUCKET = 64
ROWS_PER_SLAB = 256  # LoadedModel.to_uint8's float64 working set: 256 rows at a time
# Sizes that every network here accepts (QCN needs even ones); the StableHLO export asks for this.
SIZE_MULTIPLE = 8


@dataclasses.dataclass
class Predictor:
  """`model.apply` on float32 NHWC batches, compiled once per input shape."""
  model: nn.Module
  params: Any

  def __post_init__(self):
    self.takes_global = len(models.dummy_inputs(self.model)) == 2
    # The QCN family downscales by 2 and shuffles back up, so it needs even sizes.
    self.size_multiple = 2 if isinstance(self.model, (qcn.QCN, qcn.QGCN)) else 1
    self._forward = jax.jit(self.forward)

  def forward(self, params, inputs, global_inputs=None):
    """The pure forward pass, (params, (N,H,W,C) [, (N,G,G,C)]) -> float32 (N,H,W,C_out)."""
    extra = (global_inputs,) if self.takes_global else ()
    return self.model.apply({"params": params}, inputs, *extra).astype(jnp.float32)

  def __call__(self, inputs: np.ndarray, global_inputs: np.ndarray | None = None) -> np.ndarray:
    """One (H, W, C) image (and its (G, G, C) global image for QGCN) -> (H, W, C_out) numpy."""
    if self.takes_global and global_inputs is None:
      raise ValueError(f"{type(self.model).__name__} needs a global image beside the input")
    batch = jnp.asarray(inputs, jnp.float32)[None]
    global_batch = None if global_inputs is None else jnp.asarray(global_inputs, jnp.float32)[None]
    return np.asarray(self._forward(self.params, batch, global_batch))[0]


def _size_multiple(predictor) -> int:
  # Any callable with Predictor's signature works here (benchmarks pass a PyTorch twin); default: any size.
  return getattr(predictor, "size_multiple", 1)


def round_up(size: int, multiple: int) -> int:
  return -(-size // multiple) * multiple


def pad_bottom_right(image: np.ndarray, height: int, width: int) -> np.ndarray:
  """Edge-pads an (H, W, C) image on the bottom and right to (height, width)."""
  return np.pad(image, ((0, height - image.shape[0]), (0, width - image.shape[1]), (0, 0)), mode="edge")


def predict(predictor: Predictor, inputs, global_inputs=None, bucket: int = DEFAULT_BUCKET) -> np.ndarray:
  """The whole image in one pass, padded to a multiple of `bucket` and cropped back.

  `bucket=0` pads only what the network needs (even sizes for the QCN family), so the image border
  sees exactly the zero padding of the published protocols, at one compile per distinct size.
  """
  height, width = inputs.shape[:2]
  multiple = math.lcm(_size_multiple(predictor), max(bucket, 1))
  padded = pad_bottom_right(inputs, round_up(height, multiple), round_up(width, multiple))
  return predictor(padded, global_inputs)[:height, :width]


def dihedral(image: np.ndarray, index: int) -> np.ndarray:
  """The `index`-th (0..7) of the 8 flips/rotations of an (H, W, C) image; 0 is the identity."""
  flipped = image[:, ::-1] if index >= 4 else image
  return np.rot90(flipped, index % 4, axes=(0, 1))


def undo_dihedral(image: np.ndarray, index: int) -> np.ndarray:
  unrotated = np.rot90(image, -(index % 4), axes=(0, 1))
  return unrotated[:, ::-1] if index >= 4 else unrotated


def predict_ensemble(run: Callable[..., np.ndarray], inputs, global_inputs=None) -> np.ndarray:
  """Mean of `run` over the 8 dihedral transforms of the input (and of the global image)."""
  outputs = []
  for index in range(8):
    transformed_global = None if global_inputs is None else dihedral(global_inputs, index)
    outputs.append(undo_dihedral(run(dihedral(inputs, index), transformed_global), index))
  return np.mean(outputs, axis=0)


def tile_starts(size: int, tile: int, overlap: int, multiple: int = 1) -> list[int]:
  """Start offsets (multiples of `multiple`) of tiles covering `size`; the last one ends at the edge."""
  if size <= tile:
    return [0]
  stride = tile - 2 * overlap
  stride -= stride % multiple
  if stride <= 0:
    raise ValueError(f"tile {tile} leaves no room after an overlap of {overlap} on each side; use a tile "
                     f"of at least {2 * overlap + multiple}")
  count = 1 + math.ceil((size - tile) / stride)
  return [min(i * stride, size - tile) for i in range(count)]


def _kept_spans(starts: list[int], tile: int, size: int) -> list[tuple[int, int]]:
  """Which output rows each tile contributes: neighbours split their shared context in the middle."""
  cuts = [0] + [(starts[i + 1] + starts[i] + tile) // 2 for i in range(len(starts) - 1)] + [size]
  return list(zip(cuts[:-1], cuts[1:]))


def predict_tiled(predictor: Predictor, inputs, global_inputs=None, tile: int = 512, overlap: int = 32,
                  progress: Callable[[], None] | None = None) -> np.ndarray:
  """The image in `tile` x `tile` pieces (one compiled shape), stitched without seams.

  Equals `predict(..., bucket=0)` when `overlap` covers the network's receptive radius.
  """
  height, width = inputs.shape[:2]
  multiple = _size_multiple(predictor)
  if tile % multiple:
    raise ValueError(f"the tile size must be a multiple of {multiple} for this network (it downscales)")
  padded = pad_bottom_right(inputs, round_up(height, multiple), round_up(width, multiple))
  full_h, full_w = padded.shape[:2]
  tile_h, tile_w = min(tile, full_h), min(tile, full_w)
  rows, cols = tile_starts(full_h, tile_h, overlap, multiple), tile_starts(full_w, tile_w, overlap, multiple)
  output = None
  for top, (row_lo, row_hi) in zip(rows, _kept_spans(rows, tile_h, full_h)):
    for left, (col_lo, col_hi) in zip(cols, _kept_spans(cols, tile_w, full_w)):
      piece = predictor(padded[top:top + tile_h, left:left + tile_w], global_inputs)
      if output is None:
        output = np.empty((full_h, full_w, piece.shape[-1]), np.float32)
      output[row_lo:row_hi, col_lo:col_hi] = piece[row_lo - top:row_hi - top, col_lo - left:col_hi - left]
      if progress:
        progress()
  return output[:height, :width]


def tile_count(height: int, width: int, tile: int, overlap: int, multiple: int = 1) -> int:
  """How many tiles `predict_tiled` runs for a height x width image."""
  height, width = round_up(height, multiple), round_up(width, multiple)
  rows = tile_starts(height, min(tile, height), overlap, multiple)
  return len(rows) * len(tile_starts(width, min(tile, width), overlap, multiple))


# ---------------------------------------------------------------------------------------------------
# A trained network ready to restore decoded JPEGs: its config (value range, colour, maps) and params.

MANIFEST_SUFFIX = ".json"  # an export `x.safetensors` is described by `x.safetensors.json`


def manifest_path(weights) -> Path:
  return Path(str(weights) + MANIFEST_SUFFIX)


@dataclasses.dataclass
class LoadedModel:
  """A network with the data settings it was trained with (`config.data`)."""
  config: ml_collections.ConfigDict
  predictor: Predictor
  source: str

  @property
  def color(self) -> str:
    return self.config.data.color

  def inputs(self, decoded: np.ndarray, tables: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """(inputs, global_inputs or None) for a decoded uint8 (H, W, C) JPEG and its tables."""
    prepared = prepare.model_inputs(decoded, tables, self.config.data)
    return prepared["inputs"], prepared.get("global_inputs")

  def finish(self, output: np.ndarray, decoded: np.ndarray, tables: np.ndarray) -> np.ndarray:
    """The restored uint8 image for a decoded JPEG; with `data.jpeg_consistency` (grey models) first
    projected onto the JPEG's quantization intervals (`jaxcar.data.consistency`)."""
    if not (self.config.data.get("jpeg_consistency") and output.shape[-1] == 1):
      return self.to_uint8(output)
    pixels = np.clip(prepare.from_model_range(np.asarray(output, np.float64), self.config.data.value_range), 0.0, 1.0)
    projected = consistency.project(pixels * 255.0, decoded, tables[0])
    return np.round(np.clip(projected, 0.0, 255.0)).astype(np.uint8)

  def to_uint8(self, output: np.ndarray) -> np.ndarray:
    """Model output -> uint8: clipped to [0, 1], x255, rounded (the published evaluation protocol).

    In float64, as the protocol's numbers were computed, but in slabs of rows: a 12 MP photo's float64
    copies would otherwise add ~600 MB to restore's peak memory.
    """
    result = np.empty(output.shape, np.uint8)
    for top in range(0, output.shape[0], ROWS_PER_SLAB):
      slab = prepare.from_model_range(np.asarray(output[top:top + ROWS_PER_SLAB], np.float64),
                                      self.config.data.value_range)
      result[top:top + ROWS_PER_SLAB] = np.round(np.clip(slab, 0.0, 1.0) * 255.0)
    return result


def create_model(config: ml_collections.ConfigDict) -> nn.Module:
  return models.create(config.model.name, **dict(config.model.get("options", {})))


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
    return LoadedModel(shipped.config, Predictor(shipped.create_model(), shipped.params), f"jaxcar.zoo:{shipped.name}")
  if workdir is not None:
    from jaxcar.training import checkpoint  # Orbax is only needed for this path
    config = config if config is not None else checkpoint.read_config(workdir)
    params = checkpoint.restore_params(workdir, config)
    source = str(workdir)
  else:
    config = config if config is not None else _manifest_config(weights)
    params = convert.load_params(weights, config.model.name, create_model(config))
    source = str(weights)
  return LoadedModel(config, Predictor(create_model(config), params), source)


def _manifest_config(weights) -> ml_collections.ConfigDict:
  path = manifest_path(weights)
  if not path.is_file():
    raise FileNotFoundError(f"{weights} has no manifest ({path.name}); pass --config=NAME to say which network "
                            f"and data settings it belongs to")
  return ml_collections.ConfigDict(json.loads(path.read_text())["config"])


# ---------------------------------------------------------------------------------------------------
# Command-line plumbing shared by evaluate, restore and export.

# Errors a user can fix from the command line: shown as one line, not a traceback.
USER_ERRORS = (FileNotFoundError, ValueError, OSError)


def define_model_flags(flag_values=None) -> None:
  """--config (optional when a manifest or workdir config exists), --weights, --workdir."""
  from absl import flags  # pylint: disable=import-outside-toplevel
  from ml_collections import config_flags  # pylint: disable=import-outside-toplevel
  flag_values = flag_values or flags.FLAGS
  config_flags.DEFINE_config_file("config", None, "configs/NAME.py or a path, then `:variants`; "
                                  "optional with an exported file's manifest or a workdir", flag_values=flag_values)
  flags.DEFINE_string("weights", None, "weights file: Keras .h5, PyTorch .pth/.pt/.safetensors, jaxcar "
                      ".safetensors/.npz export", flag_values=flag_values)
  flags.DEFINE_string("workdir", None, "training run folder: its latest checkpoint", flag_values=flag_values)
  flags.DEFINE_string("model", None, "a pretrained model shipped with jaxcar, e.g. color or grey "
                      "(python -m jaxcar.zoo lists them)", flag_values=flag_values)


def parse_flags(argv: list[str]) -> list[str]:
  """absl flag parsing that resolves `--config=NAME` like jaxcar.train and fails in one line."""
  from absl import flags  # pylint: disable=import-outside-toplevel
  from jaxcar.training import config_flags  # pylint: disable=import-outside-toplevel
  try:
    if any(arg.startswith("--config=") for arg in argv):
      return config_flags.parse(argv)
    return flags.FLAGS(argv)
  except (config_flags.ConfigError, flags.Error) as error:
    raise SystemExit(f"error: {error}") from None


def load_model_from_flags() -> LoadedModel:
  from absl import flags  # pylint: disable=import-outside-toplevel
  values = flags.FLAGS
  return load_model(values.config, values.weights, values.workdir, values.model)


def run_cli(main: Callable[[list[str]], None]) -> None:
  """app.run with one-line errors for everything a user can fix."""
  from absl import app, logging  # pylint: disable=import-outside-toplevel

  def guarded(argv):
    from jaxcar import logs  # pylint: disable=import-outside-toplevel
    logs.quiet_unless_verbose()  # jaxcar's own lines; --verbosity shows Orbax's and JAX's too
    host_memory.for_jax_on_cpu()  # before JAX's backend starts
    try:
      main(argv)
    except USER_ERRORS as error:
      logging.debug("stopped", exc_info=True)  # the traceback with --verbosity=1
      first_line = str(error).splitlines()[0] if str(error) else ""
      raise SystemExit(f"error: {type(error).__name__}: {first_line}") from None

  app.run(guarded, flags_parser=parse_flags)
