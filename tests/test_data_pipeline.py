"""The Grain training pipeline: shapes, ranges, the degradation, determinism, resume, workers, sharding."""

import logging
import multiprocessing
import os

import numpy as np
import pytest
import skimage.data
import skimage.transform
from PIL import Image

from jaxcar.configs import base
from jaxcar.data import jpeg, pipeline, prepare

PATCH = 16


@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory):
  """Six distinct 40x56 crops of a real photograph."""
  folder = tmp_path_factory.mktemp("photos")
  astronaut = skimage.data.astronaut()
  for i in range(6):
    Image.fromarray(astronaut[60 * i:60 * i + 40, 70 * i:70 * i + 56]).save(folder / f"{i}.png")
  return folder


def data_config(source, cache_dir, **overrides):
  config = base.get_config().data
  config.source, config.cache_dir, config.patch_size = str(source), str(cache_dir), PATCH
  config.update(overrides)
  return config


def take(iterator, count):
  return [next(iterator) for _ in range(count)]


def assert_same_batches(first, second):
  assert len(first) == len(second)
  for a, b in zip(first, second):
    assert a.keys() == b.keys()
    for key in a:
      np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_rgb_qcn_batch_shapes_ranges_and_maps(photo_folder, tmp_path):
  config = data_config(photo_folder, tmp_path, quality_range=(1, 60), value_range="minus_one_one",
                       quantization_maps=True)
  batch = next(pipeline.train_iterator(config, batch_size=4, seed=0, process_index=0, process_count=1,
                                       num_workers=0))
  assert set(batch) == {"inputs", "targets", "quality"}
  assert batch["inputs"].shape == (4, PATCH, PATCH, 5) and batch["inputs"].dtype == np.float32
  assert batch["targets"].shape == (4, PATCH, PATCH, 3) and batch["targets"].dtype == np.float32
  assert batch["quality"].shape == (4,) and batch["quality"].dtype == np.int32
  assert np.all((1 <= batch["quality"]) & (batch["quality"] <= 60))
  for key in ("inputs", "targets"):
    assert -1.0 <= batch[key].min() and batch[key].max() <= 1.0
  for example in range(4):
    _assert_is_jpeg_of_target(batch, example, config)


def _assert_is_jpeg_of_target(batch, example, config):
  """The input image is exactly Pillow's JPEG of the target patch at the reported quality, and the
  maps are that JPEG's tables tiled from the patch's pixel (0, 0), so they sit on its 8x8 grid."""
  clean = np.round(prepare.from_model_range(batch["targets"][example], config.value_range) * 255)
  data = jpeg.compress(clean.astype(np.uint8), int(batch["quality"][example]), config.subsampling)
  channels = clean.shape[-1]
  expected = prepare.to_model_range(jpeg.decode(data, "rgb" if channels == 3 else "grey"), config.value_range)
  np.testing.assert_allclose(batch["inputs"][example, ..., :channels], expected, atol=1e-6)
  if config.quantization_maps:
    tables = jpeg.quantization_tables(data)
    maps = batch["inputs"][example, ..., channels:]
    for channel in range(maps.shape[-1]):
      block = tables[channel] / 127.5 - 1.0
      np.testing.assert_allclose(maps[:8, :8, channel], block, atol=1e-6)
      np.testing.assert_allclose(maps[..., channel], np.tile(block, (PATCH // 8, PATCH // 8)), atol=1e-6)


def test_grey_batch_with_global_image_and_each_value_range(photo_folder, tmp_path):
  for value_range, bounds in [("zero_one", (0, 1)), ("zero_255", (0, 255))]:
    config = data_config(photo_folder, tmp_path, color="grey", quality_range=(10, 10), value_range=value_range,
                         quantization_maps=True, global_size=24)
    batch = next(pipeline.train_iterator(config, batch_size=3, seed=1, process_index=0, process_count=1,
                                         num_workers=0))
    assert batch["inputs"].shape == (3, PATCH, PATCH, 2)
    assert batch["targets"].shape == (3, PATCH, PATCH, 1)
    assert batch["global_inputs"].shape == (3, 24, 24, 1)
    for key in ("targets", "global_inputs"):
      assert bounds[0] <= batch[key].min() and batch[key].max() <= bounds[1]
    assert batch["targets"].max() > bounds[1] / 4  # really in this range, not [0, 1] by mistake
    np.testing.assert_array_equal(batch["quality"], 10)
    _assert_is_jpeg_of_target(batch, 0, config)


# Patches as training makes them (64x64 up to 112) and whole images at evaluation: shrinking (Gaussian
# anti-aliasing first), mixed, grey and RGB, and block counts with and without a remainder.
@pytest.mark.parametrize("shape", [(64, 64, 3), (64, 64, 1), (24, 40, 1), (40, 56, 3), (112, 112, 1),
                                   (300, 200, 3), (100, 130, 1), (17, 300, 1), (480, 320, 3)])
def test_global_image_is_skimages_bicubic_resize(shape):
  # values in 7-250, narrower than 0-255, so that skimage's clip to the input's range matters
  image = np.random.default_rng(sum(shape)).integers(7, 251, shape, dtype=np.uint8)
  for size, value_range in [(112, "minus_one_one"), (24, "zero_255")]:
    scale, offset = {"minus_one_one": (2.0, -1.0), "zero_255": (255.0, 0.0)}[value_range]
    expected = skimage.transform.resize(image, (size, size), order=3) * scale + offset
    got = prepare.global_image(image, size, value_range)
    assert got.dtype == np.float32 and got.shape == (size, size, shape[-1])
    np.testing.assert_allclose(got / scale, expected / scale, rtol=0, atol=5e-7, err_msg=f"size {size}")


def test_harder_degradations_run_and_differ(photo_folder, tmp_path):
  config = data_config(photo_folder, tmp_path, quality_range=(10, 10), double_quality_range=(85, 95),
                       rescale_choices=(0.9, 0.6), quantization_maps=True)
  batch = next(pipeline.train_iterator(config, batch_size=4, seed=0, process_index=0, process_count=1,
                                       num_workers=0))
  assert batch["inputs"].shape == (4, PATCH, PATCH, 5)
  assert np.all((85 <= batch["quality"]) & (batch["quality"] <= 95))
  double_errors, single_errors = [], []
  for example in range(4):
    clean = np.round(batch["targets"][example] * 255).astype(np.uint8)
    single = jpeg.decode(jpeg.compress(clean, int(batch["quality"][example])), "rgb") / 255.0
    double_errors.append(np.abs(batch["inputs"][example, ..., :3] - batch["targets"][example]).mean())
    single_errors.append(np.abs(single - batch["targets"][example]).mean())
  # The q10 first pass, on a shifted grid, leaves far more error than the q85-95 second pass alone
  # (summed over the batch: a nearly flat patch compresses almost losslessly either way).
  assert sum(double_errors) > 2 * sum(single_errors)


def test_bad_config_values_are_one_line_errors(photo_folder, tmp_path):
  for overrides, message in [({"quality_range": (0, 10)}, "quality_range"), ({"value_range": "0-1"}, "value_range"),
                             ({"rescale_choices": (1.5,)}, "rescale_choices")]:
    with pytest.raises(ValueError, match=message):
      pipeline.train_dataset(data_config(photo_folder, tmp_path, **overrides), batch_size=2, seed=0,
                             process_index=0, process_count=1)


def constant_folder(folder, count, size=16):
  """Images filled with 10 * i + 5, so a target patch says which image it came from."""
  folder.mkdir()
  for i in range(count):
    Image.fromarray(np.full((size, size), 10 * i + 5, np.uint8)).save(folder / f"{i:02d}.png")
  return folder


def _image_ids(batches):
  return [int(round(t.max())) // 10 for batch in batches for t in batch["targets"]]


def test_each_epoch_visits_every_image_once_and_processes_get_disjoint_shards(tmp_path):
  folder = constant_folder(tmp_path / "constant", 8)
  config = data_config(folder, tmp_path / "cache", color="grey", value_range="zero_255", patch_size=8)
  epoch = _image_ids(take(pipeline.train_iterator(config, batch_size=4, seed=3, process_index=0,
                                                  process_count=1, num_workers=0), 4))
  assert sorted(epoch[:8]) == list(range(8)) and sorted(epoch[8:]) == list(range(8))
  assert epoch[:8] != epoch[8:]  # reshuffled each epoch
  shards = [set(_image_ids(take(pipeline.train_iterator(config, batch_size=2, seed=3, process_index=p,
                                                        process_count=2, num_workers=0), 2)))
            for p in range(2)]
  assert shards == [{0, 2, 4, 6}, {1, 3, 5, 7}]


def test_batches_that_straddle_epochs_still_visit_every_image_once_per_epoch(tmp_path):
  folder = constant_folder(tmp_path / "five", 5)
  config = data_config(folder, tmp_path / "cache", color="grey", value_range="zero_255", patch_size=8)
  ids = _image_ids(take(pipeline.train_iterator(config, batch_size=3, seed=2, process_index=0,
                                                process_count=1, num_workers=0), 5))
  epochs = [ids[5 * e:5 * e + 5] for e in range(3)]
  assert all(sorted(epoch) == list(range(5)) for epoch in epochs)
  assert len({tuple(epoch) for epoch in epochs}) > 1  # a fresh order each epoch


def test_small_and_bad_images_are_skipped_and_reported(tmp_path, caplog):
  folder = constant_folder(tmp_path / "mixed", 3)
  Image.fromarray(np.zeros((8, 30), np.uint8)).save(folder / "thin.png")
  (folder / "broken.png").write_bytes(b"\x89PNG nothing")
  config = data_config(folder, tmp_path / "cache", color="grey", value_range="zero_255", patch_size=16)
  with caplog.at_level(logging.WARNING):
    batches = take(pipeline.train_iterator(config, batch_size=3, seed=0, process_index=0, process_count=1,
                                           num_workers=0), 2)
  assert set(_image_ids(batches)) == {0, 1, 2}
  assert "thin.png" in caplog.text and "broken.png" in caplog.text
  with pytest.raises(ValueError, match="usable images"):
    pipeline.train_dataset(config, batch_size=1, seed=0, process_index=0, process_count=4)


def test_restored_state_continues_with_the_next_batch(photo_folder, tmp_path):
  config = data_config(photo_folder, tmp_path, quality_range=(5, 50), quantization_maps=True)
  make = lambda: pipeline.train_iterator(config, batch_size=2, seed=7, process_index=0, process_count=1,
                                         num_workers=0)
  iterator = make()
  take(iterator, 5)  # past the end of the first epoch (6 images = 3 batches)
  state = iterator.get_state()
  expected = take(iterator, 3)
  resumed = make()
  resumed.set_state(state)
  assert_same_batches(take(resumed, 3), expected)


def test_workers_are_processes_and_give_the_same_batches_and_state(photo_folder, tmp_path):
  config = data_config(photo_folder, tmp_path, quality_range=(5, 50), quantization_maps=True,
                       prefetch_buffer_size=1)
  make = lambda workers: pipeline.train_iterator(config, batch_size=2, seed=11, process_index=0,
                                                 process_count=1, num_workers=workers)
  in_process = take(make(0), 6)
  before = {child.pid for child in multiprocessing.active_children()}
  with_workers = make(2)
  assert_same_batches(take(with_workers, 4), in_process[:4])
  workers = {child.pid for child in multiprocessing.active_children()} - before
  assert len(workers) == 2 and os.getpid() not in workers
  state = with_workers.get_state()
  with_workers.close()
  resumed = make(2)
  resumed.set_state(state)
  assert_same_batches(take(resumed, 2), in_process[4:])
  resumed.close()


def test_iterator_state_round_trips_through_an_orbax_checkpoint(photo_folder, tmp_path):
  import grain  # pylint: disable=import-outside-toplevel
  import orbax.checkpoint as ocp  # pylint: disable=import-outside-toplevel  (slow import, this test only)
  config = data_config(photo_folder, tmp_path / "cache", quality_range=(5, 50))
  make = lambda: pipeline.train_iterator(config, batch_size=2, seed=5, process_index=0, process_count=1,
                                         num_workers=0)
  iterator = make()
  take(iterator, 4)
  manager = ocp.CheckpointManager(tmp_path / "checkpoints", item_names=("data",),
                                  item_handlers={"data": grain.checkpoint.CheckpointHandler()})
  manager.save(4, args=ocp.args.Composite(data=grain.checkpoint.CheckpointSave(iterator)))
  manager.wait_until_finished()
  expected = take(iterator, 2)
  resumed = make()
  manager.restore(4, args=ocp.args.Composite(data=grain.checkpoint.CheckpointRestore(resumed)))
  assert_same_batches(take(resumed, 2), expected)
