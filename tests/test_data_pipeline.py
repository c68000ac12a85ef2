"""The Grain training pipeline: shapes, ranges, the degradation, determinism, resume, workers, sharding,
and the device-side conversion of the workers' uint8 batches (bit for bit the host's float inputs)."""

import logging
import multiprocessing
import os

import jax
import numpy as np
import pytest
import skimage.data
import skimage.transform
from PIL import Image

from jaxcar import cli
from jaxcar.configs import base
from jaxcar.data import jpeg, pipeline, prepare, transforms
from jaxcar.training import steps

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


def model_values(batch, config) -> dict:
  """A shipped batch as the train step sees it: model-range float inputs and targets (numpy)."""
  converted = steps.model_batch(batch, config.value_range, config.global_size)
  return {**{key: np.asarray(value) for key, value in converted.items()}, "quality": batch["quality"]}


def assert_same_batches(first, second):
  assert len(first) == len(second)
  for a, b in zip(first, second):
    assert a.keys() == b.keys()
    for key in a:
      np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_rgb_qcn_batch_shapes_ranges_and_maps(photo_folder, tmp_path):
  config = data_config(photo_folder, tmp_path, quality_range=(1, 60), value_range="minus_one_one",
                       quantization_maps=True)
  shipped = next(pipeline.train_iterator(config, batch_size=4, seed=0, process_index=0, process_count=1,
                                         num_workers=0))
  assert set(shipped) == {"inputs", "targets", "maps", "quality"}
  for key in ("inputs", "targets"):  # uint8 from the workers, converted on the device
    assert shipped[key].shape == (4, PATCH, PATCH, 3) and shipped[key].dtype == np.uint8
  assert shipped["maps"].shape == (4, 8, 8, 2) and shipped["maps"].dtype == np.float32
  batch = model_values(shipped, config)
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
    batch = model_values(next(pipeline.train_iterator(config, batch_size=3, seed=1, process_index=0,
                                                      process_count=1, num_workers=0)), config)
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


# The configs of a colour QCN (maps, [-1, 1]), a grey network without maps ([0, 1]) and QGCN (grey, maps,
# the 112x112 global image), at their patch sizes.
@pytest.mark.parametrize("name", ["qcn", "dacar4:small", "qgcn"])
def test_device_inputs_equal_the_host_float_inputs(name):
  """The workers ship uint8 images and one period of the maps; the jitted, sharded conversion gives
  exactly (bit for bit) the float32 arrays the host path (`prepare.batch_model_inputs`, which
  evaluation uses) makes from the same patches; QGCN's global image within float32 rounding."""
  config = cli.load_config(name).data
  config.quality_range = (1, 60)
  settings = transforms.PairSettings.from_config(config)
  astronaut = skimage.data.astronaut()
  photos = [astronaut[100 * i:100 * i + 96, 90 * i:90 * i + 120] for i in range(4)]
  if config.color == "grey":
    photos = [np.asarray(Image.fromarray(photo).convert("L"))[..., None] for photo in photos]
  rng = np.random.default_rng(0)
  patches = [transforms.degrade_patch(photos[i % len(photos)], settings, rng) for i in range(16)]
  host = prepare.batch_model_inputs(np.stack([p["degraded"] for p in patches]),
                                    np.stack([p["tables"] for p in patches]), settings)
  host["targets"] = prepare.to_model_range(np.stack([p["clean"] for p in patches]), settings.value_range)

  shipped = transforms.to_model_batch(patches, settings)
  assert shipped["inputs"].dtype == shipped["targets"].dtype == np.uint8
  assert "global_inputs" not in shipped  # made on the device
  mesh = steps.make_mesh()
  convert = jax.jit(lambda batch: steps.model_batch(batch, settings.value_range, settings.global_size),
                    in_shardings=steps.batch_sharded(mesh))
  device = convert(steps.global_batch(shipped, mesh))
  assert device.keys() == host.keys()
  for key, expected in host.items():
    assert device[key].dtype == expected.dtype == np.float32
    if key == "global_inputs":
      # The device's matrix products sum in another order than the host BLAS's: not bit for bit, but
      # within the tolerance pinned against skimage (test_global_image_is_skimages_bicubic_resize).
      np.testing.assert_allclose(np.asarray(device[key]), expected, atol=5e-7, rtol=0, err_msg=f"{name} {key}")
    else:
      np.testing.assert_array_equal(np.asarray(device[key]), expected, err_msg=f"{name} {key}")


@pytest.mark.parametrize("value_range", prepare.VALUE_RANGES)
def test_device_conversion_is_exact_for_every_uint8_value_and_any_table(value_range):
  """Every uint8 value, and maps from 8- and 16-bit tables tiled over sizes that are not multiples of 8."""
  rng = np.random.default_rng(1)
  images = rng.permutation(np.tile(np.arange(256, dtype=np.uint8), 2 * 20 * 21 * 3 // 256 + 1))
  images = images[:2 * 20 * 21 * 3].reshape(2, 20, 21, 3)
  images[0, :16, :16, 0] = np.arange(256, dtype=np.uint8).reshape(16, 16)  # each value surely present
  tables = rng.integers(1, 65536, (2, 2, 8, 8)).astype(np.int32)
  tables[0, 0, 0, :3] = (1, 255, 65535)
  config = base.get_config().data
  config.value_range, config.quantization_maps = value_range, True
  host = prepare.batch_model_inputs(images, tables, config)
  shipped = {"inputs": images, "targets": images[::-1].copy(),
             "maps": jpeg.batch_quantization_maps(tables, 8, 8, 3)}
  device = jax.jit(lambda batch: steps.model_batch(batch, value_range))(shipped)
  np.testing.assert_array_equal(np.asarray(device["inputs"]), host["inputs"])
  np.testing.assert_array_equal(np.asarray(device["targets"]), prepare.to_model_range(images[::-1], value_range))


def test_files_with_one_two_or_three_tables_share_a_batch():
  """Real JPEGs (pairs) bring 1-3 tables; each patch's maps are still the host's maps of its own tables."""
  rng = np.random.default_rng(2)
  config = base.get_config().data
  config.update(value_range="minus_one_one", quantization_maps=True, patch_size=PATCH)
  settings = transforms.PairSettings.from_config(config)
  patches = [{"degraded": rng.integers(0, 256, (PATCH, PATCH, 3), dtype=np.uint8),
              "clean": rng.integers(0, 256, (PATCH, PATCH, 3), dtype=np.uint8),
              "tables": rng.integers(1, 300, (count, 8, 8)), "quality": 0} for count in (1, 2, 3)]
  device = steps.model_batch(transforms.to_model_batch(patches, settings), config.value_range)
  for example, patch in zip(np.asarray(device["inputs"]), patches):
    expected = prepare.model_inputs(patch["degraded"], patch["tables"], config)["inputs"]
    np.testing.assert_array_equal(example, expected)


def test_the_train_step_takes_uint8_batches_as_the_host_floats(photo_folder, tmp_path):
  """One jitted, sharded train step on a shipped uint8 batch and on the host's float batch: the same
  loss and parameters, bit for bit."""
  from jaxcar.training import losses, optim  # pylint: disable=import-outside-toplevel
  from jaxcar import models  # pylint: disable=import-outside-toplevel
  config = cli.load_config("dacar4:small")
  config.data.update(source=str(photo_folder), cache_dir=str(tmp_path), patch_size=PATCH)
  shipped = next(pipeline.train_iterator(config.data, batch_size=8, seed=0, process_index=0, process_count=1,
                                         num_workers=0))
  floats = model_values(shipped, config.data)
  mesh = steps.make_mesh()
  model = models.create("dacar4")
  tx = optim.optimizer(config.optimizer, 2)
  params = models.init(model, jax.random.PRNGKey(0), PATCH, PATCH)["params"]
  step = steps.make_train_step(model, tx, losses.mse, mesh, value_range=config.data.value_range)
  results = []
  for batch in (shipped, {key: floats[key] for key in ("inputs", "targets")}):
    state = steps.global_replicated(steps.init_state(params, tx, 0, 0.0), mesh)
    state, metrics = step(state, steps.global_batch(batch, mesh))
    results.append((float(metrics["loss"]), [np.asarray(x) for x in jax.tree.leaves(state.params)]))
  assert results[0][0] == results[1][0]
  for uint8_leaf, float_leaf in zip(results[0][1], results[1][1]):
    np.testing.assert_array_equal(uint8_leaf, float_leaf)


def test_harder_degradations_run_and_differ(photo_folder, tmp_path):
  config = data_config(photo_folder, tmp_path, quality_range=(10, 10), double_quality_range=(85, 95),
                       rescale_choices=(0.9, 0.6), quantization_maps=True)
  batch = model_values(next(pipeline.train_iterator(config, batch_size=4, seed=0, process_index=0,
                                                    process_count=1, num_workers=0)), config)
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
  # Shards are cut from the sorted paths before decoding: process 4 of 5 holds only thin.png.
  with pytest.raises(ValueError, match="usable images"):
    pipeline.train_dataset(config, batch_size=1, seed=0, process_index=4, process_count=5)


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
