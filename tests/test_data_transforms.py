"""Per-example transforms: crops, the 8 dihedral transforms, rescale, double compression."""

import numpy as np
import pytest
from PIL import Image

from jaxcar.data import jpeg, transforms

def _numpy_dihedral(image, which):
  """An independent reference: `which` % 4 quarter turns counter-clockwise, mirrored left-right if >= 4."""
  turned = np.rot90(image, which % 4)
  return turned[:, ::-1] if which >= 4 else turned


@pytest.mark.parametrize("channels", [1, 3])
def test_dihedral_gives_the_eight_distinct_symmetries_of_the_square(channels):
  image = np.random.default_rng(0).integers(0, 256, (8, 8, channels), dtype=np.uint8)
  pil = Image.fromarray(image[..., 0] if channels == 1 else image)
  results = [np.asarray(transforms.dihedral(pil, which)).reshape(8, 8, channels) for which in range(8)]
  assert len({r.tobytes() for r in results}) == 8
  for which in range(8):
    np.testing.assert_array_equal(results[which], _numpy_dihedral(image, which), err_msg=f"which={which}")


def test_crop_stays_inside_and_covers_the_image():
  ramp = np.arange(40 * 56, dtype=np.int64).reshape(40, 56, 1)
  rng = np.random.default_rng(0)
  corners = set()
  for _ in range(300):
    patch = transforms.random_crop(ramp, 16, (), rng)
    assert patch.shape == (16, 16, 1)
    corners.add(divmod(int(patch[0, 0, 0]), 56))
  rows, cols = zip(*corners)
  assert min(rows) == 0 and max(rows) == 40 - 16 and min(cols) == 0 and max(cols) == 56 - 16


def test_rescale_happens_half_the_time_at_the_chosen_scale():
  ramp = np.tile(np.arange(0, 240, 2, dtype=np.uint8), (120, 1))[..., None]  # +2 per pixel, left to right
  rng = np.random.default_rng(1)
  steps = []
  for _ in range(200):
    patch = transforms.random_crop(ramp, 16, (0.5,), rng)
    assert patch.shape == (16, 16, 1) and patch.dtype == np.uint8
    steps.append(np.median(np.diff(patch[8, :, 0].astype(int))))
  steps = np.array(steps)
  assert set(np.unique(steps)) <= {2, 4}  # unscaled, or shrunk by 2 so the ramp climbs twice as fast
  assert 0.35 < np.mean(steps == 4) < 0.65


def test_rescale_is_skipped_when_the_image_is_too_small():
  image = np.zeros((20, 20, 3), np.uint8)
  assert transforms.random_crop(image, 16, (0.5,), np.random.default_rng(0)).shape == (16, 16, 3)


def _settings(**overrides):
  return transforms.PairSettings(**{"patch_size": 16, "quality_range": (10, 10), **overrides})


@pytest.mark.parametrize("channels,dihedral", [(3, True), (1, True), (3, False)])
def test_degrade_patch_is_the_jpeg_of_a_transformed_crop(channels, dihedral):
  image = np.random.default_rng(2).integers(0, 256, (40, 40, channels), dtype=np.uint8)
  settings = _settings(quality_range=(30, 40), dihedral=dihedral)
  rng = np.random.default_rng(3)
  crops = {_numpy_dihedral(image[top:top + 16, left:left + 16], which).tobytes()
           for top in range(25) for left in range(25) for which in (range(8) if dihedral else [0])}
  for _ in range(10):
    example = transforms.degrade_patch(image, settings, rng)
    assert example["clean"].shape == example["degraded"].shape == (16, 16, channels)
    assert example["clean"].tobytes() in crops
    assert 30 <= example["quality"] <= 40
    data = jpeg.compress(example["clean"], int(example["quality"]))
    np.testing.assert_array_equal(example["degraded"], jpeg.decode(data, "rgb" if channels == 3 else "grey"))
    np.testing.assert_array_equal(example["tables"], jpeg.quantization_tables(data))


def test_double_compression_shifts_the_grid_of_the_first_pass():
  smooth = np.tile(np.linspace(0, 255, 48, dtype=np.uint8), (48, 1))
  image = np.stack([smooth, smooth.T, 255 - smooth], axis=-1)
  settings = _settings(quality_range=(5, 5), double_quality_range=(95, 95))
  shifts = set()
  for seed in range(40):
    rng = np.random.default_rng(seed)
    clean, quality, data = transforms.double_compress(image[:24, :24].copy(), 5, settings, rng)
    assert clean.shape == (16, 16, 3) and quality == 95
    once = jpeg.decode(jpeg.compress(image[:24, :24].copy(), 5), "rgb")
    # find the shift: the window of the first pass that the second pass reproduces best
    errors = {(dy, dx): np.abs(jpeg.decode(data, "rgb").astype(int) - once[dy:dy + 16, dx:dx + 16]).mean()
              for dy in range(8) for dx in range(8)}
    shift = min(errors, key=errors.get)
    np.testing.assert_array_equal(clean, image[shift[0]:shift[0] + 16, shift[1]:shift[1] + 16])
    shifts.add(shift)
  assert (0, 0) not in shifts and len(shifts) > 20


@pytest.mark.parametrize("field,value", [("quality_range", (50, 10)), ("double_quality_range", (1, 101)),
                                         ("patch_size", 4), ("subsampling", "4:1:1")])
def test_settings_reject_bad_values(field, value):
  with pytest.raises(ValueError, match=field):
    _settings(**{field: value}).check()
