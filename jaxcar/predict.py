"""A network's forward pass on whole images: padding, the x8 ensemble, tiling (evaluate, restore, export,
validation). Imports only the models.

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
import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from jaxcar import models

DEFAULT_BUCKET = 64


@dataclasses.dataclass
class Predictor:
  """`model.apply` on float32 NHWC batches, compiled once per input shape."""
  model: nn.Module
  params: Any

  def __post_init__(self):
    self.takes_global = len(models.dummy_inputs(self.model)) == 2
    self.size_multiple = models.size_multiple(self.model)  # the QCN family needs even sizes
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


@dataclasses.dataclass(frozen=True)
class Plan:
  """How `run` covers an image: whole (padded to `bucket`, optionally the x8 ensemble), or in tiles
  when it has more than `max_pixels` (0: never)."""
  bucket: int = DEFAULT_BUCKET
  self_ensemble: bool = False
  max_pixels: int = 0
  tile: int = 512
  tile_overlap: int = 32


def run(predictor: Predictor, inputs, global_inputs=None, plan: Plan = Plan(),
        progress: Callable[[], None] | None = None) -> np.ndarray:
  """The network's output for one image as `plan` says (tiles ignore `bucket` and the ensemble)."""
  height, width = inputs.shape[:2]
  if plan.max_pixels and height * width > plan.max_pixels:
    return predict_tiled(predictor, inputs, global_inputs, plan.tile, plan.tile_overlap, progress)
  whole = lambda image, global_image: predict(predictor, image, global_image, plan.bucket)
  if plan.self_ensemble:
    return predict_ensemble(whole, inputs, global_inputs)
  return whole(inputs, global_inputs)

