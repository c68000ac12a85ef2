"""Projection of a restoration onto its JPEG's quantization intervals (jaxcar.data.consistency)."""

import numpy as np
import pytest
from PIL import Image

from jaxcar.data import consistency, jpeg, sources


@pytest.fixture(scope="module")
def photo():
  """A real grey photograph, 70x90 so the right and bottom edges have partial 8x8 blocks."""
  return sources.load_image(sources.list_images("embedded:validation")[0], "grey")[100:170, 200:290]


def _jpeg(image, quality):
  data = jpeg.compress(image, quality)
  return jpeg.decode(data, "grey"), jpeg.quantization_tables(data)[0]


def test_dct_is_orthonormal():
  np.testing.assert_allclose(consistency.DCT @ consistency.DCT.T, np.eye(8), atol=1e-12)


@pytest.mark.parametrize("quality", [10, 50, 95])
def test_the_jpeg_itself_is_left_where_it_is(photo, quality):
  decoded, table = _jpeg(photo, quality)
  projected = consistency.project(decoded.astype(np.float64), decoded, table)
  assert np.abs(projected - decoded).max() < 1e-9  # its coefficients sit inside their own intervals


@pytest.mark.parametrize("quality", [10, 50, 95])
def test_the_original_lies_inside_the_intervals(photo, quality):
  decoded, table = _jpeg(photo, quality)
  moved = lambda t: np.mean((consistency.project(photo.astype(np.float64), decoded, t) - photo)[:64, :88] ** 2)
  assert moved(table) < 0.01  # up to the encoder's integer DCT (measured: 4e-27, 4e-7, 0.004 at q 10, 50, 95)
  assert moved(table.T) > 0.04  # a table read in the wrong order (transposed) cuts the original off


@pytest.mark.parametrize("quality, at_most", [(10, 1.0), (50, 1.0), (95, 0.5)])
def test_projection_moves_a_guess_closer_to_the_original(photo, quality, at_most):
  decoded, table = _jpeg(photo, quality)
  guess = photo.astype(np.float64) + np.random.default_rng(quality).normal(0, 4, photo.shape)
  error = lambda image: np.mean((image[:64, :88] - photo[:64, :88]) ** 2)
  projected = consistency.project(guess, decoded, table)
  # never further from the original; where the intervals are narrow (q95), much closer
  assert error(projected) <= at_most * error(guess)
  # the partial blocks at the right and bottom edges are not the encoder's: untouched
  np.testing.assert_array_equal(projected[64:], guess[64:])
  np.testing.assert_array_equal(projected[:, 88:], guess[:, 88:])
