"""Per-example training transforms: clean image -> (degraded model input, clean target) pair.

Runs inside Grain worker processes: plain numpy and Pillow, no JAX. All randomness comes from the
generator Grain derives from the pipeline seed and the element index, so an example is the same
whatever the worker count and after a restore.
"""

import dataclasses

import numpy as np
from PIL import Image

from jaxcar.data import jpeg, prepare

GRID = 8  # JPEG block size


@dataclasses.dataclass(frozen=True)
class PairSettings:
  """The parts of `config.data` a worker needs, as a small picklable value."""
  patch_size: int
  quality_range: tuple[int, int]
  subsampling: str = "4:2:0"
  other_subsampling_fraction: float = 0.0
  double_quality_range: tuple[int, ...] = ()
  double_fraction: float = 1.0
  dihedral: bool = True
  rescale_choices: tuple[float, ...] = ()
  value_range: str = "zero_one"
  quantization_maps: bool = False
  global_size: int = 0

  @classmethod
  def from_config(cls, data_config) -> "PairSettings":
    names = [field.name for field in dataclasses.fields(cls)]
    values = {name: data_config[name] for name in names if name in data_config}
    for name in ("quality_range", "double_quality_range", "rescale_choices"):
      if name in values:
        values[name] = tuple(values[name])
    settings = cls(**values)
    settings.check()
    return settings

  def check(self) -> None:
    for name in ("quality_range", "double_quality_range"):
      qualities = getattr(self, name)
      if qualities and (len(qualities) != 2 or not 1 <= qualities[0] <= qualities[1] <= 100):
        raise ValueError(f"data.{name} must be (lo, hi) with 1 <= lo <= hi <= 100, got {qualities}")
    if self.patch_size < GRID:
      raise ValueError(f"data.patch_size must be at least {GRID}, got {self.patch_size}")
    if any(not 0 < scale <= 1 for scale in self.rescale_choices):
      raise ValueError(f"data.rescale_choices must lie in (0, 1], got {self.rescale_choices}")
    for name in ("other_subsampling_fraction", "double_fraction"):
      if not 0.0 <= getattr(self, name) <= 1.0:
        raise ValueError(f"data.{name} must lie in [0, 1], got {getattr(self, name)}")
    if self.subsampling not in jpeg.SUBSAMPLINGS:
      raise ValueError(f"data.subsampling must be one of {jpeg.SUBSAMPLINGS}, got {self.subsampling!r}")
    prepare.to_model_range(np.zeros(1, np.uint8), self.value_range)  # raises on an unknown range

  @property
  def crop_size(self) -> int:
    """Side of the largest clean crop: double compression needs room to shift the second 8x8 grid."""
    return self.patch_size + (GRID if self.double_quality_range else 0)

  def draw_double(self, rng: np.random.Generator) -> bool:
    """Whether this patch is compressed twice (no draw unless the share is strictly between 0 and 1,
    so the recipes that always or never double-compress keep their random streams)."""
    if not self.double_quality_range or self.double_fraction <= 0.0:
      return False
    return self.double_fraction >= 1.0 or bool(rng.random() < self.double_fraction)

  def draw_subsampling(self, rng: np.random.Generator, channels: int) -> str:
    """`subsampling`, or with probability `other_subsampling_fraction` the other one (colour only)."""
    if channels == 1 or self.other_subsampling_fraction <= 0.0 or rng.random() >= self.other_subsampling_fraction:
      return self.subsampling
    return next(other for other in jpeg.SUBSAMPLINGS if other != self.subsampling)


def degrade_patch(image: np.ndarray, settings: PairSettings, rng: np.random.Generator) -> dict:
  """uint8 (H, W, C) image -> {"clean", "degraded" (uint8 patches), "tables", "quality"} for one patch."""
  s = settings
  double = s.draw_double(rng)
  crop_size = s.patch_size + (GRID if double else 0)
  crop = np.ascontiguousarray(random_crop(image, crop_size, s.rescale_choices, rng))
  pil = Image.fromarray(crop[..., 0] if crop.shape[-1] == 1 else crop)
  if s.dihedral:
    pil = dihedral(pil, int(rng.integers(8)))
  clean = np.asarray(pil).reshape(crop.shape)
  quality = int(rng.integers(s.quality_range[0], s.quality_range[1] + 1))
  subsampling = s.draw_subsampling(rng, clean.shape[-1])
  if double:
    clean, quality, data = double_compress(clean, quality, s, rng, subsampling)
  else:
    data = jpeg.encode(pil, quality, subsampling)
  return {"clean": clean, "degraded": jpeg.decode_known(data, clean.shape),
          "tables": _tables(data, quality, subsampling, clean.shape[-1]), "quality": quality}


def _tables(data: bytes, quality: int, subsampling: str, channels: int) -> np.ndarray:
  """jpeg.quantization_tables(data) for a patch this process encoded: Pillow writes the same tables for
  the same (quality, subsampling, channels), so the first patch of each read them from its bytes and
  the others reuse them (parsing them again cost ~8% of a patch)."""
  key = (quality, subsampling, channels)
  if key not in _TABLES_SEEN:
    _TABLES_SEEN[key] = jpeg.quantization_tables(data)
  return _TABLES_SEEN[key]


_TABLES_SEEN = {}


def to_model_batch(patches: list[dict], settings: PairSettings) -> dict:
  """degrade_patch outputs -> the batch a worker ships (BUILD_NOTES.md, Layout), (B, ...) arrays:
  {"inputs", "targets": uint8 images, ["maps": (B, 8, 8, 1 or 2) float32], "quality"}.

  The images stay uint8 and the quantization maps stay one 8x8 period: the jitted train step makes
  the model's float inputs from them (`training.steps.model_batch`), bit for bit what
  `prepare.batch_model_inputs` gives on the host. Shipping floats cost a worker ~5x the bytes per
  patch (131 vs 25 kB for 64x64 RGB with maps), and copying them into shared memory ~65 us per patch.
  QGCN's global image (`settings.global_size`) is not shipped either: the step makes it from `inputs`
  with the host's resize matrices, within float32 rounding of `prepare.global_images` (150 kB per
  patch saved).
  """
  degraded = np.stack([p["degraded"] for p in patches])
  batch = {"inputs": degraded, "targets": np.stack([p["clean"] for p in patches])}
  if settings.quantization_maps:
    # The maps repeat with an 8-pixel period from pixel (0, 0): the host's own map code on an 8x8
    # patch gives that period exactly, and the device only tiles it (a copy, no arithmetic). Only the
    # tables the maps use are stacked (luma; chroma, or luma again for a one-table file), so files with
    # 1, 2 or 3 tables can share a batch.
    channels = degraded.shape[-1]
    used = [p["tables"][[0] if channels == 1 else [0, min(1, len(p["tables"]) - 1)]] for p in patches]
    batch["maps"] = jpeg.batch_quantization_maps(np.stack(used), GRID, GRID, channels)
  batch["quality"] = np.array([p["quality"] for p in patches], np.int32)
  return batch


def random_crop(image: np.ndarray, size: int, rescale_choices, rng: np.random.Generator) -> np.ndarray:
  """A size x size crop (a view when not rescaled); with rescale choices, half the time a crop of the
  image rescaled by one of them.

  Rescaling only the region the crop needs (side size / scale, bicubic, as Pillow resizes the whole
  image) costs the same as an ordinary crop instead of resizing the full image for every patch.
  """
  side = size
  if rescale_choices and rng.random() < 0.5:
    side = int(round(size / float(rng.choice(rescale_choices))))
    if side > min(image.shape[:2]):
      side = size  # the image is too small to rescale this much: keep the plain crop
  top = int(rng.integers(image.shape[0] - side + 1))
  left = int(rng.integers(image.shape[1] - side + 1))
  region = image[top:top + side, left:left + side]
  if side == size:
    return region
  region = np.ascontiguousarray(region)
  pil = Image.fromarray(region[..., 0] if region.shape[-1] == 1 else region)
  resized = np.asarray(pil.resize((size, size), Image.Resampling.BICUBIC))
  return resized.reshape(size, size, region.shape[-1])


def dihedral(image: Image.Image, which: int) -> Image.Image:
  """One of the 8 rotations/reflections of a Pillow image (0 = unchanged).

  Pillow rather than numpy: Pillow moves whole 4-byte pixels, while numpy copies a rotated (H, W, 3)
  view 3 bytes at a time, ~10x slower at 64x64.
  """
  return image if which == 0 else image.transpose(_DIHEDRAL[which])


_DIHEDRAL = [None, Image.Transpose.ROTATE_90, Image.Transpose.ROTATE_180, Image.Transpose.ROTATE_270,
             Image.Transpose.FLIP_LEFT_RIGHT, Image.Transpose.TRANSVERSE, Image.Transpose.FLIP_TOP_BOTTOM,
             Image.Transpose.TRANSPOSE]


def double_compress(clean: np.ndarray, first_quality: int, s: PairSettings, rng: np.random.Generator,
                    subsampling: str | None = None):
  """Compress at `first_quality`, shift the 8x8 grid by 1-7 pixels, compress again at a second quality.

  Returns (clean patch, second quality, final JPEG bytes). The shift means the two block grids never
  line up, which is what happens when a JPEG is cropped and saved again.
  """
  subsampling = subsampling or s.subsampling
  shift = int(rng.integers(1, GRID * GRID))  # (dy, dx) in 0..7 x 0..7, never both zero
  dy, dx = divmod(shift, GRID)
  once = jpeg.decode_known(jpeg.compress(clean, first_quality, subsampling), clean.shape)
  window = (slice(dy, dy + s.patch_size), slice(dx, dx + s.patch_size))
  second_quality = int(rng.integers(s.double_quality_range[0], s.double_quality_range[1] + 1))
  data = jpeg.compress(np.ascontiguousarray(once[window]), second_quality, subsampling)
  return np.ascontiguousarray(clean[window]), second_quality, data


def aligned_pair_patch(pair: np.ndarray, tables: np.ndarray, grid: int, settings: PairSettings,
                       rng: np.random.Generator) -> dict:
  """A patch of a real (JPEG, clean) pair, as degrade_patch returns one; "quality" is 0 (unknown).

  `pair` is (H, W, 2C): the decoded JPEG's channels, then the clean image's. The crop starts on the
  JPEG's block grid (8, or 16 with subsampled chroma) so the quantization maps, tiled from the patch's
  pixel (0, 0), stay on its blocks. A flip or rotation keeps that only when the patch is a whole number
  of grid cells (the far edge becomes the origin); a transposing one also transposes the tables, since
  a transposed block's DCT coefficients are the original's transposed. Otherwise the patch stays as is.
  """
  size = settings.patch_size
  top = grid * int(rng.integers((pair.shape[0] - size) // grid + 1))
  left = grid * int(rng.integers((pair.shape[1] - size) // grid + 1))
  crop = pair[top:top + size, left:left + size]
  which = int(rng.integers(8)) if settings.dihedral else 0
  if which and size % grid == 0:
    crop, tables = dihedral_array(crop, which), (tables.transpose(0, 2, 1) if which % 2 else tables)
  channels = pair.shape[-1] // 2
  return {"clean": np.ascontiguousarray(crop[..., channels:]),
          "degraded": np.ascontiguousarray(crop[..., :channels]), "tables": tables, "quality": 0}


def dihedral_array(image: np.ndarray, which: int) -> np.ndarray:
  """One of the 8 rotations/reflections of an (H, W, C) array: `which` % 4 quarter turns, after a
  left-right flip when `which` >= 4. Odd `which` swap the axes (a transpose is part of it)."""
  flipped = image[:, ::-1] if which >= 4 else image
  return np.rot90(flipped, which % 4)
