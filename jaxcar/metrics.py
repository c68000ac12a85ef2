"""Image-quality metrics as the JPEG-artifact literature computes them (DACAR's MATLAB test, QGCN's utils/ssim.py).

Host-side numpy in float64 on 0..255 values (uint8 or float inputs), images (H, W) or (H, W, C):
- PSNR over all pixels and channels jointly, peak 255, no border shave.
- SSIM of Wang et al. with 'valid' filtering and population (co)variances, K1 0.01, K2 0.03, L 255,
  averaged per channel then over channels. `window="uniform"` is the 8x8 box of QGCN's
  `utils/ssim.py` and of Wang's `ssim_index` as DACAR's test script calls it; `window="gaussian"` is
  the 11x11, sigma 1.5 window of the original paper (and of `tf.image.ssim`, used by the NoGAN seed).
- PSNR-B of Yim & Bovik (block 8) as MATLAB `compute_psnrb`: the blocking-effect factor of the
  restored image is added to the MSE. Colour follows QGCN: boundary differences are summed over the
  channels but divided by pixel-position counts, so an RGB BEF is 3x a per-channel one.
"""

import numpy as np
from scipy import signal

PEAK = 255.0
BLOCK = 8
SSIM_K1, SSIM_K2 = 0.01, 0.03
UNIFORM_WINDOW = 8
GAUSSIAN_WINDOW, GAUSSIAN_SIGMA = 11, 1.5
SSIM_WINDOWS = ("uniform", "gaussian")


def _as_float(image) -> np.ndarray:
  return np.asarray(image, dtype=np.float64)


def _check_pair(reference, distorted):
  if np.shape(reference) != np.shape(distorted):
    raise ValueError(f"images differ in shape: {np.shape(reference)} vs {np.shape(distorted)}")


def _psnr_from_mse(mse: float) -> float:
  return float("inf") if mse == 0 else float(10.0 * np.log10(PEAK**2 / mse))


def mse(reference, distorted) -> float:
  _check_pair(reference, distorted)
  return float(np.mean((_as_float(reference) - _as_float(distorted)) ** 2))


def psnr(reference, distorted) -> float:
  """10 log10(255^2 / MSE) over every pixel and channel."""
  return _psnr_from_mse(mse(reference, distorted))


def _channels(image: np.ndarray) -> list[np.ndarray]:
  return [image] if image.ndim == 2 else [image[..., c] for c in range(image.shape[-1])]


def ssim_window(window) -> np.ndarray:
  """The normalised 2-D weighting window named by `window` (an explicit 2-D array passes through)."""
  if isinstance(window, np.ndarray):
    return window / window.sum()
  if window == "uniform":
    return np.full((UNIFORM_WINDOW, UNIFORM_WINDOW), 1.0 / UNIFORM_WINDOW**2)
  if window == "gaussian":
    offsets = np.arange(GAUSSIAN_WINDOW) - GAUSSIAN_WINDOW // 2
    profile = np.exp(-(offsets**2) / (2 * GAUSSIAN_SIGMA**2))
    kernel = np.outer(profile, profile)
    return kernel / kernel.sum()
  raise ValueError(f"unknown SSIM window {window!r}; valid: {list(SSIM_WINDOWS)}")


def ssim_map(reference, distorted, window="uniform") -> np.ndarray:
  """Per-position SSIM of two single-channel images over the 'valid' window positions."""
  weights = ssim_window(window)
  if min(np.shape(reference)) < weights.shape[0]:
    raise ValueError(f"SSIM needs images of at least {weights.shape[0]}x{weights.shape[0]}, got {np.shape(reference)}")
  # The windows are symmetric, so convolution equals the correlation the papers write.
  blur = lambda x: signal.convolve2d(x, weights, mode="valid")
  x, y = _as_float(reference), _as_float(distorted)
  mu_x, mu_y = blur(x), blur(y)
  var_x = blur(x * x) - mu_x**2
  var_y = blur(y * y) - mu_y**2
  cov = blur(x * y) - mu_x * mu_y
  c1, c2 = (SSIM_K1 * PEAK) ** 2, (SSIM_K2 * PEAK) ** 2
  return ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))


def ssim(reference, distorted, window="uniform") -> float:
  """Mean SSIM, per channel then averaged over channels."""
  _check_pair(reference, distorted)
  pairs = zip(_channels(np.asarray(reference)), _channels(np.asarray(distorted)))
  return float(np.mean([ssim_map(r, d, window).mean() for r, d in pairs]))


def _boundary_sums(image: np.ndarray, axis: int) -> tuple[float, float]:
  """Squared differences between neighbours along `axis`: (across 8x8 block borders, elsewhere)."""
  steps = np.diff(image, axis=axis) ** 2  # step i lies between positions i and i+1 (0-based)
  across_border = (np.arange(steps.shape[axis]) + 1) % BLOCK == 0
  per_step = steps.sum(axis=tuple(a for a in range(image.ndim) if a != axis))
  return float(per_step[across_border].sum()), float(per_step[~across_border].sum())


def blocking_effect_factor(image) -> float:
  """Yim & Bovik's BEF of an (H, W) or (H, W, C) image (block 8, counts with W/8 as a float)."""
  image = _as_float(image)
  height, width = image.shape[:2]
  border_h, inner_h = _boundary_sums(image, axis=1)
  border_v, inner_v = _boundary_sums(image, axis=0)
  count_border_h = height * (width / BLOCK - 1)
  count_border_v = width * (height / BLOCK - 1)
  count_inner_h = height * (width - 1) - count_border_h
  count_inner_v = width * (height - 1) - count_border_v
  border = (border_h + border_v) / (count_border_h + count_border_v)
  inner = (inner_h + inner_v) / (count_inner_h + count_inner_v)
  if border <= inner:
    return 0.0
  return float(np.log2(BLOCK) / np.log2(min(height, width)) * (border - inner))


def psnr_b(reference, distorted) -> float:
  """PSNR-B: PSNR with the blocking-effect factor of `distorted` added to the MSE."""
  return _psnr_from_mse(mse(reference, distorted) + blocking_effect_factor(distorted))
