"""Real JPEG files in and restored images out: what `jaxcar.restore` reads and writes, safely.

Reading refuses, with one line each, what would cost far more than the file is worth: a declared size
above a pixel ceiling (Pillow's decompression-bomb warning is an error here) and a file too small to
hold the pixels it declares (a 1 KB file claiming 144 MP). A colour file also yields the luma plane
the JPEG stored, as decoded before any colour conversion, which is what a grey network restores.

Metadata carried to the output: EXIF (orientation included), DPI, XMP and the ICC profile, the profile
only when its colour space is the output's (a CMYK file's pixels are converted to sRGB through its
profile, and the CMYK profile is dropped).
"""

import dataclasses
import io
from pathlib import Path
import warnings

import numpy as np
from PIL import Image, ImageCms, PngImagePlugin

from jaxcar.data import jpeg

DEFAULT_MAX_PIXELS = Image.MAX_IMAGE_PIXELS  # ~89 MP: where Pillow starts to warn of a decompression bomb
# A baseline or progressive JPEG spends at least ~1 bit per 8x8 block on its DC coefficient: 1 byte per
# 512 pixels of one component. Half that still leaves a wide margin; far fewer bytes is a corrupt header.
MIN_BYTES_PER_PIXEL = 1 / 1024
ICC_SPACES = {"RGB": "RGB ", "L": "GRAY"}  # output mode -> the profile colour space that may describe it
XMP_PNG_KEY = "XML:com.adobe.xmp"


@dataclasses.dataclass
class JpegFile:
  image: Image.Image        # decoded, mode "L" or "RGB", stored orientation (the 8x8 grid's)
  tables: np.ndarray        # (n, 8, 8) quantization tables
  metadata: dict            # what `save` carries over: exif, icc_profile, dpi, xmp
  data: bytes               # the file, for `luma`

  def luma(self) -> np.ndarray:
    """(H, W) uint8 luma: the Y plane the file stores (decoded again, without colour conversion, only
    when a grey network asks), or Pillow's Y of the decoded RGB for a file that is not YCbCr inside."""
    if self.image.mode == "L":
      return np.asarray(self.image)
    stored = stored_luma(self.data)
    return stored if stored is not None else np.asarray(self.image.convert("YCbCr"))[..., 0]


def read(path: Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> JpegFile:
  """The file decoded, or ValueError (one line) for a non-JPEG, corrupt, oversized or implausible file."""
  data = Path(path).read_bytes()
  tables = jpeg.quantization_tables(data)  # raises for anything that is not a JPEG
  height, width = jpeg.declared_size(data)
  _check_size((width, height), len(data), max_pixels)
  try:
    with warnings.catch_warnings():
      warnings.simplefilter("error", Image.DecompressionBombWarning)
      with Image.open(io.BytesIO(data)) as opened:
        opened.load()
        image, metadata = _as_rgb_or_grey(opened), _metadata(opened)
  except (OSError, SyntaxError, Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
    raise ValueError(f"cannot be decoded ({error})") from None
  if "icc_profile" in metadata and _profile_space(metadata["icc_profile"]) != ICC_SPACES[image.mode]:
    del metadata["icc_profile"]  # e.g. a CMYK file's profile: wrong for the RGB pixels written
  return JpegFile(image, tables, metadata, data)


def _check_size(size: tuple[int, int], file_bytes: int, max_pixels: int) -> None:
  pixels = size[0] * size[1]
  if pixels > max_pixels:
    raise ValueError(f"{size[0]}x{size[1]} ({pixels / 1e6:.0f} MP) is above the {max_pixels / 1e6:.0f} MP "
                     f"ceiling (--max_image_pixels; raise it to restore this file)")
  if file_bytes < pixels * MIN_BYTES_PER_PIXEL:
    raise ValueError(f"{file_bytes} bytes cannot hold the {size[0]}x{size[1]} pixels it declares "
                     f"(truncated or corrupt)")


def _as_rgb_or_grey(opened: Image.Image) -> Image.Image:
  """L and RGB as they are; CMYK through its own ICC profile to sRGB where it has one; others to RGB."""
  if opened.mode in ("L", "RGB"):
    return opened.copy()
  profile = opened.info.get("icc_profile")
  if opened.mode == "CMYK" and profile:
    try:
      source = ImageCms.ImageCmsProfile(io.BytesIO(profile))
      return ImageCms.profileToProfile(opened, source, ImageCms.createProfile("sRGB"), outputMode="RGB")
    except (ImageCms.PyCMSError, OSError):
      pass  # a damaged profile: Pillow's plain conversion below
  return opened.convert("RGB")


def _metadata(opened: Image.Image) -> dict:
  info = opened.info
  metadata = {key: info[key] for key in ("exif", "icc_profile", "dpi", "xmp") if info.get(key)}
  if isinstance(metadata.get("xmp"), str):
    metadata["xmp"] = metadata["xmp"].encode()
  return metadata


def _profile_space(profile: bytes) -> str | None:
  try:
    return ImageCms.ImageCmsProfile(io.BytesIO(profile)).profile.xcolor_space
  except (ImageCms.PyCMSError, OSError):
    return None  # unreadable: dropped, never copied blindly


def stored_luma(data: bytes) -> np.ndarray | None:
  """The Y plane as the JPEG stores it (decoded without colour conversion), or None for a file that is
  not YCbCr inside (Adobe RGB/CMYK JPEGs)."""
  planes = _decode_ycbcr(data, 1)
  return None if planes is None else planes[..., 0].copy()


@dataclasses.dataclass
class StoredPlanes:
  """A colour JPEG's Y, Cb and Cr planes at the resolution the file stores them (decoded without colour
  conversion or chroma upsampling), each with its downsampling factor and quantization table."""
  planes: list[np.ndarray]    # uint8 (h, w) each
  factors: list[int]          # 1, or 2 for 4:2:0 chroma (both directions)
  tables: list[np.ndarray]    # (8, 8) natural order


def stored_planes(data: bytes) -> StoredPlanes | None:
  """The planes of a YCbCr JPEG with 4:4:4 or 4:2:0 chroma; None for any other file.

  4:2:0 chroma comes from a second decode at half scale: libjpeg then gives chroma its full 8x8
  inverse DCT instead of upsampling it, so the planes are the stored ones (tests/test_consistency.py
  checks their coefficients against an encoder model). 4:2:2 and rarer layouts have no such decode.
  """
  found = jpeg.components(data)
  if len(found) != 3:
    return None
  sampling = {(horizontal, vertical) for horizontal, vertical, _ in found}
  factor = {frozenset({(1, 1)}): 1, frozenset({(2, 2), (1, 1)}): 2}.get(frozenset(sampling))
  if factor is None or (factor == 2 and found[0][:2] != (2, 2)):
    return None
  tables = jpeg.tables_by_id(data)
  if any(table_id not in tables for *_, table_id in found):
    return None
  full = _decode_ycbcr(data, 1)
  if full is None:
    return None
  chroma = full if factor == 1 else _decode_ycbcr(data, 2)
  height, width = full.shape[:2]
  if chroma is None or chroma.shape[:2] != (-(-height // factor), -(-width // factor)):
    return None
  return StoredPlanes([full[..., 0], chroma[..., 1], chroma[..., 2]], [1, factor, factor],
                      [tables[table_id] for *_, table_id in found])


def _decode_ycbcr(data: bytes, scale: int) -> np.ndarray | None:
  """uint8 (H', W', 3) YCbCr as stored, decoded at 1/`scale` size; None if not YCbCr inside."""
  with Image.open(io.BytesIO(data)) as opened:
    if opened.info.get("adobe_transform") == 0:
      return None  # Adobe's marker says the components are RGB (or CMYK), not YCbCr
    width, height = opened.size
    opened.draft("YCbCr", (max(1, width // scale), max(1, height // scale)))
    if opened.mode != "YCbCr":
      return None
    try:
      opened.load()
    except OSError:
      return None  # libjpeg cannot give this file's components as YCbCr
    return np.asarray(opened)


def save(image: Image.Image, path: Path, metadata: dict, output_format: str, quality: int = 95) -> None:
  """`image` as PNG, JPEG (4:4:4, `quality`) or WebP (`quality`), with the metadata each format holds."""
  path.parent.mkdir(parents=True, exist_ok=True)
  options = {key: value for key, value in metadata.items() if key in ("exif", "icc_profile", "dpi", "xmp")}
  if "icc_profile" in options and _profile_space(options["icc_profile"]) != ICC_SPACES.get(image.mode):
    del options["icc_profile"]
  if output_format == "png" and "xmp" in options:  # PNG keeps XMP in an iTXt chunk
    info = PngImagePlugin.PngInfo()
    info.add_itxt(XMP_PNG_KEY, options.pop("xmp").decode("utf-8", "replace"))
    options["pnginfo"] = info
  if output_format == "jpeg":
    options.update(quality=quality, subsampling=0)  # 4:4:4: no chroma loss on top
  elif output_format == "webp":
    options.pop("dpi", None)  # WebP has no resolution field
    options.update(quality=quality)
  image.save(path, format=output_format.upper(), **options)
