"""Restoring real JPEG files: tiling, metadata, colour handling and bad input."""

import io
import types

import jax
import ml_collections
import numpy as np
import pytest
from PIL import Image, ImageCms

from jaxcar.configs import base
from jaxcar import loading, models, predict, restore
from jaxcar.data import jpeg, jpeg_file

ORIENTATION = 0x0112


def _loaded(name, color, **data):
  config = base.get_config()
  config.model.name = name
  config.model.options = ml_collections.ConfigDict(
      {"color": color} if name == "arcnn" else dict(color=color, num_blocks=2, features=8) if name == "qcn" else {})
  config.data.color = color
  config.data.update(data)
  model = models.from_config(config)
  return loading.LoadedModel(config, predict.Predictor(model, models.init(model, jax.random.key(0))["params"]), "t")


@pytest.fixture(scope="module")
def grey_model():
  return _loaded("dacar3", "grey", quality_range=(10, 10))


def _photo(height, width, seed=0):
  """A smooth random colour image (JPEG of noise would be all artifacts)."""
  coarse = np.random.default_rng(seed).integers(0, 256, (height // 8 + 2, width // 8 + 2, 3)).astype(np.uint8)
  return np.asarray(Image.fromarray(coarse).resize((width, height), Image.BICUBIC))


def _write_jpeg(path, pixels, quality=30, **options):
  Image.fromarray(pixels).save(path, format="JPEG", quality=quality, **options)
  return path


@pytest.mark.parametrize("name,color,overlap", [("dacar3", "grey", 12), ("qcn", "rgb", 20)])
def test_tiled_equals_whole_image(name, color, overlap):
  loaded = _loaded(name, color, value_range="minus_one_one", quantization_maps=name == "qcn")
  pixels = _photo(70, 90)[..., :1] if color == "grey" else _photo(70, 90)
  data = io.BytesIO()
  Image.fromarray(pixels[..., 0] if color == "grey" else pixels).save(data, format="JPEG", quality=20)
  tables = jpeg.quantization_tables(data.getvalue())
  inputs, _ = loaded.inputs(pixels, tables)
  whole = predict.predict(loaded.predictor, inputs, bucket=0)
  tiled = predict.predict_tiled(loaded.predictor, inputs, tile=48, overlap=overlap)
  assert predict.tile_count(70, 90, 48, overlap, loaded.predictor.size_multiple) > 4
  np.testing.assert_allclose(tiled, whole, atol=1e-5)
  # Without context the seams show: the comparison above can fail.
  seams = predict.predict_tiled(loaded.predictor, inputs, tile=24, overlap=0)
  assert np.abs(seams - whole).max() > 1e-3


def test_restore_tiles_above_the_pixel_budget(grey_model, tmp_path):
  pixels = _photo(64, 88)[..., 0]
  file = jpeg_file.read(_write_jpeg(tmp_path / "a.jpg", pixels))
  whole = restore.restore_image(grey_model, file, restore.Settings(bucket=0))
  tiled = restore.restore_image(grey_model, file, restore.Settings(max_pixels=1000, tile=32, tile_overlap=12))
  np.testing.assert_array_equal(np.asarray(tiled), np.asarray(whole))


def test_exif_orientation_and_icc_survive(grey_model, tmp_path):
  exif = Image.Exif()
  exif[ORIENTATION] = 6  # rotate 90 degrees clockwise to display
  icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
  (tmp_path / "in").mkdir()
  _write_jpeg(tmp_path / "in" / "rotated.jpg", _photo(40, 64), exif=exif.tobytes(), icc_profile=icc)
  result = restore.restore_files(grey_model, [str(tmp_path / "in")], tmp_path / "out", restore.Settings())
  assert result["restored"] == [str(tmp_path / "out" / "rotated.png")]
  with Image.open(tmp_path / "out" / "rotated.png") as output:
    assert output.getexif()[ORIENTATION] == 6
    assert output.info["icc_profile"] == icc
    assert output.size == (64, 40) and output.mode == "RGB"  # stored orientation; grey model kept the chroma


def test_bad_files_are_skipped_and_the_rest_restored(grey_model, tmp_path):
  folder = tmp_path / "in"
  folder.mkdir()
  _write_jpeg(folder / "good.jpg", _photo(32, 32)[..., 0])
  (folder / "text.jpg").write_text("not an image")
  (folder / "cut.jpg").write_bytes(_write_jpeg(tmp_path / "whole.jpg", _photo(64, 64)).read_bytes()[:700])
  Image.fromarray(_photo(16, 16)).save(folder / "picture.png")  # named explicitly below: not a JPEG
  inputs = [str(folder), str(folder / "picture.png")]
  result = restore.restore_files(grey_model, inputs, tmp_path / "out", restore.Settings())
  assert result["restored"] == [str(tmp_path / "out" / "good.png")]
  assert sorted(result["skipped"]) == sorted(str(folder / n) for n in ("cut.jpg", "text.jpg", "picture.png"))
  assert "start-of-image" in result["skipped"][str(folder / "text.jpg")]


def test_overwriting_an_input_needs_overwrite(grey_model, tmp_path):
  source = _write_jpeg(tmp_path / "photo.jpg", _photo(32, 32))
  settings = restore.Settings(output_format="jpeg")
  with pytest.raises(ValueError, match="--overwrite"):
    restore.restore_files(grey_model, [str(source)], tmp_path, settings)
  (tmp_path / "other").mkdir()
  twin = _write_jpeg(tmp_path / "other" / "photo.jpg", _photo(32, 32))
  with pytest.raises(ValueError, match="several inputs would be written"):
    restore.restore_files(grey_model, [str(source), str(twin)], tmp_path / "out", restore.Settings())
  before = source.read_bytes()
  settings.overwrite = True
  restore.restore_files(grey_model, [str(source)], tmp_path, settings)
  assert source.read_bytes() != before


def test_colour_model_on_grey_file_writes_grey(tmp_path):
  colour = _loaded("arcnn", "rgb")
  source = _write_jpeg(tmp_path / "grey.jpg", _photo(24, 40)[..., 0])
  restore.restore_files(colour, [str(source)], tmp_path / "out", restore.Settings(output_format="jpeg"))
  with Image.open(tmp_path / "out" / "grey.jpg") as output:
    assert output.mode == "L" and output.size == (40, 24)


@pytest.mark.parametrize("quality", [5, 10, 50, 93])
def test_quality_estimate_is_exact_for_libjpeg_files(quality):
  data = jpeg.compress(_photo(16, 16), quality)
  assert restore.estimate_quality(jpeg.quantization_tables(data)) == quality


def test_quality_warning_only_for_quality_specific_models(grey_model, tmp_path, caplog):
  tables = jpeg.quantization_tables(jpeg.compress(_photo(16, 16), 60))
  restore.warn_if_unfamiliar(grey_model, tables, "x.jpg")
  assert "trained on qualities 10-10" in caplog.text
  caplog.clear()
  maps_config = base.get_config()
  maps_config.data.quantization_maps = True
  restore.warn_if_unfamiliar(types.SimpleNamespace(config=maps_config), tables, "x.jpg")
  assert not caplog.text
