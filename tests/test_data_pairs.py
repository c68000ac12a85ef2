"""Paired sources (`pairs:DIR`): real JPEGs with their clean originals, matched by name, cached, cropped on
the JPEG's block grid, validated, and trained on end to end."""

import io
import json
import logging
import os

import numpy as np
import pytest
import skimage.data
from PIL import Image

from jaxcar import cli
from jaxcar.configs import base
from jaxcar.data import cache, jpeg, pairs, pipeline, sources, transforms
from jaxcar.training import config_checks, validation


def photo(top, left, height=48, width=64, grey=False):
  rgb = np.ascontiguousarray(skimage.data.astronaut()[top:top + height, left:left + width])
  return np.asarray(Image.fromarray(rgb).convert("L")) if grey else rgb


def save_pair(folder, stem, clean, quality=20, subsampling=2, clean_suffix=".png"):
  """X.jpg (Pillow at `quality`) beside its clean original X<clean_suffix>."""
  folder.mkdir(parents=True, exist_ok=True)
  Image.fromarray(clean).save(folder / f"{stem}{clean_suffix}")
  Image.fromarray(clean).save(folder / f"{stem}.jpg", quality=quality, subsampling=subsampling)
  return folder / f"{stem}.jpg", folder / f"{stem}{clean_suffix}"


@pytest.fixture
def pair_folder(tmp_path):
  """Three good colour pairs (4:2:0, 4:4:4, a .bmp original in a subfolder) and every kind of misfit."""
  folder = tmp_path / "pairs"
  save_pair(folder, "a", photo(0, 0))
  save_pair(folder, "b", photo(100, 100), quality=40, subsampling=0)
  save_pair(folder / "sub", "c", photo(200, 50), clean_suffix=".bmp")
  Image.fromarray(photo(0, 0)).save(folder / "lonely.jpg")          # no original
  Image.fromarray(photo(0, 0)).save(folder / "orphan.png")          # no JPEG
  save_pair(folder, "twice", photo(0, 0))                            # two originals
  Image.fromarray(photo(0, 0)).save(folder / "twice.bmp")
  Image.fromarray(photo(0, 0)).save(folder / "sized.jpg")            # sizes differ: skipped when decoded
  Image.fromarray(photo(0, 0, 40, 64)).save(folder / "sized.png")
  (folder / "notes.txt").write_text("not an image")
  return folder


def test_files_are_paired_by_name_and_misfits_are_skipped_with_a_reason(pair_folder, caplog):
  with caplog.at_level(logging.WARNING):
    entries = sources.list_images(f"pairs:{pair_folder}")
  named = [tuple(os.path.relpath(p, pair_folder) for p in pairs.split(e)) for e in entries]
  assert named == [("a.jpg", "a.png"), ("b.jpg", "b.png"), ("sized.jpg", "sized.png"), ("sub/c.jpg", "sub/c.bmp")]
  assert "skipped 5 file(s)" in caplog.text
  for name, reason in [("lonely.jpg", "no clean file"), ("orphan.png", "no JPEG"), ("twice.bmp", "ambiguous")]:
    assert any(name in line and reason in line for line in caplog.text.splitlines()), name
  assert sources.list_images(f"pairs:{pair_folder}") == entries  # deterministic, and reported only once


def test_a_folder_without_pairs_and_a_bare_prefix_are_one_line_errors(tmp_path):
  (tmp_path / "only").mkdir()
  Image.fromarray(photo(0, 0)).save(tmp_path / "only" / "x.png")
  for source, message in [(f"pairs:{tmp_path / 'only'}", "holds no JPEG"),
                          (f"pairs:{tmp_path / 'none'}", "no such folder"), ("pairs:", "needs a folder")]:
    with pytest.raises(FileNotFoundError, match=message) as error:
      sources.list_images(source)
    assert "\n" not in str(error.value)
  config = base.get_config()
  config.data.source = "embedded,pairs: "
  with pytest.raises(config_checks.ConfigValueError, match="pairs:DIR"):
    config_checks.check(config)


def test_cache_holds_the_decoded_jpeg_beside_the_original_with_the_files_own_tables(pair_folder, tmp_path, caplog):
  with caplog.at_level(logging.WARNING):
    images = cache.decoded_images(f"pairs:{pair_folder}", "rgb", tmp_path / "cache")
  assert [pairs.name(p) for p in images.paths] == ["a.jpg", "b.jpg", "c.jpg"]
  assert "sizes differ (JPEG 48x64, clean 40x64)" in caplog.text
  for i, expected_grid in enumerate([16, 8, 16]):  # 4:2:0 chroma blocks span 16 pixels
    jpeg_path, clean_path = pairs.split(images.paths[i])
    data = open(jpeg_path, "rb").read()
    assert images[i].shape == (48, 64, 6)
    np.testing.assert_array_equal(images[i][..., :3], jpeg.decode(data, "rgb"))  # the file, not a re-compression
    np.testing.assert_array_equal(images[i][..., 3:], sources.load_image(clean_path, "rgb"))
    tables, grid = images.pair(i)
    np.testing.assert_array_equal(tables, jpeg.quantization_tables(data))
    assert grid == expected_grid
  grey = cache.decoded_images(f"pairs:{pair_folder}", "grey", tmp_path / "cache")
  assert grey[0].shape == (48, 64, 2) and grey.pair(0)[1] == 16


def test_the_cache_keys_on_both_files_of_a_pair(pair_folder, tmp_path):
  first = cache.decoded_images(f"pairs:{pair_folder}", "rgb", tmp_path / "cache")
  clean = pair_folder / "b.png"
  Image.fromarray(255 - photo(100, 100)).save(clean)
  os.utime(clean, ns=(0, os.stat(clean).st_mtime_ns + 10**9))
  second = cache.decoded_images(f"pairs:{pair_folder}", "rgb", tmp_path / "cache")
  assert second.data_path != first.data_path
  np.testing.assert_array_equal(second[1][..., 3:], 255 - photo(100, 100))


def _train_batches(folder, tmp_path, **overrides):
  config = base.get_config().data
  config.update({"source": f"pairs:{folder}", "cache_dir": str(tmp_path / "cache"), "patch_size": 16,
                 "validation": "", "dihedral": False, **overrides})
  dataset_images = cache.decoded_images(config.source, config.color, config.cache_dir)
  return pipeline.TrainBatches(dataset_images, transforms.PairSettings.from_config(config), 4, seed=0), config


def test_patches_are_crops_of_the_real_pair_on_the_jpeg_block_grid(pair_folder, tmp_path):
  batches, _ = _train_batches(pair_folder, tmp_path)
  rng = np.random.default_rng(0)
  offsets = set()
  for _ in range(30):
    i = int(rng.integers(len(batches.images)))
    patch = batches.patch(i, rng)
    stacked, (tables, grid) = batches.images[i], batches.images.pair(i)
    top, left = _find(stacked[..., 3:], patch["clean"])
    assert top % grid == 0 and left % grid == 0
    np.testing.assert_array_equal(patch["degraded"], stacked[top:top + 16, left:left + 16, :3])
    np.testing.assert_array_equal(patch["tables"], tables)
    offsets.add((top, left))
  assert len(offsets) > 5  # random positions, not one fixed crop


def _find(image, patch):
  """(top, left) of the only place `patch` occurs in `image`."""
  size = patch.shape[0]
  found = [(t, l) for t in range(image.shape[0] - size + 1) for l in range(image.shape[1] - size + 1)
           if np.array_equal(image[t:t + size, l:l + size], patch)]
  assert len(found) == 1, found
  return found[0]


def test_flips_and_rotations_keep_the_pair_a_jpeg_with_the_tables_given():
  """A dihedral transform of a decoded grey JPEG equals the JPEG of the transformed original under the
  tables the patch carries (transposed for the 4 transforms that swap the axes), up to libjpeg's integer
  DCT rounding; the untransposed tables would be far off."""
  clean = photo(150, 150, 32, 32, grey=True)[..., None]
  data = jpeg.compress(clean, 30)
  pair = np.concatenate([jpeg.decode(data, "grey"), clean], -1)
  tables = jpeg.quantization_tables(data)
  settings = transforms.PairSettings(patch_size=32, quality_range=(10, 10), dihedral=True)
  seen = set()
  for seed in range(40):
    patch = transforms.aligned_pair_patch(pair, tables, 8, settings, np.random.default_rng(seed))
    which = next(w for w in range(8) if np.array_equal(transforms.dihedral_array(clean, w), patch["clean"]))
    seen.add(which)
    again = _decode_with(patch["clean"], patch["tables"])
    assert np.abs(again.astype(int) - patch["degraded"]).mean() < 0.1, which
    if which % 2:
      wrong = _decode_with(patch["clean"], tables)
      assert np.abs(wrong.astype(int) - patch["degraded"]).mean() > 0.3
  assert seen == set(range(8))


def _decode_with(grey, tables):
  out = io.BytesIO()
  Image.fromarray(np.ascontiguousarray(grey[..., 0])).save(out, "JPEG", qtables=[list(t.flatten()) for t in tables])
  return np.asarray(Image.open(out))[..., None]


def test_a_patch_that_is_not_a_whole_number_of_blocks_is_never_flipped(pair_folder, tmp_path):
  batches, _ = _train_batches(pair_folder, tmp_path, dihedral=True, patch_size=20)
  rng = np.random.default_rng(1)
  for _ in range(20):
    patch = batches.patch(0, rng)
    top, left = _find(batches.images[0][..., 3:], patch["clean"])  # found untransformed
    assert top % 16 == 0 and left % 16 == 0


def test_split_validation_holds_out_whole_pairs_and_scores_the_real_jpeg(pair_folder, tmp_path):
  config = base.get_config().data
  config.update(source=f"pairs:{pair_folder}", validation="split:1", color="grey", cache_dir=str(tmp_path))
  training, held_out = sources.training_and_validation(config.source, config.validation)
  assert len(training) == 3 and len(held_out) == 1 and not set(training) & set(held_out)
  examples = validation.load(config)
  assert [e.name for e in examples] == [pairs.name(held_out[0])]
  data = open(pairs.split(held_out[0])[0], "rb").read()
  np.testing.assert_array_equal(examples[0].compressed, jpeg.decode(data, "grey"))


def test_a_few_training_steps_on_pairs_end_to_end(tmp_path):
  """carcnn (the recipe that trained on X.jpg / X.bmp pairs) through the real loader and loop."""
  from jaxcar.training import loop  # pylint: disable=import-outside-toplevel  (slow import, this test only)
  folder = tmp_path / "pairs"
  for i in range(4):
    save_pair(folder, f"{i}", photo(60 * i, 70 * i, grey=True), quality=10, clean_suffix=".bmp")
  config = cli.load_config("carcnn:small", [f"data.source=pairs:{folder}", "data.validation=split:1",
                                            f"data.cache_dir={tmp_path / 'cache'}", "batch_size=8",
                                            "data.patch_size=16", "num_steps=3", "log_every=1", "eval_every=3",
                                            "checkpoint_every=3"])
  metrics = loop.train_and_evaluate(config, tmp_path / "run")
  assert np.isfinite(metrics["validation_psnr"])
  lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
  assert sum("loss" in line for line in lines) == 3
