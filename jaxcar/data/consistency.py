"""Keep a restored image consistent with the JPEG it came from (quantization constraint projection).

A JPEG stores each 8x8 block's DCT coefficients as integers k = round(c / q). So the original image's
coefficients lie within [(k - 1/2) q, (k + 1/2) q]: a convex set that contains the truth. Clipping a
restoration's coefficients into that set is the projection onto it, and a projection onto a convex set
never moves an estimate further from any point of the set: the restoration can only get closer to the
original (before the final rounding to uint8). Where q is small (high quality) the set is narrow, so a
network's needless changes to a nearly lossless JPEG are undone.

The coefficients k are recovered from the decoded pixels (the decoder's rounding moves them by about
0.3 of a unit; `margin` can widen each interval to absorb that and the encoder's integer DCT, but on the
zoo's validation split a margin of 0 scored best at q 10, 50, 90 and 95: BUILD_NOTES.md, Model zoo). Only whole
blocks are projected: the encoder filled the partial blocks at the right and bottom edges with pixels
that are not in the image. The JPEG's 2-D DCT is the orthonormal one, so `DCT @ block @ DCT.T`.

A colour restoration is projected in the file's own space: RGB to JFIF YCbCr (the encoder's
conversion), each plane at its stored resolution. 4:2:0 chroma was made by averaging 2x2 cells, so
the cells' averages are projected and each cell is moved by its average's change: the cells' detail
is kept and their averages land exactly inside the intervals.
"""

import numpy as np

from jaxcar.data import jpeg_file

BLOCK = 8
DEFAULT_MARGIN = 0.0  # coefficient units


def _dct_matrix() -> np.ndarray:
  n = np.arange(BLOCK)
  matrix = np.cos(np.pi * (2 * n[None, :] + 1) * n[:, None] / (2 * BLOCK)) * np.sqrt(2.0 / BLOCK)
  matrix[0] /= np.sqrt(2.0)
  return matrix


DCT = _dct_matrix()
BAND = 64 * BLOCK  # rows projected at a time: bounded memory for a 12 MP image (a multiple of 16)


def _blocks(plane: np.ndarray, rows: int, cols: int) -> np.ndarray:
  """(H, W) -> (rows, cols, 8, 8) whole blocks, centred on 0 as the JPEG encoder level-shifts them."""
  whole = plane[:rows * BLOCK, :cols * BLOCK].astype(np.float64) - 128.0
  return whole.reshape(rows, BLOCK, cols, BLOCK).transpose(0, 2, 1, 3)


def project(restored: np.ndarray, decoded: np.ndarray, table: np.ndarray, margin: float = DEFAULT_MARGIN) -> np.ndarray:
  """`restored` (H, W, 1) in 0-255 units, moved into the quantization intervals of `decoded` (the JPEG's
  own decoded plane, uint8 (H, W, 1)) under the 8x8 `table` (natural order); float64 (H, W, 1).
  Done BAND rows at a time; each block's arithmetic is the same whatever the band."""
  result = restored.astype(np.float64)
  cols = restored.shape[1] // BLOCK
  table = np.asarray(table, np.float64)
  for top in range(0, restored.shape[0] // BLOCK * BLOCK, BAND):
    rows = min(BAND, restored.shape[0] // BLOCK * BLOCK - top) // BLOCK
    band = slice(top, top + rows * BLOCK)
    stored = np.round(DCT @ _blocks(decoded[band, :, 0], rows, cols) @ DCT.T / table)
    coefficients = DCT @ _blocks(restored[band, :, 0], rows, cols) @ DCT.T
    low, high = (stored - 0.5) * table - margin, (stored + 0.5) * table + margin
    pixels = DCT.T @ np.clip(coefficients, low, high) @ DCT + 128.0
    result[band, :cols * BLOCK, 0] = pixels.transpose(0, 2, 1, 3).reshape(rows * BLOCK, cols * BLOCK)
  return result


# JFIF's full-range BT.601 conversion, as libjpeg encodes and decodes colour JPEGs
RGB_TO_YCBCR = np.array([[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]])
YCBCR_TO_RGB = np.linalg.inv(RGB_TO_YCBCR)
CHROMA_OFFSET = np.array([0.0, 128.0, 128.0])


def project_color(restored: np.ndarray, stored: jpeg_file.StoredPlanes, margin: float = DEFAULT_MARGIN) -> np.ndarray:
  """`restored` RGB (H, W, 3) in 0-255 units, moved into the quantization intervals of the JPEG whose
  planes are `stored` (jpeg_file.stored_planes); float64 (H, W, 3), RGB. Done BAND rows at a time."""
  result = np.empty(restored.shape, np.float64)
  for top in range(0, restored.shape[0], BAND):
    band = slice(top, top + BAND)
    ycbcr = restored[band].astype(np.float64) @ RGB_TO_YCBCR.T + CHROMA_OFFSET
    for channel, (plane, factor, table) in enumerate(zip(stored.planes, stored.factors, stored.tables)):
      values = ycbcr[..., channel]
      rows, cols = values.shape[0] // factor, values.shape[1] // factor  # whole cells
      cells = values[:rows * factor, :cols * factor].reshape(rows, factor, cols, factor).mean(axis=(1, 3))
      plane_band = plane[top // factor:top // factor + rows, :cols, None]
      moved = project(cells[..., None], plane_band, table, margin)[..., 0] - cells
      values[:rows * factor, :cols * factor] += np.repeat(np.repeat(moved, factor, axis=0), factor, axis=1)
    result[band] = (ycbcr - CHROMA_OFFSET) @ YCBCR_TO_RGB.T
  return result
