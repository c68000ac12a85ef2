"""Model inputs from a decoded JPEG and its quantization tables, in the value range a model family uses.

Which inputs a network takes is configuration (`config.data.value_range`, `quantization_maps`,
`global_size`), so one pipeline serves every model without asking which model it is.
"""

import functools

import numpy as np
import skimage.transform

from jaxcar.data import jpeg

VALUE_RANGES = ("zero_one", "minus_one_one", "zero_255")
ROWS_PER_SLAB = 256  # to_uint8's float64 working set: 256 rows at a time


def to_model_range(image: np.ndarray, value_range: str) -> np.ndarray:
  """uint8 -> float32: [0, 1], [-1, 1] (QCN's (x/255 - 0.5) / 0.5) or raw 0-255 (CNN-CAR)."""
  scale, offset = _affine(value_range)
  return np.asarray(image, np.float32) * np.float32(scale) + np.float32(offset)


def from_model_range(values, value_range: str):
  """Model-range values -> float in [0, 1] units (not clipped: callers decide how to clip)."""
  scale, offset = _affine(value_range)
  return (values - offset) / (scale * 255.0)


def to_uint8(output: np.ndarray, value_range: str) -> np.ndarray:
  """Model output -> uint8: clipped to [0, 1], x255, rounded (the published evaluation protocol).

  In float64, as the protocol's numbers were computed, but in slabs of rows: a 12 MP photo's float64
  copies would otherwise add ~600 MB to restore's peak memory.
  """
  result = np.empty(output.shape, np.uint8)
  for top in range(0, output.shape[0], ROWS_PER_SLAB):
    slab = from_model_range(np.asarray(output[top:top + ROWS_PER_SLAB], np.float64), value_range)
    result[top:top + ROWS_PER_SLAB] = np.round(np.clip(slab, 0.0, 1.0) * 255.0)
  return result


def _affine(value_range: str) -> tuple[float, float]:
  """(scale, offset) with model value = uint8 * scale + offset."""
  if value_range == "zero_one":
    return 1.0 / 255.0, 0.0
  if value_range == "minus_one_one":
    return 2.0 / 255.0, -1.0
  if value_range == "zero_255":
    return 1.0, 0.0
  raise ValueError(f"value_range must be one of {VALUE_RANGES}, got {value_range!r}")


def model_inputs(decoded: np.ndarray, tables: np.ndarray, data_config) -> dict:
  """{"inputs": (H, W, C_in) float32[, "global_inputs": (G, G, C) float32]} for one decoded JPEG.

  `inputs` is the image in `data_config.value_range` with the normalised quantization maps appended
  when `data_config.quantization_maps`; `global_inputs` (QGCN) is the whole decoded image resized to
  `global_size` with skimage's bicubic (order 3) resize, as QGCN does, then put in the value range.
  Works for any H x W.
  """
  if decoded.ndim != 3 or decoded.shape[-1] not in (1, 3):
    raise ValueError(f"decoded image must be (H, W, 1 or 3) uint8, got shape {decoded.shape}")
  batch = batch_model_inputs(decoded[None], np.asarray(tables)[None], data_config)
  return {key: value[0] for key, value in batch.items()}


def batch_model_inputs(decoded: np.ndarray, tables: np.ndarray, data_config) -> dict:
  """model_inputs for a batch: decoded (B, H, W, C) uint8, tables (B, n, 8, 8) -> (B, ...) arrays.

  Converting a whole batch at once costs a fraction of doing it per example (numpy's per-call
  overhead dominates at 64x64), which is why the training pipeline converts after batching.
  """
  count, height, width, channels = decoded.shape
  maps = jpeg.batch_quantization_maps(tables, height, width, channels) if data_config.quantization_maps else None
  parts = [to_model_range(decoded, data_config.value_range)] + ([] if maps is None else [maps])
  result = {"inputs": _stack_channels(parts)}
  if data_config.global_size > 0:
    result["global_inputs"] = global_images(decoded, data_config.global_size, data_config.value_range)
  return result


def global_images(decoded: np.ndarray, size: int, value_range: str) -> np.ndarray:
  """global_image of each (H, W, C) uint8 image of a batch -> (B, size, size, C) float32, each written
  in place (np.stack would copy the batch's ~10 MB once more)."""
  out = np.empty((len(decoded), size, size, decoded.shape[-1]), np.float32)
  for image, image_out in zip(decoded, out):
    global_image(image, size, value_range, out=image_out)
  return out


def _stack_channels(parts: list[np.ndarray]) -> np.ndarray:
  """np.concatenate(parts, axis=-1), one channel at a time: each copy then runs over all pixels in one
  strided loop instead of a 3-element inner loop per pixel, ~4x faster for (64, 64, 64, 3 + 2)."""
  if len(parts) == 1:
    return parts[0]
  total = sum(part.shape[-1] for part in parts)
  out = np.empty(parts[0].shape[:-1] + (total,), np.float32)
  channel = 0
  for part in parts:
    for index in range(part.shape[-1]):
      out[..., channel] = part[..., index]
      channel += 1
  return out


def global_image(decoded: np.ndarray, size: int, value_range: str, out: np.ndarray | None = None) -> np.ndarray:
  """The whole image resized to size x size (QGCN's global branch input), in the value range.

  skimage.transform.resize(decoded, (size, size), order=3) (defaults: mode="reflect", clip=True, Gaussian
  anti-aliasing when an axis shrinks), to 5e-7 of the 0-1 range (tests/test_data_pipeline.py). That
  resize is a fixed linear map per axis (the Gaussian where the axis shrinks, spline prefilter, bicubic
  interpolation), so here it is two products with cached float32 matrices, clipped to the input's range
  as skimage does: 6x cheaper on 64x64 training patches than float64 products without BLAS, 20x
  cheaper than skimage on whole images (`python -m benchmarks input --stages --global_size=112`).
  Written into `out` (size, size, C) float32 when given.
  """
  height, width, channels = decoded.shape
  # Rows of (H, C) with W last, centred on 0: exact in float32, and half the rounding of uint8 values.
  data = np.ascontiguousarray(decoded.transpose(0, 2, 1), np.float32).reshape(height * channels, width)
  data -= 128.0
  across = _times_matrix(data, _resize_matrix(width, size))  # (H * C, x)
  data = np.ascontiguousarray(across.reshape(height, channels * size).T)  # (C * x, H)
  resized = _times_matrix(data, _resize_matrix(height, size))  # (C * x, y)
  # skimage clips to the input's range; then back from centred uint8 units to the value range. All
  # elementwise, so done in the products' own contiguous layout, before one transposing copy.
  scale, offset = _affine(value_range)
  np.clip(resized, float(decoded.min()) - 128.0, float(decoded.max()) - 128.0, out=resized)
  resized *= np.float32(scale)
  resized += np.float32(offset + 128.0 * scale)
  if out is None:
    out = np.empty((size, size, channels), np.float32)
  # (C, x, y) -> (y, x, C) one channel at a time: long strided loops instead of a 3-element inner loop
  # per pixel: clip, scale and this copy take 29 us at 112x112x3, the clip on the transposed view 52.
  for channel, plane in enumerate(resized.reshape(channels, size, size)):
    out[..., channel] = plane.T
  return out


def global_image_constants(height: int, width: int, size: int, value_range: str):
  """What global_image applies to an (height, width, C) image, for the train step to apply on the
  device (`training.steps.model_batch`): (width matrix (width, size), height matrix (height, size),
  scale, offset), with value = clip(centred image @ matrices) * scale + offset, centred = uint8 - 128."""
  scale, offset = _affine(value_range)
  return (_resize_matrix(width, size), _resize_matrix(height, size), np.float32(scale),
          np.float32(offset + 128.0 * scale))


# OpenBLAS runs a product on one thread while m*n*k <= 65536 * GEMM_MULTITHREAD_THRESHOLD (4 by default;
# larger in recent versions). Above it a product this small costs several times more CPU on more threads
# (they spin), in every data worker process at once, so _times_matrix keeps each product below it.
_ONE_THREAD_MNK = 1 << 18


def _times_matrix(data: np.ndarray, matrix: np.ndarray) -> np.ndarray:
  """data (N, L) @ matrix (L, S), as products of blocks of rows small enough for one BLAS thread each."""
  count, length = data.shape
  size = matrix.shape[1]
  rows = max(1, _ONE_THREAD_MNK // (length * size))
  out = np.empty((count, size), np.float32)
  whole = count - count % rows
  if whole:
    np.matmul(data[:whole].reshape(-1, rows, length), matrix, out=out[:whole].reshape(-1, rows, size))
  if whole < count:
    np.matmul(data[whole:], matrix, out=out[whole:])
  return out


@functools.lru_cache(maxsize=32)
def _resize_matrix(length: int, size: int) -> np.ndarray:
  """(length, size) float32: x @ it is skimage's order-3 resize of rows x of `length` to `size`.

  The transposed resize of the unit vectors, with skimage's own anti-aliasing along this axis when it
  shrinks (sigma (length / size - 1) / 2, as resize picks per axis; the other axis keeps sigma 0) and
  without clipping, which global_image does on the whole image.
  """
  matrix = skimage.transform.resize(np.eye(length), (size, length), order=3, mode="reflect",
                                    preserve_range=True, clip=False, anti_aliasing=size < length)
  matrix = np.ascontiguousarray(matrix.T, np.float32)
  matrix.setflags(write=False)
  return matrix
