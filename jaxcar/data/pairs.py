"""Paired sources: real JPEGs with their clean originals, as CNN-CAR trained on (its X.jpg / X.bmp pairs).

`pairs:DIR` searches DIR recursively (any file system etils.epath reaches) and pairs a JPEG (.jpg,
.jpeg) with the one clean file of the same folder and stem (X.png, X.bmp, X.tif, X.webp...). A name
with no partner, or with several, is skipped and reported once; an error only if no pair is left.

A pair is one entry of the source's list, "JPEG | CLEAN", so splitting (`split:N`), sharding and
the decoded-image cache treat it like any image path. Both files are decoded in their stored
orientation (EXIF ignored: rotating one would move the JPEG's block grid away from the other's
pixels); a pair whose sizes differ is skipped with both sizes. The model's quantization maps come from
the JPEG's own tables, never from a re-compression.
"""

import io

import numpy as np
from PIL import Image

from jaxcar.data import jpeg, sources

SEPARATOR = " | "  # between the JPEG and the clean path of one entry
JPEG_SUFFIXES = (".jpg", ".jpeg")
CLEAN_SUFFIXES = tuple(s for s in sources.IMAGE_SUFFIXES if s not in JPEG_SUFFIXES)
BLOCK = 8

_reported: set = set()  # (folder, skipped names) already logged by this process


def is_pair(entry: str) -> bool:
  return SEPARATOR in str(entry)


def join(jpeg_path: str, clean_path: str) -> str:
  return f"{jpeg_path}{SEPARATOR}{clean_path}"


def split(entry: str) -> tuple[str, str]:
  """(JPEG path, clean path) of an entry."""
  jpeg_path, clean_path = entry.split(SEPARATOR)
  return jpeg_path, clean_path


def list_pairs(folder: str) -> list[str]:
  """The sorted "JPEG | CLEAN" entries under `folder`; names without exactly one partner are skipped."""
  if not folder.strip():
    raise FileNotFoundError("pairs: needs a folder, e.g. pairs:data/train_pairs")
  path = sources.as_path(folder)
  if not path.is_dir():
    raise FileNotFoundError(f"pairs:{folder}: no such folder")
  by_stem: dict[str, dict[str, list[str]]] = {}
  for file in sorted(sources.files_under(path)):
    stem, suffix = _stem_and_suffix(file)
    kind = "jpeg" if suffix in JPEG_SUFFIXES else "clean" if suffix in CLEAN_SUFFIXES else None
    if kind and SEPARATOR not in file:
      by_stem.setdefault(stem, {"jpeg": [], "clean": []})[kind].append(file)
  entries, skipped = [], {}
  for stem, files in sorted(by_stem.items()):
    reason = _unpaired(files)
    if reason:
      skipped.update({file: reason for file in files["jpeg"] + files["clean"]})
    else:
      entries.append(join(files["jpeg"][0], files["clean"][0]))
  if not entries:
    raise FileNotFoundError(f"pairs:{folder} holds no JPEG (.jpg/.jpeg) with a clean file of the same name "
                            f"({'/'.join(CLEAN_SUFFIXES)}), e.g. X.jpg with X.png")
  key = (str(folder), tuple(sorted(skipped)))
  if skipped and key not in _reported:
    _reported.add(key)
    sources.report_skipped(skipped, f"pairs:{folder}")
  return entries


def _stem_and_suffix(file: str) -> tuple[str, str]:
  """("folder/X", ".jpg") for "folder/X.JPG": pairs are matched within one folder."""
  base, dot, suffix = file.rpartition(".")
  return (base, f".{suffix.lower()}") if dot and "/" not in suffix else (file, "")


def _unpaired(files: dict) -> str:
  """Why these same-named files are not one pair ("" when they are)."""
  if not files["clean"]:
    return "a JPEG with no clean file of the same name"
  if not files["jpeg"]:
    return "a clean file with no JPEG of the same name"
  if len(files["jpeg"]) > 1 or len(files["clean"]) > 1:
    names = [file.rsplit("/", 1)[-1] for file in files["jpeg"] + files["clean"]]
    return f"ambiguous: {', '.join(names)} share one name (keep one JPEG and one clean file)"
  return ""


def load_pair(entry: str, color: str) -> tuple[np.ndarray, dict]:
  """(uint8 (H, W, 2C): the decoded JPEG's C channels then the clean image's, {"tables", "grid"}).

  The decoded JPEG follows sources.load_image's colour rules (jpeg.decode); "tables" are its (n, 8, 8)
  quantization tables as lists, "grid" its block grid (`block_grid`). Raises sources.ImageError (one
  line naming the entry) for an unreadable file or sizes that differ.
  """
  jpeg_path, clean_path = split(entry)
  try:
    data = sources.read_bytes(jpeg_path)
    tables = jpeg.quantization_tables(data)
    grid = block_grid(data)
    degraded = jpeg.decode(data, color)
  except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
    raise sources.ImageError(f"{entry}: the JPEG is not readable ({type(error).__name__}: {error})") from None
  try:
    clean = sources.load_image(clean_path, color, orient=False)
  except sources.ImageError as error:
    raise sources.ImageError(f"{entry}: the clean file is not readable ({error})") from None
  if degraded.shape[:2] != clean.shape[:2]:
    raise sources.ImageError(f"{entry}: sizes differ (JPEG {degraded.shape[0]}x{degraded.shape[1]}, "
                             f"clean {clean.shape[0]}x{clean.shape[1]})")
  return np.concatenate([degraded, clean], axis=-1), {"tables": tables.tolist(), "grid": grid}


def block_grid(data: bytes) -> int:
  """The side of the JPEG's MCU: 8, or 16 when chroma is subsampled (4:2:0, 4:2:2). Crops that start
  on it keep every block, chroma included, whole and where the quantization maps say it is."""
  with Image.open(io.BytesIO(data)) as image:
    layers = getattr(image, "layer", None) or []
  if len(layers) <= 1:  # grey: one component is never interleaved, its MCU is one 8x8 block
    return BLOCK
  return BLOCK * max(max(h, v) for _, h, v, _ in layers)


def validation_example(entry: str, color: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(clean, decoded JPEG, tables) of a pair for whole-image validation: the real degradation."""
  stacked, info = load_pair(entry, color)
  channels = stacked.shape[-1] // 2
  return stacked[..., channels:], stacked[..., :channels], np.asarray(info["tables"], np.int32)


def name(entry: str) -> str:
  """The JPEG's file name, to show for a pair."""
  return split(entry)[0].rsplit("/", 1)[-1]
