"""`python -m jaxcar.restore INPUT... --output DIR`: restore real JPEG files.

    python -m jaxcar.restore photos/ IMG_0042.jpg --output restored      # the shipped color/grey models
    python -m jaxcar.restore photos/ --output restored --config=qcn --workdir=runs/qcn
    python -m jaxcar.restore scan.jpg --output out --weights=exported/qgcn.safetensors --format=jpeg

Each file's own quantization tables drive QCN/QGCN (no quality flag); a network trained for some
qualities warns when a file's estimated quality is outside that range. Pixels are restored in the
stored orientation (where the 8x8 JPEG grid lies) and the file's EXIF (orientation included), DPI,
XMP and ICC profile (when it still describes the output's colours) are copied to the output. A grey
network restores the luma plane a colour file stores and keeps its chroma; a colour network given a
grey file restores it as RGB and writes grey back. Images above --max_pixels run in overlapping tiles,
so memory stays bounded. Unreadable, non-JPEG, oversized (--max_image_pixels) or implausible files
(far fewer bytes than their declared size needs) are reported and skipped; the others are restored.
"""

import collections
import dataclasses
import functools
from pathlib import Path

from absl import flags, logging
import numpy as np
from PIL import Image
from tqdm import tqdm

from jaxcar import cli, loading, predict, zoo
from jaxcar.data import jpeg, jpeg_file

JPEG_SUFFIXES = (".jpg", ".jpeg", ".jpe", ".jfif")
OUTPUT_FORMATS = {"png": ".png", "jpeg": ".jpg", "webp": ".webp"}

FLAGS = flags.FLAGS


@dataclasses.dataclass
class Settings:
  output_format: str = "png"
  output_quality: int = 95
  max_pixels: int = 4_000_000  # above this, tiles: about 1 GB of activations for a 64-feature network
  tile: int = 512
  tile_overlap: int = 32
  bucket: int = predict.DEFAULT_BUCKET
  self_ensemble: bool = False
  overwrite: bool = False
  max_image_pixels: int = jpeg_file.DEFAULT_MAX_PIXELS  # larger files are skipped (decompression bombs)

  def plan(self) -> predict.Plan:
    return predict.Plan(bucket=self.bucket, self_ensemble=self.self_ensemble, max_pixels=self.max_pixels,
                        tile=self.tile, tile_overlap=self.tile_overlap)


def find_inputs(inputs: list[str]) -> list[tuple[Path, Path]]:
  """(file, path relative to the output folder) for every file given and every JPEG under folders given."""
  found = []
  for name in inputs:
    path = Path(name).expanduser()
    if path.is_dir():
      found += [(f, f.relative_to(path)) for f in sorted(path.rglob("*"))
                if f.is_file() and f.suffix.lower() in JPEG_SUFFIXES]
    else:
      found.append((path, Path(path.name)))
  return found


def plan_outputs(found, output_dir: Path, settings: Settings) -> list[tuple[Path, Path]]:
  """(input, output) pairs; refuses up front to overwrite an input file without --overwrite."""
  suffix = OUTPUT_FORMATS[settings.output_format]
  pairs = [(source, output_dir / relative.with_suffix(suffix)) for source, relative in found]
  sources = {source.resolve() for source, _ in pairs if source.exists()}
  clobbered = [str(out) for _, out in pairs if out.resolve() in sources]
  if clobbered and not settings.overwrite:
    raise ValueError(f"the output would overwrite input file(s) {clobbered[:3]}; choose another --output or "
                     f"pass --overwrite")
  repeated = sorted(str(out) for out, count in collections.Counter(out for _, out in pairs).items() if count > 1)
  if repeated:
    raise ValueError(f"several inputs would be written to {repeated[:3]}; restore them into separate --output folders")
  return pairs


@functools.lru_cache(maxsize=1)
def _ijg_luma_tables() -> np.ndarray:
  """(100, 8, 8) luma tables Pillow (libjpeg) writes at qualities 1..100."""
  tiny = np.zeros((8, 8, 1), np.uint8)
  return np.stack([jpeg.quantization_tables(jpeg.compress(tiny, q))[0] for q in range(1, 101)])


def estimate_quality(tables: np.ndarray) -> int:
  """The libjpeg quality whose luma table is closest to the file's (exact for libjpeg encoders)."""
  distances = np.abs(_ijg_luma_tables() - tables[0]).sum(axis=(1, 2))
  return int(np.argmin(distances)) + 1


def warn_if_unfamiliar(loaded: loading.LoadedModel, tables: np.ndarray, name: str) -> None:
  data = loaded.config.data
  if data.quantization_maps:
    return  # the tables are an input: any quality is in range
  low, high = data.quality_range
  quality = estimate_quality(tables)
  if not low <= quality <= high:
    logging.warning("%s: JPEG quality about %d, but %s was trained on qualities %d-%d; results may be poor",
                    name, quality, loaded.config.model.name, low, high)


def restore_array(loaded: loading.LoadedModel, decoded: np.ndarray, tables: np.ndarray,
                  settings: Settings, stored: jpeg_file.StoredPlanes | None = None) -> np.ndarray:
  """uint8 restoration of a decoded image with the model's channel count (whole or tiled), with a
  progress bar over the tiles of a large image; `stored` as LoadedModel.restore takes it."""
  height, width = decoded.shape[:2]
  if height * width <= settings.max_pixels:
    return loaded.restore(decoded, tables, settings.plan(), stored=stored)
  tiles = predict.tile_count(height, width, settings.tile, settings.tile_overlap, loaded.predictor.size_multiple)
  with tqdm(total=tiles, desc="tiles", unit="tile", leave=False) as bar:
    return loaded.restore(decoded, tables, settings.plan(), bar.update, stored)


def restore_image(loaded: loading.LoadedModel, file: jpeg_file.JpegFile, settings: Settings) -> Image.Image:
  """A restored PIL image in the file's own colour mode (stored orientation)."""
  image, tables = file.image, file.tables
  model_grey = loaded.color == "grey"
  if image.mode == "L":
    pixels = np.asarray(image)[..., None]
    if model_grey:
      return Image.fromarray(restore_array(loaded, pixels, tables, settings)[..., 0])
    restored = restore_array(loaded, np.repeat(pixels, 3, axis=-1), tables, settings)
    return Image.fromarray(restored).convert("L")
  if model_grey:  # restore the luma plane the JPEG stored (not one recomputed from clipped RGB); keep its chroma
    _, blue, red = image.convert("YCbCr").split()
    restored = restore_array(loaded, file.luma()[..., None], tables, settings)[..., 0]
    return Image.merge("YCbCr", (Image.fromarray(restored), blue, red)).convert("RGB")
  return Image.fromarray(restore_array(loaded, np.asarray(image.convert("RGB")), tables, settings,
                                       loaded.stored_planes(file.data)))


class ModelByColor:
  """The shipped `color` model for colour files and `grey` for grey ones, each loaded on first use:
  what restore uses when no model is named."""

  def __init__(self):
    self._loaded = {}

  def __call__(self, image: Image.Image) -> loading.LoadedModel:
    name = zoo.DEFAULT_FOR_COLOR["grey" if image.mode == "L" else "rgb"]
    if name not in self._loaded:
      self._loaded[name] = loading.load_model(pretrained=name)
      logging.info("using the pretrained model %s for %s files", self._loaded[name].source, name)
    return self._loaded[name]


def restore_files(model_for, inputs: list[str], output_dir: Path, settings: Settings) -> dict:
  """Restores every input with `model_for` (a LoadedModel, or a function from the decoded image to
  one, such as ModelByColor); returns {"restored": [...], "skipped": {path: reason}}."""
  if isinstance(model_for, loading.LoadedModel):
    model_for = lambda image, fixed=model_for: fixed
  pairs = plan_outputs(find_inputs(inputs), output_dir, settings)
  restored, skipped = [], {}
  for source, target in tqdm(pairs, desc="restore", unit="file"):
    if target.exists() and target.resolve() != source.resolve() and not settings.overwrite:
      skipped[str(source)] = f"{target} exists (pass --overwrite to replace it)"
      continue
    try:
      file = jpeg_file.read(source, settings.max_image_pixels)
    except (OSError, ValueError) as error:
      skipped[str(source)] = f"not restored: {error}"
      continue
    loaded = model_for(file.image)
    warn_if_unfamiliar(loaded, file.tables, source.name)
    restored_image = restore_image(loaded, file, settings)
    jpeg_file.save(restored_image, target, file.metadata, settings.output_format, settings.output_quality)
    restored.append(str(target))
  for source, reason in skipped.items():
    logging.warning("skipped %s: %s", source, reason)
  return {"restored": restored, "skipped": skipped}


def main(argv):
  if len(argv) < 2:
    raise cli.UsageError("give one or more JPEG files or folders: python -m jaxcar.restore INPUT... --output DIR")
  settings = Settings(output_format=FLAGS.format, output_quality=FLAGS.output_quality, max_pixels=FLAGS.max_pixels,
                      tile=FLAGS.tile, tile_overlap=FLAGS.tile_overlap, bucket=FLAGS.bucket,
                      self_ensemble=FLAGS.self_ensemble, overwrite=FLAGS.overwrite,
                      max_image_pixels=FLAGS.max_image_pixels)
  named = any(FLAGS[name].present for name in ("config", "weights", "workdir", "model"))
  model_for = cli.load_model_from_flags() if named else ModelByColor()
  result = restore_files(model_for, argv[1:], Path(FLAGS.output), settings)
  if not result["restored"]:  # a script must not mistake "every input was skipped" for success
    raise ValueError(f"nothing restored: all {len(result['skipped'])} input(s) were skipped (reasons above)")
  print(f"restored {len(result['restored'])} file(s) into {FLAGS.output}; skipped {len(result['skipped'])}")


def define_flags() -> None:
  cli.define_model_flags()
  flags.DEFINE_string("output", None, "Folder for the restored images.")
  flags.DEFINE_enum("format", "png", list(OUTPUT_FORMATS), "Output format: lossless PNG, or high-quality JPEG/WebP.")
  flags.DEFINE_integer("output_quality", 95, "Quality of JPEG/WebP outputs (1-100).", lower_bound=1, upper_bound=100)
  flags.DEFINE_integer("max_pixels", Settings.max_pixels, "Larger images are restored in overlapping tiles.",
                       lower_bound=1)
  flags.DEFINE_integer("max_image_pixels", Settings.max_image_pixels, "Files declaring more pixels are skipped "
                       "(decompression bombs); raise it for genuinely huge photos.", lower_bound=1)
  flags.DEFINE_integer("tile", Settings.tile, "Tile side in pixels.", lower_bound=16)
  flags.DEFINE_integer("tile_overlap", Settings.tile_overlap,
                       "Context pixels on each inner tile side; at least the receptive radius makes tiling exact.",
                       lower_bound=0)
  flags.DEFINE_integer("bucket", predict.DEFAULT_BUCKET, "Pad whole images to a multiple of this (fewer compiles; "
                       "0 = none).", lower_bound=0)
  flags.DEFINE_bool("self_ensemble", False, "Average the 8 flips/rotations (whole images only; x8 slower).")
  flags.DEFINE_bool("overwrite", False, "Replace existing outputs, including an input file itself.")
  flags.mark_flag_as_required("output")


if __name__ == "__main__":
  cli.run(main, define_flags)
