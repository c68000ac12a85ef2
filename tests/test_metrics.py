"""Metrics against independent references: scikit-image SSIM, a loop-by-loop PSNR-B, closed forms."""

import numpy as np
import pytest
from skimage.metrics import structural_similarity

from jaxcar import metrics
from jaxcar.data import sources


def _pair(shape, seed=0, noise=12.0):
  rng = np.random.default_rng(seed)
  clean = rng.integers(0, 256, shape).astype(np.float64)
  # Smooth the reference so SSIM is far from 0 and from 1.
  clean = (clean + np.roll(clean, 1, 0) + np.roll(clean, 1, 1) + np.roll(clean, (1, 1), (0, 1))) / 4
  noisy = np.clip(clean + rng.normal(0, noise, shape), 0, 255)
  return np.round(clean).astype(np.uint8), np.round(noisy).astype(np.uint8)


def test_psnr_closed_form():
  reference = np.zeros((16, 16, 3), np.uint8)
  distorted = reference + 5  # MSE = 25
  assert metrics.psnr(reference, distorted) == pytest.approx(10 * np.log10(255**2 / 25), abs=1e-12)
  assert metrics.psnr(reference, reference) == float("inf")


def test_shape_mismatch_is_one_line_error():
  with pytest.raises(ValueError, match="differ in shape"):
    metrics.psnr(np.zeros((8, 8)), np.zeros((8, 9)))


def _skimage_valid_ssim(reference, distorted, **kwargs):
  """scikit-image's SSIM map cropped to the positions a 'valid' convolution produces."""
  _, full = structural_similarity(reference.astype(np.float64), distorted.astype(np.float64), data_range=255,
                                  use_sample_covariance=False, full=True, **kwargs)
  return full[5:-5, 5:-5].mean() if kwargs.get("gaussian_weights") else full[3:-3, 3:-3].mean()


def test_gaussian_ssim_matches_scikit_image():
  reference, distorted = _pair((40, 37))
  ours = metrics.ssim(reference, distorted, "gaussian")
  assert 0.2 < ours < 0.99
  # scikit-image truncates its Gaussian at 3.5 sigma: an 11x11 window for sigma 1.5.
  expected = _skimage_valid_ssim(reference, distorted, gaussian_weights=True, sigma=1.5)
  assert ours == pytest.approx(expected, abs=1e-9)


def test_box_ssim_matches_scikit_image():
  # scikit-image 0.26 refuses even windows, so compare the box-window code path at 7x7 ...
  reference, distorted = _pair((40, 37), seed=4)
  ours = metrics.ssim(reference, distorted, np.ones((7, 7)))
  assert ours == pytest.approx(_skimage_valid_ssim(reference, distorted, win_size=7), abs=1e-9)


def test_uniform_8x8_ssim_matches_window_by_window_formula():
  # ... and check the 8x8 window against the formula evaluated at every valid position.
  reference, distorted = _pair((20, 19), seed=5)
  x, y = reference.astype(np.float64), distorted.astype(np.float64)
  c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
  values = []
  for i in range(20 - 7):
    for j in range(19 - 7):
      a, b = x[i:i + 8, j:j + 8], y[i:i + 8, j:j + 8]
      cov = np.mean((a - a.mean()) * (b - b.mean()))
      values.append((2 * a.mean() * b.mean() + c1) * (2 * cov + c2)
                    / ((a.mean() ** 2 + b.mean() ** 2 + c1) * (a.var() + b.var() + c2)))
  assert metrics.ssim(reference, distorted) == pytest.approx(np.mean(values), abs=1e-9)


def test_ssim_colour_is_channel_mean():
  reference, distorted = _pair((24, 24, 3), seed=1)
  per_channel = [metrics.ssim(reference[..., c], distorted[..., c]) for c in range(3)]
  assert metrics.ssim(reference, distorted) == pytest.approx(np.mean(per_channel), abs=1e-12)
  assert metrics.ssim(reference, reference) == pytest.approx(1.0, abs=1e-12)


def _paper_bef(image):
  """Yim & Bovik's BEF written out pixel pair by pixel pair (1-based indices as in MATLAB)."""
  image = image.astype(np.float64)
  height, width = image.shape[:2]
  d_b = d_bc = 0.0
  for i in range(1, width):  # horizontal neighbours (i, i+1)
    value = np.sum((image[:, i - 1] - image[:, i]) ** 2)
    if i % 8 == 0:
      d_b += value
    else:
      d_bc += value
  for j in range(1, height):
    value = np.sum((image[j - 1] - image[j]) ** 2)
    if j % 8 == 0:
      d_b += value
    else:
      d_bc += value
  n_hb, n_vb = height * (width / 8 - 1), width * (height / 8 - 1)
  n_hbc, n_vbc = height * (width - 1) - n_hb, width * (height - 1) - n_vb
  d_b, d_bc = d_b / (n_hb + n_vb), d_bc / (n_hbc + n_vbc)
  eta = np.log2(8) / np.log2(min(height, width)) if d_b > d_bc else 0.0
  return eta * (d_b - d_bc)


@pytest.mark.parametrize("shape", [(40, 37), (33, 48, 3)])
def test_psnr_b_matches_paper_formula(shape):
  reference, distorted = _pair(shape, seed=2)
  # Add visible 8x8 block offsets so the BEF is non-zero.
  offsets = np.kron(np.random.default_rng(3).integers(-20, 20, (shape[0] // 8 + 1, shape[1] // 8 + 1)),
                    np.ones((8, 8)))[:shape[0], :shape[1]]
  if len(shape) == 3:
    offsets = offsets[..., None]
  blocky = np.clip(distorted + offsets, 0, 255)
  bef = _paper_bef(blocky)
  assert bef > 0
  expected = 10 * np.log10(255**2 / (np.mean((reference - blocky) ** 2) + bef))
  assert metrics.psnr_b(reference, blocky) == pytest.approx(expected, abs=1e-9)


def test_blocky_image_scores_lower_psnr_b():
  # A smooth ramp and the same ramp averaged within 8x8 blocks: the error is all at block borders.
  ramp = np.add.outer(np.arange(64.0), np.arange(64.0)) * 2
  blocky = ramp.reshape(8, 8, 8, 8).mean(axis=(1, 3), keepdims=True).repeat(8, 1).repeat(8, 3).reshape(64, 64)
  assert metrics.blocking_effect_factor(ramp) == 0.0
  assert metrics.psnr_b(ramp, blocky) < metrics.psnr(ramp, blocky) - 1.0


def test_luma_matches_matlab_constants():
  rgb = np.array([[[0, 0, 0], [255, 255, 255], [255, 0, 0], [10, 200, 30]]], np.uint8)
  expected = np.floor(16 + (65.481 * rgb[..., 0] + 128.553 * rgb[..., 1] + 24.966 * rgb[..., 2]) / 255 + 0.5)
  luma = sources.rgb_to_luma(rgb)[..., 0]
  np.testing.assert_array_equal(luma, expected.astype(np.uint8))
  assert luma[0, 0] == 16 and luma[0, 1] == 235
