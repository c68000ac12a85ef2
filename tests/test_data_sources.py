"""Image sources, decoding rules, bad files, and the decoded-image cache."""

import io
import logging
import os
from pathlib import Path

import numpy as np
import pytest
import skimage.color
import skimage.data
from PIL import Image

from jaxcar import paths
from jaxcar.data import cache, sources


def save(path, array, **options):
  path.parent.mkdir(parents=True, exist_ok=True)
  Image.fromarray(array).save(path, **options)
  return path


def photo(height=40, width=56):
  return np.ascontiguousarray(skimage.data.astronaut()[100:100 + height, 150:150 + width])


def test_embedded_source_is_the_bundled_photographs():
  paths = sources.list_images("embedded")
  assert len(paths) >= 8
  assert {os.path.basename(p) for p in paths} <= set(sources.EMBEDDED_PHOTOS)
  assert not any(name in p for p in paths for name in ("text", "page", "logo", "horse", "chessboard"))
  assert sources.load_image(paths[0], "rgb").shape[-1] == 3


def test_embedded_validation_photos_are_held_out_of_training():
  held_out = sources.list_images("embedded:validation")
  assert len(held_out) == 2 and not set(held_out) & set(sources.list_images("embedded"))


def test_folder_is_recursive_sorted_and_ignores_other_files(tmp_path):
  for name in ["b/2.png", "a.bmp", "b/1.tif", "c/d/3.webp", "e.JPG"]:
    save(tmp_path / name, photo())
  (tmp_path / "notes.txt").write_text("not an image")
  found = sources.list_images(tmp_path)
  assert [os.path.relpath(p, tmp_path) for p in found] == ["a.bmp", "b/1.tif", "b/2.png", "c/d/3.webp", "e.JPG"]
  assert sources.list_images(str(tmp_path)) == found


def test_list_file_resolves_relative_paths(tmp_path):
  save(tmp_path / "x" / "one.png", photo())
  listing = tmp_path / "train.txt"
  listing.write_text("# training images\nx/one.png\n\n")
  assert sources.list_images(listing) == [str(tmp_path / "x" / "one.png")]


def test_empty_or_missing_source_is_a_clear_error(tmp_path):
  with pytest.raises(FileNotFoundError, match=str(tmp_path / "nowhere")):
    sources.list_images(tmp_path / "nowhere")
  (tmp_path / "empty").mkdir()
  with pytest.raises(FileNotFoundError, match="holds no"):
    sources.list_images(tmp_path / "empty")
  (tmp_path / "empty.txt").write_text("\n")
  with pytest.raises(FileNotFoundError, match="names no files"):
    sources.list_images(tmp_path / "empty.txt")


def test_grey_is_matlab_bt601_luma_and_grey_files_stay_themselves(tmp_path):
  rgb = skimage.data.astronaut()
  path = save(tmp_path / "a.png", rgb)
  luma = sources.load_image(path, "grey")
  assert luma.shape == rgb.shape[:2] + (1,) and luma.dtype == np.uint8
  reference = np.floor(skimage.color.rgb2ycbcr(rgb)[..., 0] + 0.5)  # MATLAB rounds halves up
  difference = np.abs(luma[..., 0].astype(int) - reference)
  assert difference.max() <= 1 and np.mean(difference > 0) < 1e-4  # only float ties may differ
  assert 16 <= luma.min() and luma.max() <= 235
  grey = skimage.data.camera()
  grey_path = save(tmp_path / "g.png", grey)
  np.testing.assert_array_equal(sources.load_image(grey_path, "grey")[..., 0], grey)
  np.testing.assert_array_equal(sources.load_image(grey_path, "rgb"), np.repeat(grey[..., None], 3, -1))
  with pytest.raises(ValueError, match="color"):
    sources.load_image(grey_path, "gray")


def test_unreadable_files_raise_one_line_errors_naming_the_file(tmp_path):
  good = io.BytesIO()
  Image.fromarray(photo()).save(good, format="PNG")
  files = {"corrupt.png": os.urandom(500), "truncated.png": good.getvalue()[:300],
           "text.jpg": b"just some text, not a JPEG at all"}
  for name, content in files.items():
    (tmp_path / name).write_bytes(content)
    with pytest.raises(sources.ImageError, match=name) as error:
      sources.load_image(tmp_path / name, "rgb")
    assert "\n" not in str(error.value)


def test_decompression_bomb_guard_stays_on(tmp_path, monkeypatch):
  path = save(tmp_path / "big.png", photo(64, 64))
  monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 4096 px is over twice the limit
  with pytest.raises(sources.ImageError, match="big.png"):
    sources.load_image(path, "rgb")


def test_unusual_modes_are_converted(tmp_path):
  rgb = photo()
  cmyk = tmp_path / "cmyk.jpg"
  Image.fromarray(rgb).convert("CMYK").save(cmyk, quality=95)
  assert np.abs(sources.load_image(cmyk, "rgb").astype(int) - rgb).mean() < 6

  rgba = np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)])
  rgba[0, 0, 3] = 0      # fully transparent: the white background
  rgba[0, 1, 3] = 128    # half transparent: halfway to white
  loaded = sources.load_image(save(tmp_path / "rgba.png", rgba), "rgb")
  np.testing.assert_array_equal(loaded[0, 0], [255, 255, 255])
  np.testing.assert_allclose(loaded[0, 1], rgb[0, 1].astype(float) * 128 / 255 + 255 * 127 / 255, atol=1)
  np.testing.assert_array_equal(loaded[1:], rgb[1:])

  palette = Image.fromarray(rgb).quantize(16)
  palette.save(tmp_path / "palette.png")
  np.testing.assert_array_equal(sources.load_image(tmp_path / "palette.png", "rgb"),
                                np.asarray(palette.convert("RGB")))

  deep = (np.arange(40 * 56, dtype=np.uint32).reshape(40, 56) * 29 % 65536).astype(np.uint16)
  Image.fromarray(deep).save(tmp_path / "deep.png")
  np.testing.assert_array_equal(sources.load_image(tmp_path / "deep.png", "grey")[..., 0],
                                np.round(deep / 257.0).astype(np.uint8))


def test_exif_orientation_is_applied(tmp_path):
  rgb = photo(40, 56)
  exif = Image.Exif()
  exif[0x0112] = 6  # stored sideways: display after a 90-degree clockwise turn
  Image.fromarray(rgb).save(tmp_path / "rotated.jpg", quality=95, exif=exif)
  loaded = sources.load_image(tmp_path / "rotated.jpg", "rgb")
  assert loaded.shape == (56, 40, 3)
  upright = np.rot90(rgb, -1)
  assert np.abs(loaded.astype(int) - upright).mean() < 6


def test_cache_skips_bad_files_reports_them_and_maps_the_rest(tmp_path, caplog):
  folder = tmp_path / "images"
  save(folder / "a.png", photo(40, 56))
  save(folder / "b.png", photo(24, 32))
  (folder / "broken.png").write_bytes(b"\x89PNG broken")
  with caplog.at_level(logging.WARNING):
    images = cache.decoded_images(folder, "rgb", tmp_path / "cache")
  assert len(images) == 2 and [images[i].shape for i in range(2)] == [(40, 56, 3), (24, 32, 3)]
  np.testing.assert_array_equal(images[1], photo(24, 32))
  assert "skipped 1 file" in caplog.text and "broken.png" in caplog.text
  assert not images[0].flags.writeable


def test_cache_is_reused_and_rebuilt_when_a_file_changes(tmp_path):
  folder, cache_dir = tmp_path / "images", tmp_path / "cache"
  path = save(folder / "a.png", photo())
  first = cache.decoded_images(folder, "grey", cache_dir)
  assert cache.decoded_images(folder, "grey", cache_dir).data_path == first.data_path
  save(path, 255 - photo())
  os.utime(path, ns=(0, os.stat(path).st_mtime_ns + 10**9))
  second = cache.decoded_images(folder, "grey", cache_dir)
  assert second.data_path != first.data_path
  np.testing.assert_array_equal(second[0], sources.load_image(path, "grey"))
  assert cache.decoded_images(folder, "rgb", cache_dir).data_path not in (first.data_path, second.data_path)


def test_default_cache_is_the_decoded_folder_under_the_one_cache_root(tmp_path, monkeypatch):
  monkeypatch.setenv("JAXCAR_CACHE", str(tmp_path / "root"))
  images = cache.decoded_images(save(tmp_path / "images" / "a.png", photo()).parent, "rgb")
  assert os.path.dirname(images.data_path) == str(tmp_path / "root" / "decoded")
  monkeypatch.delenv("JAXCAR_CACHE")
  assert cache.default_cache_dir() == paths.cache_dir("decoded") == Path.home() / ".cache/jaxcar/decoded"


def test_cache_of_only_bad_files_is_a_clear_error(tmp_path):
  (tmp_path / "bad.png").write_bytes(b"nope")
  with pytest.raises(FileNotFoundError, match="no readable image"):
    cache.decoded_images(tmp_path, "rgb", tmp_path / "cache")


def test_a_truncated_cache_is_rebuilt(tmp_path):
  folder, cache_dir = tmp_path / "images", tmp_path / "cache"
  path = save(folder / "a.png", photo())
  images = cache.decoded_images(folder, "rgb", cache_dir)
  with open(images.data_path, "r+b") as data:
    data.truncate(100)  # as a crash or a full disk would leave it
  rebuilt = cache.decoded_images(folder, "rgb", cache_dir)
  np.testing.assert_array_equal(rebuilt[0], sources.load_image(path, "rgb"))
  assert not list(cache_dir.glob("*.partial"))
