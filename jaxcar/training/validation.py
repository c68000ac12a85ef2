"""Periodic validation during training: whole held-out images, JPEG-compressed, restored, scored.

The protocol is the reference one (BUILD_NOTES.md, Released weights): Pillow JPEG at `validation_quality`,
output clipped to [0, 1], x255, rounded to uint8, PSNR over all pixels and channels, no border crop.
Images are edge-padded bottom/right only as far as the network needs (QCN/QGCN: even sizes), as
`jaxcar.evaluate --bucket=0` does, and cropped back: padding further (to 64, to compile fewer shapes;
or to 8) moved a half-trained DACAR3's LIVE1 PSNR by +0.04 / +0.03 dB, so validation keeps the exact
protocol at the cost of one compile per image size.
"""

import dataclasses

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from jaxcar import metrics, predict
from jaxcar.data import jpeg, pairs, prepare, sources



@dataclasses.dataclass
class Example:
  name: str
  clean: np.ndarray      # uint8 (H, W, C)
  compressed: np.ndarray  # uint8 (H, W, C), the decoded JPEG
  inputs: dict           # model inputs, padded: {"inputs": (1, H', W', C_in)[, "global_inputs": ...]}


def load(data_config, size_multiple: int = 1) -> list[Example]:
  """The validation images of `data_config.validation` (a source, see `sources.list_images`), padded
  to a multiple of `size_multiple`."""
  _, paths = sources.training_and_validation(data_config.source, data_config.validation)
  return [_example(p, data_config, size_multiple) for p in paths]


def _example(path: str, data_config, size_multiple: int) -> Example:
  if pairs.is_pair(path):  # a real JPEG and its original: its own degradation and tables
    clean, compressed, tables = pairs.validation_example(path, data_config.color)
  else:
    clean = sources.load_image(path, data_config.color)
    encoded = jpeg.compress(clean, data_config.validation_quality, data_config.subsampling)
    compressed, tables = jpeg.decode(encoded, data_config.color), jpeg.quantization_tables(encoded)
  height, width = (predict.round_up(s, size_multiple) for s in compressed.shape[:2])
  padded = predict.pad_bottom_right(compressed, height, width)
  inputs = prepare.model_inputs(padded, tables, data_config)
  if data_config.global_size > 0:  # QGCN's global view is of the real image, not the padding
    inputs["global_inputs"] = prepare.global_image(compressed, data_config.global_size, data_config.value_range)
  batched = {k: v[None] for k, v in inputs.items()}
  return Example(pairs.name(path) if pairs.is_pair(path) else path.rsplit("/", 1)[-1], clean, compressed, batched)


def evaluate(forward, examples: list[Example], value_range: str) -> tuple[dict, list[np.ndarray]]:
  """Mean PSNR of `forward(inputs_dict) -> (1, H', W', C)` and of the JPEG itself; the restored images."""
  restored_images, scores, baselines = [], [], []
  for example in examples:
    height, width = example.clean.shape[:2]
    restored = prepare.to_uint8(np.asarray(forward(example.inputs))[0, :height, :width], value_range)
    restored_images.append(restored)
    scores.append(metrics.psnr(example.clean, restored))
    baselines.append(metrics.psnr(example.clean, example.compressed))
  return {"psnr": float(np.mean(scores)), "psnr_jpeg": float(np.mean(baselines))}, restored_images


CAPTION_HEIGHT = 26  # two lines of Pillow's default font above the panels


def sample_grid(example: Example, restored: np.ndarray, max_side: int = 256) -> np.ndarray:
  """JPEG | restored | clean side by side, a centre crop of at most max_side, uint8 RGB, each panel
  captioned with its name and its whole-image PSNR, so a reader of the samples sees which is which."""
  height, width = example.clean.shape[:2]
  top, left = max(0, (height - max_side) // 2), max(0, (width - max_side) // 2)
  crop = lambda image: image[top:top + max_side, left:left + max_side]
  row = np.concatenate([crop(example.compressed), crop(restored), crop(example.clean)], axis=1)
  row = np.repeat(row, 3, axis=-1) if row.shape[-1] == 1 else row
  jpeg_psnr, restored_psnr = metrics.psnr(example.clean, example.compressed), metrics.psnr(example.clean, restored)
  captions = [f"JPEG\n{jpeg_psnr:.2f} dB", f"restored\n{restored_psnr:.2f} dB ({restored_psnr - jpeg_psnr:+.2f})",
              "clean\n(the reference)"]
  return _captioned(row, captions)


def _captioned(row: np.ndarray, captions: list[str]) -> np.ndarray:
  """`row` (equal-width panels side by side) under a white strip with each panel's caption."""
  canvas = Image.new("RGB", (row.shape[1], row.shape[0] + CAPTION_HEIGHT), "white")
  canvas.paste(Image.fromarray(row), (0, CAPTION_HEIGHT))
  draw, font = ImageDraw.Draw(canvas), ImageFont.load_default()
  panel_width = row.shape[1] // len(captions)
  for index, caption in enumerate(captions):
    draw.multiline_text((index * panel_width + 3, 1), caption, fill="black", font=font, spacing=1)
  return np.asarray(canvas)


def save_png(image: np.ndarray, path):
  with open(path, "wb") as f:
    Image.fromarray(image).save(f, format="PNG")
