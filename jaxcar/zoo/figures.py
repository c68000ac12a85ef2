"""`python -m jaxcar.zoo.figures --output_dir=docs`: side-by-side crops of the shipped models' work.

For each alias (`color`, `grey`) one PNG: a row per (photo, quality) of JPEG | restored | clean crops,
each labelled with its PSNR over the whole image. The photos are the two embedded ones no model
trained on (`embedded:validation`).
"""

from pathlib import Path

from absl import flags
import numpy as np
from PIL import Image, ImageDraw

from jaxcar import cli, evaluate, loading, zoo
from jaxcar.data import sources

FLAGS = flags.FLAGS

LABEL_HEIGHT = 22


def labelled(crop: np.ndarray, label: str, scale: int = 2) -> Image.Image:
  """A crop enlarged `scale` times with nearest neighbours (so artifacts stay visible), a label above."""
  image = Image.fromarray(crop[..., 0] if crop.shape[-1] == 1 else crop).convert("RGB")
  image = image.resize((image.width * scale, image.height * scale), Image.Resampling.NEAREST)
  canvas = Image.new("RGB", (image.width, image.height + LABEL_HEIGHT), "white")
  canvas.paste(image, (0, LABEL_HEIGHT))
  ImageDraw.Draw(canvas).text((4, 4), label, fill="black")
  return canvas


def row(loaded, path: str, quality: int, side: int) -> list[Image.Image]:
  clean = sources.load_image(path, loaded.color)
  settings = evaluate.Settings(bucket=0)
  scores, restored = evaluate.evaluate_image(loaded, clean, quality, settings)
  protocol = evaluate.protocol_for(loaded.config.model.name, settings.protocol)
  compressed = evaluate.compressed(clean, quality, loaded.color, protocol)[0]  # the JPEG that was scored
  top, left = (clean.shape[0] - side) // 2, (clean.shape[1] - side) // 2
  crop = lambda image: image[top:top + side, left:left + side]
  name = Path(path).stem
  return [labelled(crop(compressed), f"{name} JPEG q{quality}: {scores['jpeg_psnr']:.2f} dB"),
          labelled(crop(restored), f"restored: {scores['psnr']:.2f} dB"),
          labelled(crop(clean), "clean")]


def grid(rows: list[list[Image.Image]]) -> Image.Image:
  width = sum(panel.width for panel in rows[0])
  height = sum(r[0].height for r in rows)
  canvas = Image.new("RGB", (width, height), "white")
  y = 0
  for panels in rows:
    x = 0
    for panel in panels:
      canvas.paste(panel, (x, y))
      x += panel.width
    y += panels[0].height
  return canvas


def main(argv):
  del argv
  output_dir = Path(FLAGS.output_dir)
  output_dir.mkdir(parents=True, exist_ok=True)
  photos = sources.list_images("embedded:validation")
  for alias in sorted(zoo.aliases()):
    loaded = loading.load_model(pretrained=alias)
    rows = [row(loaded, path, int(q), FLAGS.crop) for path in photos for q in FLAGS.qualities]
    target = output_dir / f"zoo_{alias}_crops.png"
    grid(rows).save(target)
    print(target)


def define_flags() -> None:
  flags.DEFINE_string("output_dir", "docs", "Where the PNGs go.")
  flags.DEFINE_list("qualities", ["10", "50"], "JPEG qualities, one row each.")
  flags.DEFINE_integer("crop", 192, "Side of the crop shown (from the image centre), before x2 enlargement.")


if __name__ == "__main__":
  cli.run(main, define_flags)
