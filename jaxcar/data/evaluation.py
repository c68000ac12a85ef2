"""Evaluation data: whole images, edge-padded to the network's multiple, with the padding recorded.

As QCN's evaluation does: the ground truth is padded on the bottom/right by repeating its edge, then
compressed, so the JPEG grid starts at pixel (0, 0); outputs are cropped back to the original size
before any metric.
"""

from collections.abc import Iterator

import numpy as np

from jaxcar.data import jpeg, prepare, sources


def pad_to_multiple(image: np.ndarray, multiple: int) -> tuple[np.ndarray, tuple[int, int]]:
  """(H, W, C) -> (image edge-padded on bottom/right to multiples of `multiple`, (H, W))."""
  height, width = image.shape[:2]
  pad = ((0, -height % multiple), (0, -width % multiple)) + ((0, 0),) * (image.ndim - 2)
  return np.pad(image, pad, mode="edge"), (height, width)


def crop(image: np.ndarray, original_hw: tuple[int, int]) -> np.ndarray:
  """Undoes pad_to_multiple: the top-left original_hw of an (H, W, ...) or (N, H, W, ...) array."""
  height, width = original_hw
  return image[..., :height, :width, :] if image.ndim == 4 else image[:height, :width]


def evaluation_examples(source, data_config, quality: int, multiple: int = 8) -> Iterator[dict]:
  """One dict per readable image of `source` (unreadable ones are skipped and reported once).

  Keys: "path", "original_hw", "clean" and "jpeg" (uint8, padded), "inputs" (1, H, W, C_in) and
  "global_inputs" (1, G, G, C) as model_inputs makes them, "targets" (1, H, W, C) in the value range.
  """
  grid_multiple = int(np.lcm(multiple, 8))  # keep the JPEG grid whole, like the paper's evaluation
  skipped = {}
  for path in sources.list_images(source):
    try:
      clean = sources.load_image(path, data_config.color)
    except sources.ImageError as error:
      skipped[path] = str(error)
      continue
    padded, original_hw = pad_to_multiple(clean, grid_multiple)
    data = jpeg.compress(padded, quality, data_config.subsampling)
    degraded = jpeg.decode(data, data_config.color)
    example = prepare.model_inputs(degraded, jpeg.quantization_tables(data), data_config)
    example = {key: value[None] for key, value in example.items()}
    example["targets"] = prepare.to_model_range(padded, data_config.value_range)[None]
    yield {**example, "path": path, "original_hw": original_hw, "clean": padded, "jpeg": degraded}
  sources.report_skipped(skipped, f"evaluation source {source}")
