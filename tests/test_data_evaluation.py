"""Evaluation data: whole images padded to the network's multiple, and cropped back."""

import numpy as np
import pytest
import skimage.data
import skimage.transform
from PIL import Image

from configs import base
from jaxcar.data import evaluation, jpeg, prepare


def test_pad_repeats_the_bottom_right_edge_and_crop_undoes_it():
  image = np.arange(5 * 6 * 1, dtype=np.uint8).reshape(5, 6, 1)
  padded, original_hw = evaluation.pad_to_multiple(image, 8)
  assert padded.shape == (8, 8, 1) and original_hw == (5, 6)
  np.testing.assert_array_equal(padded[:5, :6], image)
  np.testing.assert_array_equal(padded[5:, :6], np.repeat(image[-1:], 3, axis=0))
  np.testing.assert_array_equal(padded[:5, 6:], np.repeat(image[:, -1:], 2, axis=1))
  np.testing.assert_array_equal(evaluation.crop(padded, original_hw), image)
  np.testing.assert_array_equal(evaluation.crop(padded[None], original_hw), image[None])
  aligned, hw = evaluation.pad_to_multiple(padded, 8)
  assert aligned.shape == padded.shape and hw == (8, 8)


def test_examples_are_whole_padded_images_compressed_on_the_grid(tmp_path):
  photo = skimage.data.astronaut()
  Image.fromarray(photo[:37, :50]).save(tmp_path / "a.png")
  Image.fromarray(photo[100:140, 100:141]).save(tmp_path / "b.bmp")
  (tmp_path / "c.png").write_bytes(b"not a png")
  config = base.get_config().data
  config.update(value_range="minus_one_one", quantization_maps=True, global_size=16)
  examples = list(evaluation.evaluation_examples(tmp_path, config, quality=20, multiple=16))
  assert [e["original_hw"] for e in examples] == [(37, 50), (40, 41)]
  first = examples[0]
  assert first["inputs"].shape == (1, 48, 64, 5) and first["global_inputs"].shape == (1, 16, 16, 3)
  np.testing.assert_array_equal(evaluation.crop(first["clean"], first["original_hw"]), photo[:37, :50])
  data = jpeg.compress(first["clean"], 20)
  np.testing.assert_array_equal(first["jpeg"], jpeg.decode(data, "rgb"))
  expected = prepare.model_inputs(first["jpeg"], jpeg.quantization_tables(data), config)["inputs"]
  np.testing.assert_allclose(first["inputs"][0], expected, atol=0)
  np.testing.assert_allclose(prepare.from_model_range(first["targets"][0], "minus_one_one") * 255,
                             first["clean"], atol=1e-3)


@pytest.mark.parametrize("value_range", ["zero_one", "minus_one_one", "zero_255"])
def test_value_ranges_round_trip(value_range):
  pixels = np.arange(256, dtype=np.uint8)
  model = prepare.to_model_range(pixels, value_range)
  low, high = {"zero_one": (0, 1), "minus_one_one": (-1, 1), "zero_255": (0, 255)}[value_range]
  assert model.dtype == np.float32 and model[0] == low and model[-1] == pytest.approx(high)
  np.testing.assert_allclose(prepare.from_model_range(model, value_range) * 255, pixels, atol=1e-4)


@pytest.mark.parametrize("shape", [(64, 64, 3), (64, 64, 1), (40, 56, 3), (112, 112, 1), (300, 200, 3),
                                   (100, 130, 1)])
def test_global_image_is_skimages_bicubic_resize(shape):
  image = np.random.default_rng(sum(shape)).integers(0, 256, shape, dtype=np.uint8)
  expected = skimage.transform.resize(image, (112, 112), order=3) * 2.0 - 1.0
  np.testing.assert_allclose(prepare.global_image(image, 112, "minus_one_one"), expected, rtol=0, atol=1e-6)
