"""JPEG degradation: tables read back from the bytes, quantization maps, decoding."""

import io

import numpy as np
import pytest
import skimage.data
from PIL import Image

from jaxcar.data import jpeg, sources

# ITU-T T.81 Annex K, tables K.1 (luminance) and K.2 (chrominance), natural order.
ANNEX_K_LUMA = np.array([
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
    14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99]).reshape(8, 8)
ANNEX_K_CHROMA = np.full((8, 8), 99)
ANNEX_K_CHROMA[:4, :4] = [[17, 18, 24, 47], [18, 21, 26, 66], [24, 26, 56, 99], [47, 66, 99, 99]]


def ijg_table(base: np.ndarray, quality: int) -> np.ndarray:
  """IJG jpeg_quality_scaling + jpeg_add_quant_table with force_baseline (what Pillow calls)."""
  scale = 5000 // quality if quality < 50 else 200 - 2 * quality
  return np.clip((base * scale + 50) // 100, 1, 255)


def textured(height=16, width=16, channels=3, seed=0):
  return np.random.default_rng(seed).integers(0, 256, (height, width, channels), dtype=np.uint8)


def test_tables_read_back_equal_annex_k_for_every_quality():
  image, grey = textured(), textured(channels=1)
  for quality in range(1, 101):
    tables = jpeg.quantization_tables(jpeg.compress(image, quality))
    assert tables.shape == (2, 8, 8)
    np.testing.assert_array_equal(tables[0], ijg_table(ANNEX_K_LUMA, quality), err_msg=f"q={quality}")
    np.testing.assert_array_equal(tables[1], ijg_table(ANNEX_K_CHROMA, quality), err_msg=f"q={quality}")
    grey_tables = jpeg.quantization_tables(jpeg.compress(grey, quality))
    np.testing.assert_array_equal(grey_tables, ijg_table(ANNEX_K_LUMA, quality)[None])


def _with_dqt(data: bytes, segment_payload: bytes) -> bytes:
  """The JPEG with its DQT markers replaced by one marker holding `segment_payload`."""
  out, position, inserted = bytearray(data[:2]), 2, False
  while True:
    marker, length = data[position + 1], int.from_bytes(data[position + 2:position + 4], "big")
    if marker == 0xDB:
      if not inserted:
        out += b"\xff\xdb" + (len(segment_payload) + 2).to_bytes(2, "big") + segment_payload
        inserted = True
    else:
      out += data[position:position + 2 + length]
    position += 2 + length
    if marker == 0xDA:
      return bytes(out + data[position:])


def _payload(tables, precision):
  payload = b""
  for table_id, table in enumerate(tables):
    zigzag = table.reshape(-1)[jpeg.ZIGZAG]
    payload += bytes([precision << 4 | table_id]) + zigzag.astype(">u2" if precision else np.uint8).tobytes()
  return payload


@pytest.mark.parametrize("precision", [0, 1])
def test_tables_in_one_marker_and_16_bit_precision(precision):
  data = jpeg.compress(textured(), 50)
  wanted = np.stack([np.arange(1, 65).reshape(8, 8) * 3, np.arange(64, 0, -1).reshape(8, 8) + 1])
  rewritten = _with_dqt(data, _payload(wanted, precision))
  np.testing.assert_array_equal(jpeg.quantization_tables(rewritten), wanted)
  with Image.open(io.BytesIO(rewritten)) as image:  # Pillow's own parser agrees (it reports natural order)
    for table_id in range(2):
      np.testing.assert_array_equal(np.reshape(image.quantization[table_id], (8, 8)), wanted[table_id])


def test_bad_bytes_give_one_line_errors():
  with pytest.raises(ValueError, match="not a JPEG"):
    jpeg.quantization_tables(b"\x89PNG\r\n")
  data = jpeg.compress(textured(), 50)
  with pytest.raises(ValueError, match="DQT"):
    jpeg.quantization_tables(_with_dqt(data, bytes([0]) + bytes(20)))
  with pytest.raises(ValueError, match="quality"):
    jpeg.compress(textured(), 0)
  with pytest.raises(ValueError, match="subsampling"):
    jpeg.compress(textured(), 50, "4:1:1")


def test_maps_tile_tables_from_the_origin_with_qcn_normalisation():
  tables = jpeg.quantization_tables(jpeg.compress(textured(), 20))
  for height, width in [(20, 27), (64, 64), (300, 301)]:  # partial blocks; a size past the cache
    maps = jpeg.quantization_maps(tables, height, width, 3)
    assert maps.shape == (height, width, 2) and maps.dtype == np.float32
    rows, cols = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    for channel in range(2):
      expected = tables[channel][rows % 8, cols % 8] / 127.5 - 1.0
      np.testing.assert_allclose(maps[..., channel], expected, rtol=0, atol=1e-6)
  grey = jpeg.quantization_maps(tables[:1], 16, 16, 1)
  assert grey.shape == (16, 16, 1)
  assert jpeg.quantization_maps(tables[:1], 8, 8, 3).shape == (8, 8, 2)  # grey file, colour model
  with pytest.raises(ValueError, match="channels"):
    jpeg.quantization_maps(tables, 8, 8, 2)


def test_maps_change_with_quality():
  low, high = (jpeg.quantization_maps(jpeg.quantization_tables(jpeg.compress(textured(), q)), 8, 8, 3)
               for q in (5, 90))
  assert low.mean() > high.mean() + 0.5


@pytest.mark.parametrize("channels,subsampling", [(3, "4:2:0"), (3, "4:4:4"), (1, "4:2:0")])
def test_decode_round_trip(channels, subsampling):
  photo = skimage.data.astronaut()[200:224, 200:240]
  image = photo if channels == 3 else photo[..., 1:2].copy()
  data = jpeg.compress(image, 75, subsampling)
  color = "rgb" if channels == 3 else "grey"
  decoded = jpeg.decode(data, color)
  assert decoded.shape == image.shape and decoded.dtype == np.uint8
  np.testing.assert_array_equal(jpeg.decode_known(data, image.shape), decoded)
  assert 0 < np.abs(decoded.astype(int) - image).mean() < 8  # lossy, but the same picture
  with Image.open(io.BytesIO(data)) as pil:
    assert pil.layers == channels
  if channels == 3:  # a colour JPEG for a grey model: the same luma as training uses
    np.testing.assert_array_equal(jpeg.decode(data, "grey"), sources.rgb_to_luma(decoded))
  else:
    np.testing.assert_array_equal(jpeg.decode(data, "rgb"), np.repeat(decoded, 3, axis=-1))


def test_subsampling_is_applied():
  image = textured(32, 32)
  sizes = {mode: len(jpeg.compress(image, 90, mode)) for mode in jpeg.SUBSAMPLINGS}
  assert sizes["4:4:4"] > sizes["4:2:0"]


@pytest.mark.shared
def test_tables_of_real_world_jpegs_match_pillows_parser(shared):
  files = sorted((shared / "data" / "eval" / "real_jpeg").glob("*.jpg"))
  assert files, "no real_jpeg files in the shared folder"
  for path in files:
    data = path.read_bytes()
    tables = jpeg.quantization_tables(data)
    with Image.open(path) as image:
      assert sorted(image.quantization) == list(range(len(tables)))
      for table_id, values in image.quantization.items():
        np.testing.assert_array_equal(np.reshape(values, (8, 8)), tables[table_id], err_msg=path.name)
      assert jpeg.decode(data, "rgb").shape == (image.height, image.width, 3)


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("subsampling", jpeg.SUBSAMPLINGS)
def test_encode_writes_the_bytes_pillows_save_writes(channels, subsampling):
  photo = skimage.data.astronaut()[100:180, 150:262]  # 80 x 112, not a multiple of 16 wide
  image = photo if channels == 3 else sources.rgb_to_luma(photo)
  pil = Image.fromarray(image[..., 0] if channels == 1 else image)
  for quality in (1, 10, 50, 95, 100):
    saved = io.BytesIO()
    pil.save(saved, format="JPEG", quality=quality, subsampling=subsampling)
    assert jpeg.encode(pil, quality, subsampling) == saved.getvalue(), quality
    assert jpeg.compress(image, quality, subsampling) == saved.getvalue(), quality


def test_batch_maps_equal_each_examples_maps():
  tables = np.stack([jpeg.quantization_tables(jpeg.compress(skimage.data.astronaut()[:16, :16], q))
                     for q in (5, 50, 90)])
  batch = jpeg.batch_quantization_maps(tables, 20, 12, 3)
  assert batch.shape == (3, 20, 12, 2) and batch.dtype == np.float32
  for example, maps in zip(tables, batch):
    np.testing.assert_allclose(maps[:8, :8], np.stack([example[0], example[1]], -1) / 127.5 - 1, atol=1e-6)
    np.testing.assert_array_equal(maps, np.tile(maps[:8, :8], (3, 2, 1))[:20, :12])
