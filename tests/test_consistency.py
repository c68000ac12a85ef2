"""Projection of a restoration onto its JPEG's quantization intervals (jaxcar.data.consistency)."""

import numpy as np
import pytest
from PIL import Image

from jaxcar import loading, restore
from jaxcar.data import consistency, jpeg, jpeg_file, sources


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


# Colour: the file's own Y, Cb, Cr planes (jaxcar.data.jpeg_file.stored_planes) and project_color.

@pytest.fixture(scope="module")
def color_photo():
  """A real colour photograph, 70x90: partial blocks at the edges, and an odd-free 4:2:0 cell grid."""
  return sources.load_image(sources.list_images("embedded:validation")[0], "rgb")[100:170, 200:290]


def _encoder_chroma_coefficients(image, table, factor):
  """What a libjpeg encoder quantizes for Cb: JFIF conversion, edge padding to whole MCUs, 2x2 cell
  averages for 4:2:0, level shift, DCT, rounding. Written from the JPEG standard, not from our code."""
  rgb = image.astype(np.float64)
  blue = -0.168736 * rgb[..., 0] - 0.331264 * rgb[..., 1] + 0.5 * rgb[..., 2] + 128.0
  mcu = 8 * factor
  height, width = -(-blue.shape[0] // mcu) * mcu, -(-blue.shape[1] // mcu) * mcu
  padded = np.pad(blue, ((0, height - blue.shape[0]), (0, width - blue.shape[1])), mode="edge")
  cells = padded.reshape(height // factor, factor, width // factor, factor).mean(axis=(1, 3)) - 128.0
  blocks = cells.reshape(cells.shape[0] // 8, 8, cells.shape[1] // 8, 8).transpose(0, 2, 1, 3)
  return np.round(consistency.DCT @ blocks @ consistency.DCT.T / table)


def _requantized(plane, table):
  """The plane's blocks quantized with `table` and decoded again (float IDCT, rounded)."""
  rows, cols = plane.shape[0] // 8, plane.shape[1] // 8
  blocks = (plane[:rows * 8, :cols * 8] - 128.0).reshape(rows, 8, cols, 8).transpose(0, 2, 1, 3)
  coefficients = np.round(consistency.DCT @ blocks @ consistency.DCT.T / table)
  pixels = np.round(consistency.DCT.T @ (coefficients * table) @ consistency.DCT + 128.0)
  return coefficients, pixels.transpose(0, 2, 1, 3).reshape(rows * 8, cols * 8)


@pytest.mark.parametrize("subsampling, factor", [("4:2:0", 2), ("4:4:4", 1)])
@pytest.mark.parametrize("quality, at_most", [(50, 0.005), (95, 0.06)])
def test_stored_chroma_planes_hold_the_coefficients_the_encoder_wrote(color_photo, subsampling, factor,
                                                                      quality, at_most):
  data = jpeg.compress(color_photo, quality, subsampling)
  stored = jpeg_file.stored_planes(data)
  assert stored.factors == [1, factor, factor]
  plane, table = stored.planes[1].astype(np.float64), stored.tables[1]
  assert plane.shape == (-(-70 // factor), -(-90 // factor))
  recovered, again = _requantized(plane, table)
  written = _encoder_chroma_coefficients(color_photo, table, factor)[:recovered.shape[0], :recovered.shape[1]]
  # Only the decoder's and the integer DCT's roundings differ (measured: 0.5% at q50, 2-3% at q95).
  assert np.mean(recovered != written) < at_most
  # The plane is what the decoder's inverse DCT made: quantizing and decoding it again gives it back.
  assert np.abs(again - plane[:again.shape[0], :again.shape[1]]).max() <= 1.0


def test_an_upsampled_chroma_plane_is_not_the_stored_one(color_photo):
  """Why stored_planes decodes a second time at half scale: the ordinary decode's chroma, upsampled
  by libjpeg and averaged back over 2x2 cells, is a blurred plane (measured: up to 6-10 levels off
  after quantizing and decoding again, against 1 for the stored plane)."""
  data = jpeg.compress(color_photo[:64, :80], 90, "4:2:0")
  full = jpeg_file._decode_ycbcr(data, 1)[..., 1].astype(np.float64)
  averaged = np.round(full.reshape(32, 2, 40, 2).mean(axis=(1, 3)))
  _, again = _requantized(averaged, jpeg_file.stored_planes(data).tables[1])
  assert np.abs(again - averaged).max() >= 3.0


def test_stored_planes_refuse_files_that_are_not_ycbcr_420_or_444(color_photo, tmp_path):
  assert jpeg_file.stored_planes(jpeg.compress(color_photo[..., :1], 50)) is None  # grey
  Image.fromarray(color_photo).save(tmp_path / "rgb.jpg", quality=90, keep_rgb=True)  # RGB inside
  assert jpeg_file.stored_planes((tmp_path / "rgb.jpg").read_bytes()) is None
  assert jpeg_file.stored_luma((tmp_path / "rgb.jpg").read_bytes()) is None
  Image.fromarray(color_photo).save(tmp_path / "422.jpg", quality=90, subsampling=1)  # 4:2:2
  assert jpeg_file.stored_planes((tmp_path / "422.jpg").read_bytes()) is None


def _color_case(photo, quality, subsampling):
  data = jpeg.compress(photo, quality, subsampling)
  return jpeg.decode(data, "rgb"), jpeg_file.stored_planes(data)


@pytest.mark.parametrize("subsampling", ["4:2:0", "4:4:4"])
@pytest.mark.parametrize("quality", [10, 50, 95])
def test_color_original_lies_inside_and_a_guess_gets_closer(color_photo, quality, subsampling):
  decoded, stored = _color_case(color_photo, quality, subsampling)
  whole = (slice(0, 64), slice(0, 80))  # the whole 16x16 macroblocks, where the projection acts
  error = lambda image: np.mean((image[whole] - color_photo[whole]) ** 2)
  assert error(consistency.project_color(color_photo.astype(np.float64), stored)) < 0.05  # measured <= 0.03
  guess = color_photo.astype(np.float64) + np.random.default_rng(quality).normal(0, 4, color_photo.shape)
  projected = consistency.project_color(guess, stored)
  assert error(projected) <= (0.85 if quality == 95 else 1.0) * error(guess)
  np.testing.assert_allclose(projected[64:], guess[64:], atol=1e-9)  # partial macroblocks: untouched
  swapped = jpeg_file.StoredPlanes(stored.planes[::-1], stored.factors[::-1], stored.tables[::-1])
  if subsampling == "4:4:4":  # planes in the wrong order cut the original off
    assert error(consistency.project_color(color_photo.astype(np.float64), swapped)) > 1.0


def test_a_color_model_is_projected_only_with_the_files_planes(color_photo):
  """LoadedModel.finish: colour outputs move into the file's intervals when given its planes."""
  loaded = loading.load_model(pretrained="color")
  assert loaded.config.data.jpeg_consistency
  decoded, stored = _color_case(color_photo, 95, "4:2:0")
  tables = jpeg.quantization_tables(jpeg.compress(color_photo, 95))
  noisy = np.clip(decoded / 255.0 + np.random.default_rng(0).normal(0, 0.03, decoded.shape), 0, 1)
  plain = loaded.finish(noisy.astype(np.float32), decoded, tables)
  projected = loaded.finish(noisy.astype(np.float32), decoded, tables, stored)
  whole = (slice(0, 64), slice(0, 80))
  error = lambda image: np.mean((image[whole].astype(np.float64) - color_photo[whole]) ** 2)
  assert error(projected) < 0.5 * error(plain)


def test_restore_keeps_a_colour_file_inside_its_intervals(tmp_path):
  """End to end: `restore` with the shipped colour model gives an image the projection barely moves
  (uint8 rounding only); the same network unprojected does not."""
  Image.fromarray(sources.load_image(sources.list_images("embedded:validation")[0], "rgb")[:96, :128]).save(
      tmp_path / "photo.jpg", quality=90)
  file = jpeg_file.read(tmp_path / "photo.jpg")
  stored = jpeg_file.stored_planes(file.data)
  projected = loading.load_model(pretrained="color")
  config = projected.config.copy_and_resolve_references()
  config.data.jpeg_consistency = False
  unprojected = loading.LoadedModel(config, projected.predictor, projected.source)

  def moved(loaded):
    restored = np.asarray(restore.restore_image(loaded, file, restore.Settings(bucket=0)), np.float64)
    return np.mean(np.abs(consistency.project_color(restored, stored) - restored))

  assert moved(projected) < 0.05  # measured 0.017 (color-v1, never projected: 0.134)
  assert moved(unprojected) > 0.08
