"""The degradation itself: Pillow JPEG encode/decode, and the quantization tables read back from the bytes.

The tables come from the DQT markers of the encoded file, never recomputed from the quality, so the
same code serves real-world JPEGs whose encoder is unknown.
"""

import io

import numpy as np
from PIL import Image

from jaxcar.data import sources

SUBSAMPLINGS = ("4:2:0", "4:4:4")

# ZIGZAG[k] is the natural (row-major) position of the k-th coefficient stored in a DQT table.
ZIGZAG = np.array([
    0, 1, 8, 16, 9, 2, 3, 10, 17, 24, 32, 25, 18, 11, 4, 5, 12, 19, 26, 33, 40, 48, 41, 34, 27, 20, 13,
    6, 7, 14, 21, 28, 35, 42, 49, 56, 57, 50, 43, 36, 29, 22, 15, 23, 30, 37, 44, 51, 58, 59, 52, 45, 38,
    31, 39, 46, 53, 60, 61, 54, 47, 55, 62, 63])

_DQT, _SOS, _SOI = 0xDB, 0xDA, 0xD8
_FRAME_MARKERS = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}  # SOFn
_STANDALONE_MARKERS = {0x01, *range(0xD0, 0xD8)}  # TEM and RSTn carry no length field


def compress(image: np.ndarray, quality: int, subsampling: str = "4:2:0") -> bytes:
  """Pillow JPEG of a uint8 (H, W, 1 or 3) image at `quality` (1-100); grey images stay single-channel."""
  return encode(Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image), quality, subsampling)


def encode(pil: Image.Image, quality: int, subsampling: str = "4:2:0") -> bytes:
  """The bytes `pil.save(f, format="JPEG", quality=quality, subsampling=subsampling)` writes (tested equal).

  Calls the encoder through Image.tobytes with the settings tuple JpegImagePlugin builds for those
  arguments, skipping save()'s plumbing: for a 64x64 patch that plumbing cost as much as the encoding.
  """
  if not 1 <= quality <= 100:
    raise ValueError(f"JPEG quality must be in 1..100, got {quality}")
  if subsampling not in SUBSAMPLINGS:
    raise ValueError(f"subsampling must be one of {SUBSAMPLINGS}, got {subsampling!r}")
  # (rawmode, quality, progressive, smooth, optimize, keep_rgb, streamtype, dpi, subsampling,
  #  restart_marker_blocks, restart_marker_rows, qtables, comment, extra, exif): Pillow's defaults
  settings = (pil.mode, int(quality), False, 0, False, False, 0, (0, 0), _SUBSAMPLING_CODES[subsampling],
              0, 0, None, "", b"", b"")
  return pil.tobytes("jpeg", settings)


_SUBSAMPLING_CODES = {"4:4:4": 0, "4:2:0": 2}  # as JpegImagePlugin passes them to libjpeg


def decode(data: bytes, color: str) -> np.ndarray:
  """uint8 (H, W, 3) for "rgb" or (H, W, 1) for "grey", by the rules of sources.load_image: a grey
  JPEG keeps its values, a colour one becomes MATLAB's BT.601 luma (what grey models train on)."""
  with Image.open(io.BytesIO(data)) as image:
    if image.mode == "L":
      pixels = np.asarray(image)[..., None]
      return pixels if color == "grey" else np.repeat(pixels, 3, axis=-1)
    rgb = np.asarray(image.convert("RGB") if image.mode != "RGB" else image)
  return sources.rgb_to_luma(rgb) if color == "grey" else rgb


def decode_known(data: bytes, shape: tuple[int, int, int]) -> np.ndarray:
  """decode() for bytes `compress` just produced from an image of `shape` (H, W, 1 or 3).

  Hands the bytes straight to Pillow's libjpeg decoder, skipping Image.open's marker parsing in
  Python: the same pixels at ~60% of the cost, which matters at thousands of patches per second.
  """
  height, width, channels = shape
  mode = "L" if channels == 1 else "RGB"
  pixels = np.asarray(Image.frombytes(mode, (width, height), data, "jpeg", mode, ""))
  return pixels.reshape(shape)


def quantization_tables(data: bytes) -> np.ndarray:
  """(n_tables, 8, 8) int32 tables in natural order, indexed by table id, from the DQT markers.

  Handles 8- and 16-bit precision and several tables per marker; a later definition of the same id
  replaces the earlier one, as a decoder would see it before the first scan.
  """
  tables = tables_by_id(data)
  return np.stack([tables[key] for key in sorted(tables)])


def tables_by_id(data: bytes) -> dict[int, np.ndarray]:
  """{table id: (8, 8) int32 table in natural order} from the DQT markers (see quantization_tables)."""
  tables = {}
  for segment in _segments_before_scan(data):
    position = 0
    while position < len(segment):
      precision, table_id = segment[position] >> 4, segment[position] & 0x0F
      size = 128 if precision else 64
      if position + 1 + size > len(segment):
        raise ValueError("truncated DQT segment")
      values = np.frombuffer(segment, ">u2" if precision else np.uint8, 64, position + 1)
      natural = np.empty(64, np.int32)
      natural[ZIGZAG] = values
      tables[table_id] = natural.reshape(8, 8)
      position += 1 + size
  if not tables:
    raise ValueError("no quantization table (DQT marker) found: not a baseline/progressive JPEG")
  return tables


def components(data: bytes) -> list[tuple[int, int, int]]:
  """(horizontal sampling factor, vertical sampling factor, quantization table id) of each component
  the frame header declares, in order (Y, Cb, Cr for a colour JPEG)."""
  for _, payload in _segments_before_scan(data, _FRAME_MARKERS):
    count = payload[5] if len(payload) > 5 else 0
    if len(payload) < 6 + 3 * count:
      raise ValueError("truncated frame header")
    fields = payload[6:6 + 3 * count]
    return [(fields[i + 1] >> 4, fields[i + 1] & 0x0F, fields[i + 2]) for i in range(0, 3 * count, 3)]
  raise ValueError("corrupt JPEG: no frame header before the first scan")


def declared_size(data: bytes) -> tuple[int, int]:
  """(height, width) the frame header declares, read without decoding anything."""
  for marker, payload in _segments_before_scan(data, _FRAME_MARKERS):
    if len(payload) < 5:
      raise ValueError("truncated frame header")
    return int.from_bytes(payload[1:3], "big"), int.from_bytes(payload[3:5], "big")
  raise ValueError("corrupt JPEG: no frame header before the first scan")


def _segments_before_scan(data: bytes, markers=None):
  """Yields the payload of each DQT segment (or, with `markers`, (marker, payload) of each segment
  whose marker is one of them) up to the first scan."""
  if data[:2] != b"\xff\xd8":
    raise ValueError("not a JPEG file (no start-of-image marker)")
  position = 2
  while position + 4 <= len(data):
    if data[position] != 0xFF:
      raise ValueError(f"corrupt JPEG: expected a marker at byte {position}")
    marker = data[position + 1]
    if marker == 0xFF:  # fill byte
      position += 1
      continue
    if marker in _STANDALONE_MARKERS:
      position += 2
      continue
    length = int.from_bytes(data[position + 2:position + 4], "big")
    if markers is None and marker == _DQT:
      yield data[position + 4:position + 2 + length]
    elif markers is not None and marker in markers:
      yield marker, data[position + 4:position + 2 + length]
    if marker == _SOS:
      return
    position += 2 + length


def quantization_maps(tables: np.ndarray, height: int, width: int, channels: int) -> np.ndarray:
  """float32 (H, W, 1) for a grey image or (H, W, 2) (luma, chroma) for a colour one (`channels` = 3).

  Each table is tiled from pixel (0, 0) with an 8-pixel period, as QCN does (also for 4:2:0 chroma), and
  normalised as QCN does: v / 127.5 - 1. A colour image whose file has one table reuses it for chroma.
  """
  return batch_quantization_maps(np.asarray(tables)[None], height, width, channels)[0]


def batch_quantization_maps(tables: np.ndarray, height: int, width: int, channels: int) -> np.ndarray:
  """quantization_maps for a batch: (B, n, 8, 8) tables -> (B, H, W, 1 or 2), tiled in one call."""
  if channels not in (1, 3):
    raise ValueError(f"channels must be 1 (grey) or 3 (colour), got {channels}")
  chosen = [0] if channels == 1 else [0, min(1, tables.shape[1] - 1)]
  period = tables[:, chosen].transpose(0, 2, 3, 1).astype(np.float32) / 127.5 - 1.0  # (B, 8, 8, c)
  reps = (1, -(-height // 8), -(-width // 8), 1)
  return np.tile(period, reps)[:, :height, :width]
