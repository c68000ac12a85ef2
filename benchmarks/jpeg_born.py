"""`python -m benchmarks.jpeg_born [MODEL]`: does a colour model harm high-quality JPEGs, and does the
projection onto the file's quantization intervals (`data.jpeg_consistency`) help?

The zoo's colour validation split (16 held-out BSDS500 photos, not LIVE1) is JPEG-born: scored
against those photos, a q95 re-save is nearly lossless and any artifact removal counts as harm. Here
they are first downscaled 2x (bicubic, which blurs away most of their 8x8 grid), a stand-in for
photos that never were JPEGs, so that the true clean image is known:
1. compressed once at each quality: PSNR of the JPEG, the model, and the model projected;
2. JPEG-born: compressed at a first quality, then re-saved at q95 on the same grid (as a user
   re-saves a photo). PSNR against the true clean image, and against the first JPEG (what the
   validation split's q95 measures).
"""

import sys

import numpy as np
from PIL import Image

from jaxcar import loading, metrics, predict
from jaxcar.data import jpeg, jpeg_file, sources

PLAN = predict.Plan(bucket=0)


def clean_photos() -> list[np.ndarray]:
  _, paths = sources.training_and_validation("bsds500", "split:16")
  photos = []
  for path in paths:
    with Image.open(path) as image:
      width, height = image.size
      half = image.convert("RGB").resize((width // 16 * 8, height // 16 * 8), Image.Resampling.BICUBIC)
    photos.append(np.asarray(half))
  return photos


def restorations(model, data: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(the JPEG, the model's output, the model's output projected) for a file's bytes."""
  decoded, tables = jpeg.decode(data, "rgb"), jpeg.quantization_tables(data)
  model.config.data.jpeg_consistency = False
  plain = model.restore(decoded, tables, PLAN)
  model.config.data.jpeg_consistency = True
  projected = model.restore(decoded, tables, PLAN, stored=jpeg_file.stored_planes(data))
  return decoded, plain, projected


def mean_psnr(pairs) -> str:
  return f"{np.mean([metrics.psnr(a, b) for a, b in pairs]):.3f}"


def main(name: str = "color") -> None:
  model = loading.load_model(pretrained=name)
  photos = clean_photos()
  print(f"{model.source}, {len(photos)} photos of the validation split downscaled 2x, 4:2:0\n")
  print("| compressed once at | JPEG | model | model, projected |\n|---|---|---|---|")
  for quality in (5, 10, 30, 50, 70, 90, 95):
    outputs = [restorations(model, jpeg.compress(photo, quality)) for photo in photos]
    print(f"| q{quality} | " + " | ".join(mean_psnr(zip(photos, [o[i] for o in outputs])) for i in range(3)) + " |")
  print("\n| first JPEG, then re-saved at q95 | vs clean: first JPEG | re-save | model | model, projected "
        "| vs first JPEG: re-save | model | model, projected |\n|---|---|---|---|---|---|---|---|")
  for first in (50, 75, 90, 95):
    born = [jpeg.decode(jpeg.compress(photo, first), "rgb") for photo in photos]
    outputs = [restorations(model, jpeg.compress(image, 95)) for image in born]
    against_clean = [mean_psnr(zip(photos, born))] + [mean_psnr(zip(photos, [o[i] for o in outputs])) for i in range(3)]
    against_first = [mean_psnr(zip(born, [o[i] for o in outputs])) for i in range(3)]
    print(f"| q{first} | " + " | ".join(against_clean + against_first) + " |")


if __name__ == "__main__":
  main(*sys.argv[1:])
