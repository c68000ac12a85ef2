"""Per-example training transforms: clean image -> (degraded model input, clean target) pair.

Runs inside Grain worker processes: plain numpy and Pillow, no JAX. All randomness comes from the
generator Grain derives from the pipeline seed and the element index, so an example is the same
whatever the worker count and after a restore.
"""

import dataclasses

import grain
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
  double_quality_range: tuple[int, ...] = ()
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
    if self.subsampling not in jpeg.SUBSAMPLINGS:
      raise ValueError(f"data.subsampling must be one of {jpeg.SUBSAMPLINGS}, got {self.subsampling!r}")
    prepare.to_model_range(np.zeros(1, np.uint8), self.value_range)  # raises on an unknown range

  @property
  def crop_size(self) -> int:
    """Side of the clean crop: double compression needs room to shift the second 8x8 grid."""
    return self.patch_size + (GRID if self.double_quality_range else 0)


class DegradePatch(grain.transforms.RandomMap):
  """uint8 (H, W, C) image -> {"clean", "degraded" (uint8 patches), "tables", "quality"} for one patch."""

  def __init__(self, settings: PairSettings):
    self.settings = settings

  def random_map(self, element: np.ndarray, rng: np.random.Generator) -> dict:
    s = self.settings
    clean = random_crop(element, s.crop_size, s.rescale_choices, rng)
    clean = np.ascontiguousarray(dihedral(clean, int(rng.integers(8))) if s.dihedral else clean)
    quality = int(rng.integers(s.quality_range[0], s.quality_range[1] + 1))
    if s.double_quality_range:
      clean, quality, data = double_compress(clean, quality, s, rng)
    else:
      data = jpeg.compress(clean, quality, s.subsampling)
    return {"clean": clean, "degraded": jpeg.decode_known(data, clean.shape),
            "tables": jpeg.quantization_tables(data), "quality": np.int32(quality)}


class ToModelBatch(grain.transforms.Map):
  """A batch of DegradePatch outputs -> {"inputs", "targets", ["global_inputs"], "quality"}."""

  def __init__(self, settings: PairSettings):
    self.settings = settings

  def map(self, element: dict) -> dict:
    batch = prepare.batch_model_inputs(element["degraded"], element["tables"], self.settings)
    batch["targets"] = prepare.to_model_range(element["clean"], self.settings.value_range)
    batch["quality"] = element["quality"]
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


def dihedral(image: np.ndarray, which: int) -> np.ndarray:
  """One of the 8 rotations/reflections (a view): `which` % 4 quarter turns, mirrored if >= 4."""
  turned = np.rot90(image, which % 4)
  return turned[:, ::-1] if which >= 4 else turned


def double_compress(clean: np.ndarray, first_quality: int, s: PairSettings, rng: np.random.Generator):
  """Compress at `first_quality`, shift the 8x8 grid by 1-7 pixels, compress again at a second quality.

  Returns (clean patch, second quality, final JPEG bytes). The shift means the two block grids never
  line up, which is what happens when a JPEG is cropped and saved again.
  """
  shift = int(rng.integers(1, GRID * GRID))  # (dy, dx) in 0..7 x 0..7, never both zero
  dy, dx = divmod(shift, GRID)
  once = jpeg.decode_known(jpeg.compress(clean, first_quality, s.subsampling), clean.shape)
  window = (slice(dy, dy + s.patch_size), slice(dx, dx + s.patch_size))
  second_quality = int(rng.integers(s.double_quality_range[0], s.double_quality_range[1] + 1))
  data = jpeg.compress(np.ascontiguousarray(once[window]), second_quality, s.subsampling)
  return np.ascontiguousarray(clean[window]), second_quality, data
