"""`python -m benchmarks.luma_plane [MODEL]`: which luma a grey model should restore in a colour JPEG.

On the zoo's grey validation split (16 held-out training photos, not LIVE1), at q10 and q50, the mean
PSNR of the restored Y against the clean image's Y (full range, as the JPEG encoder computes it), for
(a) Y recomputed from the decoded, clipped RGB (restore before issue 14), (b) the Y plane the JPEG
stores (restore now), (c) that plane mapped into MATLAB's studio range for the network and back.
"""

import io
import sys

import numpy as np
from PIL import Image

from jaxcar import loading, metrics, predict
from jaxcar.data import jpeg, jpeg_file, sources


def studio_round_trip(model, stored, tables, plan):
  studio = np.round(16 + stored * (219 / 255)).astype(np.uint8)
  out = model.restore(studio, tables, plan).astype(np.float64)
  return np.clip(np.round((out - 16) * (255 / 219)), 0, 255).astype(np.uint8)


def main(name: str = "grey") -> None:
  model = loading.load_model(pretrained=name)
  _, paths = sources.training_and_validation("bsds500", "split:16")
  plan = predict.Plan(bucket=0)
  for quality in (10, 50):
    scores = {"jpeg": [], "recomputed": [], "stored": [], "studio": []}
    for path in paths:
      clean = np.asarray(Image.open(path).convert("RGB"))
      clean_y = np.asarray(Image.fromarray(clean).convert("YCbCr"))[..., :1]
      data = jpeg.compress(clean, quality, "4:2:0")
      tables = jpeg.quantization_tables(data)
      decoded = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
      recomputed = np.asarray(Image.fromarray(decoded).convert("YCbCr"))[..., :1]
      stored = jpeg_file.stored_luma(data)[..., None]
      scores["jpeg"].append(metrics.psnr(clean_y, stored))
      scores["recomputed"].append(metrics.psnr(clean_y, model.restore(recomputed, tables, plan)))
      scores["stored"].append(metrics.psnr(clean_y, model.restore(stored, tables, plan)))
      scores["studio"].append(metrics.psnr(clean_y, studio_round_trip(model, stored, tables, plan)))
    print(f"q{quality}: " + ", ".join(f"{key} {np.mean(value):.3f}" for key, value in scores.items()))


if __name__ == "__main__":
  main(*sys.argv[1:])
