"""Where ground-truth images come from and how one file becomes a clean uint8 array.

A source is "embedded" (real photographs bundled inside scikit-image, so a new user can train without
downloading anything; "embedded:validation" is the two of them held out from training), a named
dataset under the shared folder (`DATASETS`), a folder (searched recursively, sorted), or a .txt file
listing one image path per line (relative paths are taken from the list's folder), or "pairs:DIR", real
JPEGs with their clean originals (`jaxcar.data.pairs`). Several sources joined by commas are one source.
A validation source "split:N" is N images of the training source, which training then leaves out
(`training_and_validation`).

Folders, lists and files may be on any file system etils.epath reaches (`gs://bucket/...` on a TPU
pod); local paths go through pathlib exactly as before.
"""

import io
import logging
from pathlib import Path

from etils import epath
import numpy as np
from PIL import Image, ImageOps

from jaxcar import paths as shared_paths

IMAGE_SUFFIXES = (".png", ".bmp", ".tif", ".tiff", ".webp", ".jpg", ".jpeg")
COLORS = ("rgb", "grey")

# Only photographs of real scenes: skimage also ships drawings, text, microscopy and synthetic patterns.
EMBEDDED_PHOTOS = ("astronaut.png", "brick.png", "camera.png", "chelsea.png", "coffee.png", "coins.png",
                   "grass.png", "gravel.png", "moon.png", "motorcycle_left.png", "motorcycle_right.png",
                   "rocket.jpg")
# Held out of "embedded" for validation. Not motorcycle_right: it is the stereo twin of motorcycle_left.
EMBEDDED_VALIDATION = ("coffee.png", "rocket.jpg")
EMBEDDED_SOURCES = {
    "embedded": tuple(name for name in EMBEDDED_PHOTOS if name not in EMBEDDED_VALIDATION),
    "embedded:validation": EMBEDDED_VALIDATION,
}

# Transparent pixels are composited over this background; white is what viewers show for a page.
ALPHA_BACKGROUND = 255


# Named datasets: their folders under the shared folder ($JAXCAR_SHARED, default ../shared).
# `python -m jaxcar.data.fetch NAME --to $JAXCAR_SHARED` downloads each into this layout (FETCHED_AS:
# the fetch NAME where it is not the dataset's own).
DATASETS = {
    "bsds500": ("data/train/bsds500_train", "data/train/bsds500_test"),  # 400 colour photos, 481x321
    "bsd100": ("data/eval/BSD100",),                                     # BSDS500's other 100 (its val)
    "train400": ("data/train/train400_gray",),                           # 400 grey 180x180 crops
    "div2k": ("data/train/DIV2K_train_HR",),                             # 800 colour 2K photos
    "div2k_valid": ("data/eval/DIV2K_valid_HR",),                        # DIV2K's 100 validation photos
    "flickr2k": ("data/train/Flickr2K",),                                # 2650 colour 2K photos (HR)
    "live1_color": ("data/eval/LIVE1_color",),
    "live1_gray": ("data/eval/LIVE1_gray",),
    "classic5": ("data/eval/Classic5",),
}
FETCHED_AS = {"bsd100": "bsds500", "live1_color": "live1", "live1_gray": "live1"}
SPLIT_PREFIX = "split:"
PAIRS_PREFIX = "pairs:"


class ImageError(ValueError):
  """A file that cannot be used as a ground-truth image (the message names the file and why)."""


def list_images(source: str | Path) -> list[str]:
  """Image paths of a source, sorted and deterministic; a clear error if it holds none."""
  parts = [part.strip() for part in str(source).split(",") if part.strip()]
  if len(parts) > 1:
    return [path for part in parts for path in list_images(part)]
  if str(source).lower() in DATASETS:
    name = str(source).lower()
    return [path for folder in DATASETS[name]
            for path in list_images(shared_paths.require_shared(folder, dataset=name,
                                                                fetch=FETCHED_AS.get(name, name)))]
  if str(source) in EMBEDDED_SOURCES:
    return _embedded_paths(EMBEDDED_SOURCES[str(source)])
  if str(source).startswith(PAIRS_PREFIX):
    from jaxcar.data import pairs  # pylint: disable=import-outside-toplevel  (pairs builds on this module)
    return pairs.list_pairs(str(source)[len(PAIRS_PREFIX):])
  path = as_path(source)
  if path.is_dir():
    found = sorted(p for p in files_under(path) if Path(p).suffix.lower() in IMAGE_SUFFIXES)
    if not found:
      raise FileNotFoundError(f"image folder {path} holds no {'/'.join(IMAGE_SUFFIXES)} files")
    return found
  if path.is_file() and path.suffix.lower() == ".txt":
    return _listed_paths(path)
  raise FileNotFoundError(f"image source {source} not found: give {' or '.join(map(repr, EMBEDDED_SOURCES))}, "
                          f"a folder, a .txt list or pairs:DIR")


def is_uri(path) -> bool:
  """Whether `path` names a file on another file system (gs://, s3://, ...), read through epath."""
  return "://" in str(path)


def as_path(path):
  """pathlib.Path for a local path (unchanged behaviour), etils epath.Path for a URI such as gs://."""
  return epath.Path(str(path)) if is_uri(path) else Path(path).expanduser()


def files_under(folder) -> list[str]:
  """Every file below `folder`, recursively. epath refuses `**` globs on GCS (one request per folder
  level is what walk() does anyway), so URIs are walked; local folders keep pathlib's rglob."""
  if not is_uri(folder):
    return [str(p) for p in Path(folder).rglob("*") if p.is_file()]
  return [str(epath.Path(top) / name) for top, _, names in epath.Path(str(folder)).walk() for name in names]


def read_bytes(path) -> bytes:
  return as_path(path).read_bytes()


def training_and_validation(source: str, validation: str) -> tuple[list[str], list[str]]:
  """(training paths, validation paths). "split:N" holds out N images of `source`, evenly spaced in its
  sorted list (so every folder of a combined source is represented), and trains on the rest."""
  training = list_images(source)
  if not validation:
    return training, []
  if not validation.startswith(SPLIT_PREFIX):
    return training, list_images(validation)
  count = validation[len(SPLIT_PREFIX):]
  if not count.isdigit() or not 0 < int(count) < len(training):
    raise ValueError(f"data.validation={validation!r}: N must be an integer in [1, {len(training) - 1}]")
  held_out = set(np.linspace(0, len(training) - 1, int(count)).round().astype(int).tolist())
  return ([p for i, p in enumerate(training) if i not in held_out],
          [p for i, p in enumerate(training) if i in held_out])


def _embedded_paths(names) -> list[str]:
  import skimage.data  # pylint: disable=import-outside-toplevel  (only this source needs it)
  folder = Path(skimage.data.__file__).parent
  return [str(folder / name) for name in names if (folder / name).is_file()]


_reported_lists: set = set()  # (list file, its missing paths) already logged by this process


def _listed_paths(list_file: Path) -> list[str]:
  """The files a .txt list names; those that do not exist are skipped and logged once (with the count),
  so training, validation and evaluation all go on with the rest. An error only if none is left."""
  lines = [line.strip() for line in list_file.read_text().splitlines()]
  paths = [_listed_path(list_file, line) for line in lines if line and not line.startswith("#")]
  if not paths:
    raise FileNotFoundError(f"image list {list_file} names no files")
  found = [path for path in paths if as_path(path).is_file()]
  present = set(found)
  missing = {path: "listed but not found" for path in paths if path not in present}
  if not found:
    raise FileNotFoundError(f"image list {list_file}: none of its {len(paths)} files exists (e.g. {paths[0]})")
  key = (str(list_file if is_uri(list_file) else list_file.resolve()), tuple(sorted(missing)))
  if missing and key not in _reported_lists:
    _reported_lists.add(key)
    report_skipped(missing, f"image list {list_file}")
  return found


def _listed_path(list_file, line: str) -> str:
  """A line of a list: a URI as it is, else a path relative to the list's folder (local: resolved)."""
  if is_uri(line):
    return line
  if is_uri(list_file):
    return str(list_file.parent / line)
  return str((list_file.parent / line).resolve())


def open_image(path) -> Image.Image:
  """Image.open of a local path, or of a URI's bytes read in one request (Pillow seeks back and forth,
  which costs a round trip each on a remote file system)."""
  return Image.open(io.BytesIO(read_bytes(path))) if is_uri(path) else Image.open(path)


def load_image(path: str | Path, color: str, orient: bool = True) -> np.ndarray:
  """Decodes one file into uint8 (H, W, 3) for "rgb" or (H, W, 1) for "grey".

  EXIF orientation is applied; 16-bit samples are scaled to 8 bits (v / 257, rounded); alpha is
  dropped by compositing over white; palette and CMYK files are converted to RGB (CMYK naively, without
  its ICC profile). "grey" keeps a grey file's own values; a colour file becomes its BT.601 luma as
  MATLAB `rgb2ycbcr` computes it (Y = 16 + (65.481 R + 128.553 G + 24.966 B) / 255, range 16-235,
  rounded). Raises ImageError (one line naming the file) for anything unreadable. Pillow's
  decompression-bomb guard stays on. orient=False keeps the stored orientation (a pair's clean file
  must stay aligned with its JPEG's block grid).
  """
  if color not in COLORS:
    raise ValueError(f"color must be one of {COLORS}, got {color!r}")
  try:
    with open_image(path) as image:
      image = ImageOps.exif_transpose(image) if orient else image
      pixels, is_grey = _to_uint8(image)
  except ImageError as error:
    raise ImageError(f"{path}: {error}") from None
  except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
    raise ImageError(f"{path}: not a readable image ({type(error).__name__}: {error})") from None
  if color == "grey":
    return pixels[..., :1] if is_grey else rgb_to_luma(pixels)
  return np.repeat(pixels, 3, axis=-1) if is_grey else pixels


def _to_uint8(image: Image.Image) -> tuple[np.ndarray, bool]:
  """(H, W, C) uint8 with C = 1 for grey files and 3 otherwise, and whether the file is grey."""
  mode = image.mode
  if mode in ("1", "L"):
    return np.asarray(image.convert("L"))[..., None], True
  if mode.startswith("I;16") or mode == "I":
    samples = np.asarray(image).astype(np.float64)
    return np.clip(np.round(samples / 257.0), 0, 255).astype(np.uint8)[..., None], True
  if mode == "F":
    raise ImageError("floating-point pixels have no known value range; save the image as 8 or 16 bit")
  if mode == "LA" or (mode == "P" and "transparency" in image.info) or mode in ("RGBA", "PA", "La"):
    return _over_background(image.convert("RGBA")), False
  return np.asarray(image.convert("RGB")), False


def _over_background(rgba: Image.Image) -> np.ndarray:
  pixels = np.asarray(rgba).astype(np.float32)
  alpha = pixels[..., 3:] / 255.0
  blended = pixels[..., :3] * alpha + ALPHA_BACKGROUND * (1.0 - alpha)
  return np.round(blended).astype(np.uint8)


def rgb_to_luma(rgb: np.ndarray) -> np.ndarray:
  """uint8 RGB (H, W, 3) -> uint8 Y (H, W, 1), BT.601 studio range as MATLAB `rgb2ycbcr`."""
  weights = np.array([65.481, 128.553, 24.966], np.float64)
  luma = rgb.astype(np.float64) @ weights / 255.0 + 16.0
  # MATLAB rounds halves away from zero; numpy's round would send 124.5 to 124.
  return np.floor(luma + 0.5).astype(np.uint8)[..., None]


def report_skipped(skipped: dict[str, str], what: str) -> None:
  """Logs each skipped file once, with why, so bad data is visible but never fatal."""
  if not skipped:
    return
  logging.warning("%s: skipped %d file(s)", what, len(skipped))
  for path, reason in sorted(skipped.items()):
    logging.warning("  skipped %s: %s", path, reason)
