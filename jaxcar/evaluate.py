"""`python -m jaxcar.evaluate`: PSNR / SSIM / PSNR-B of a network against the JPEG it restores.

    python -m jaxcar.evaluate --config=dacar3 --weights=../shared/pretrained/dacar3_q10_keras.h5 \
        --dataset=live1_gray --qualities=10 --output_dir=eval/dacar3
    python -m jaxcar.evaluate --config=qcn --workdir=runs/qcn --dataset=live1_color --self_ensemble

Protocol (BUILD_NOTES.md, Released weights; DACAR's MATLAB test, QGCN's eval_qm.py): ground truth read with Pillow (grey models:
grey files as stored, colour files as MATLAB Y); JPEG by Pillow at each quality (4:2:0 for colour);
the network output clipped, x255 and rounded to uint8; metrics on uint8 over the whole image (RGB for
colour models, Y/grey for grey ones), no border shave; the JPEG itself is scored beside the model.
`--protocol=qgcn` (the default for QCN/QGCN) follows the QGCN repository's eval_qm.py/eval_qmg.py
instead: the ground truth is edge-padded bottom/right to a multiple of 8 *before* the JPEG,
the network (and QGCN's global image) sees the padded JPEG, and everything is cropped back to score.
Writes per_image.csv, summary.json, summary.md, psnr_vs_quality.png (and restored PNGs with
--save_images) to --output_dir.
"""

import csv
import dataclasses
import json
from pathlib import Path

from absl import flags, logging
import numpy as np
from PIL import Image
from tqdm import tqdm

from jaxcar import cli, loading, metrics, paths, predict
from jaxcar.data import jpeg, sources

DATASETS = ("live1_color", "live1_gray", "classic5")  # the benchmark sets; folders: sources.DATASETS
METRICS = ("psnr", "ssim", "psnr_b")
JPEG_SUBSAMPLING = "4:2:0"  # Pillow's default, as every published protocol used
# How the JPEG is made from the ground truth: "reference" compresses the image as it is
# (BUILD_NOTES.md, Released weights); "qgcn" edge-pads it to the 8x8 grid first (QGCN's eval_qm/eval_qmg.py).
# The two differ only for sides that are not multiples of 8 (6 of LIVE1's 29 images).
PROTOCOLS = ("reference", "qgcn")
QGCN_PROTOCOL_MODELS = ("qcn", "qgcn")  # "auto" picks the protocol these networks were published with
JPEG_BLOCK = 8

FLAGS = flags.FLAGS


@dataclasses.dataclass
class Settings:
  qualities: tuple[int, ...] = (10, 20, 30, 40)
  self_ensemble: bool = False
  ssim_window: str = "uniform"
  bucket: int = predict.DEFAULT_BUCKET
  save_images: bool = False
  protocol: str = "auto"  # one of PROTOCOLS, or "auto": by the model (protocol_for)


def protocol_for(model_name: str, protocol: str = "auto") -> str:
  """The protocol to use: `protocol` itself, or for "auto" the one `model_name` was published with."""
  if protocol == "auto":
    return "qgcn" if model_name in QGCN_PROTOCOL_MODELS else "reference"
  if protocol not in PROTOCOLS:
    raise ValueError(f"unknown evaluation protocol {protocol!r}; valid: auto, {', '.join(PROTOCOLS)}")
  return protocol


def jpeg_source(ground_truth: np.ndarray, protocol: str) -> np.ndarray:
  """The image the protocol compresses: the ground truth, or ("qgcn") it edge-padded bottom/right to
  a multiple of 8, so no JPEG block straddles the border."""
  if protocol == "reference":
    return ground_truth
  height, width = (predict.round_up(side, JPEG_BLOCK) for side in ground_truth.shape[:2])
  return predict.pad_bottom_right(ground_truth, height, width)


def resolve_dataset(dataset: str, shared: str | None = None) -> str:
  """A named dataset (live1_color, live1_gray, classic5, ...) under the shared folder, an embedded source
  ("embedded:validation": the photos training leaves out), a folder or a .txt list."""
  name = dataset.lower()
  if name in sources.DATASETS:
    fetch = sources.FETCHED_AS.get(name, name)
    return ",".join(str(paths.require_shared(folder, shared, dataset=name, fetch=fetch))
                    for folder in sources.DATASETS[name])
  if dataset in sources.EMBEDDED_SOURCES or Path(dataset).expanduser().is_dir() or dataset.endswith(".txt"):
    return dataset
  raise FileNotFoundError(f"dataset {dataset!r} is neither a folder, a .txt list, "
                          f"one of {sorted(sources.EMBEDDED_SOURCES)} nor one of {sorted(sources.DATASETS)}")


def score(ground_truth: np.ndarray, image: np.ndarray, ssim_window: str) -> dict[str, float]:
  return {"psnr": metrics.psnr(ground_truth, image), "ssim": metrics.ssim(ground_truth, image, ssim_window),
          "psnr_b": metrics.psnr_b(ground_truth, image)}


def compressed(ground_truth: np.ndarray, quality: int, color: str, protocol: str) -> tuple[np.ndarray, np.ndarray, bytes]:
  """(decoded JPEG, its quantization tables, the file) as `protocol` makes them; the decoded image may
  be padded."""
  data = jpeg.compress(jpeg_source(ground_truth, protocol), quality, JPEG_SUBSAMPLING)
  return jpeg.decode(data, color), jpeg.quantization_tables(data), data


def evaluate_image(loaded, ground_truth: np.ndarray, quality: int, settings: Settings):
  """({"jpeg_psnr", ..., "psnr", ...}, restored uint8) for one image at one quality; the JPEG and the
  restoration are cropped to the ground truth's size before scoring (a no-op unless padded)."""
  height, width = ground_truth.shape[:2]
  protocol = protocol_for(loaded.config.model.name, settings.protocol)
  padded, tables, data = compressed(ground_truth, quality, loaded.color, protocol)
  plan = predict.Plan(bucket=settings.bucket, self_ensemble=settings.self_ensemble)  # whole images
  restored = loaded.restore(padded, tables, plan, stored=loaded.stored_planes(data))[:height, :width]
  decoded = padded[:height, :width]
  row = {f"jpeg_{k}": v for k, v in score(ground_truth, decoded, settings.ssim_window).items()}
  row.update(score(ground_truth, restored, settings.ssim_window))
  return row, restored


def evaluate(loaded: loading.LoadedModel, image_paths: list[str], settings: Settings, image_dir: Path | None = None) -> list[dict]:
  """One row per (image, quality); unreadable images are logged and skipped."""
  rows, skipped = [], {}
  for path in tqdm(image_paths, desc="evaluate", unit="image"):
    try:
      ground_truth = sources.load_image(path, loaded.color)
    except sources.ImageError as error:
      skipped[path] = str(error)
      continue
    for quality in settings.qualities:
      row, restored = evaluate_image(loaded, ground_truth, quality, settings)
      rows.append({"image": Path(path).name, "quality": quality, **row})
      if image_dir is not None:
        _save_image(restored, image_dir / f"q{quality}" / f"{Path(path).stem}.png")
  sources.report_skipped(skipped, "evaluate")
  if not rows:
    raise ValueError("no image could be evaluated")
  return rows


def _save_image(image: np.ndarray, path: Path) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(path)


def summarize(rows: list[dict]) -> dict[int, dict]:
  """Per quality: the image count and the mean of every metric, for the JPEG and the model."""
  summary = {}
  for quality in sorted({row["quality"] for row in rows}):
    selected = [row for row in rows if row["quality"] == quality]
    means = lambda prefix: {m: float(np.mean([row[prefix + m] for row in selected])) for m in METRICS}
    summary[quality] = {"images": len(selected), "jpeg": means("jpeg_"), "model": means("")}
  return summary


def markdown_table(summary: dict[int, dict], title: str) -> str:
  lines = [f"**{title}**", "", "| q | images | JPEG PSNR | JPEG SSIM | JPEG PSNR-B | PSNR | SSIM | PSNR-B |",
           "|---|---|---|---|---|---|---|---|"]
  for quality, entry in summary.items():
    jpeg_cells = [f"{entry['jpeg']['psnr']:.3f}", f"{entry['jpeg']['ssim']:.4f}", f"{entry['jpeg']['psnr_b']:.3f}"]
    model_cells = [f"{entry['model']['psnr']:.3f}", f"{entry['model']['ssim']:.4f}", f"{entry['model']['psnr_b']:.3f}"]
    lines.append(f"| {quality} | {entry['images']} | " + " | ".join(jpeg_cells + model_cells) + " |")
  return "\n".join(lines) + "\n"


def plot(summary: dict[int, dict], title: str, path: Path) -> None:
  from matplotlib.figure import Figure  # pylint: disable=import-outside-toplevel  (no pyplot, no backend)
  qualities = list(summary)
  figure = Figure(figsize=(5, 3.5))
  axes = figure.subplots()
  axes.plot(qualities, [summary[q]["jpeg"]["psnr"] for q in qualities], "o--", label="JPEG")
  axes.plot(qualities, [summary[q]["model"]["psnr"] for q in qualities], "o-", label="restored")
  axes.set(xlabel="JPEG quality", ylabel="PSNR (dB)", title=title)
  axes.grid(alpha=0.3)
  axes.legend()
  figure.tight_layout()
  figure.savefig(path, dpi=120)


def report_title(description: dict) -> str:
  return f"{description['model']} on {description['dataset']} ({description['protocol']} protocol)"


def write_report(rows, summary, description: dict, output_dir: Path) -> None:
  output_dir.mkdir(parents=True, exist_ok=True)
  with open(output_dir / "per_image.csv", "w", newline="") as file:
    writer = csv.DictWriter(file, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
  title = report_title(description)
  (output_dir / "summary.json").write_text(json.dumps({**description, "qualities": summary}, indent=2))
  (output_dir / "summary.md").write_text(markdown_table(summary, title))
  plot(summary, title, output_dir / "psnr_vs_quality.png")


def main(argv):
  if len(argv) > 1:
    raise cli.UsageError(f"unexpected arguments {argv[1:]}")
  settings = Settings(qualities=tuple(int(q) for q in FLAGS.qualities), self_ensemble=FLAGS.self_ensemble,
                      ssim_window=FLAGS.ssim_window, bucket=FLAGS.bucket, save_images=FLAGS.save_images,
                      protocol=FLAGS.protocol)
  if settings.ssim_window not in metrics.SSIM_WINDOWS:
    raise ValueError(f"--ssim_window must be one of {list(metrics.SSIM_WINDOWS)}")
  image_paths = sources.list_images(resolve_dataset(FLAGS.dataset, FLAGS.shared))[:FLAGS.limit or None]
  loaded = cli.load_model_from_flags()
  # Resolved once, so summary.json records the protocol actually used rather than "auto".
  settings.protocol = protocol_for(loaded.config.model.name, settings.protocol)
  output_dir = Path(FLAGS.output_dir)
  rows = evaluate(loaded, image_paths, settings, output_dir / "images" if settings.save_images else None)
  summary = summarize(rows)
  description = {"model": loaded.config.model.name, "weights": loaded.source, "dataset": FLAGS.dataset,
                 "color": loaded.color, **dataclasses.asdict(settings)}
  write_report(rows, summary, description, output_dir)
  print(markdown_table(summary, report_title(description)))
  logging.info("wrote %s", output_dir)


def define_flags() -> None:
  cli.define_model_flags()
  flags.DEFINE_string("dataset", None, "A folder or .txt list of ground-truth images, "
                      f"'embedded:validation', or one of {sorted(DATASETS)}.")
  flags.DEFINE_list("qualities", ["10", "20", "30", "40"], "JPEG qualities to evaluate.")
  flags.DEFINE_bool("self_ensemble", False, "Average the 8 flips/rotations (x8 slower).")
  flags.DEFINE_enum("ssim_window", "uniform", list(metrics.SSIM_WINDOWS),
                    "uniform: 8x8 box (QGCN, DACAR tables); gaussian: 11x11, sigma 1.5 (Wang et al., tf.image).")
  flags.DEFINE_integer("bucket", predict.DEFAULT_BUCKET,
                       "Pad images to a multiple of this (fewer compiles); 0 = no padding, exactly the published "
                       "protocol, one compile per image size.", lower_bound=0)
  flags.DEFINE_bool("save_images", False, "Also write the restored images.")
  flags.DEFINE_enum("protocol", "auto", ["auto", *PROTOCOLS],
                    "How the JPEG is made: reference = the image as it is, as the released-weight numbers were measured; qgcn = "
                    "edge-padded to a multiple of 8 first, as QGCN's eval_qm.py; auto = qgcn for QCN/QGCN.")
  flags.DEFINE_string("output_dir", "evaluation", "Folder for the CSV, JSON, Markdown table and plot.")
  flags.DEFINE_integer("limit", 0, "Evaluate only the first N images (0 = all).", lower_bound=0)
  flags.DEFINE_string("shared", None, "The shared data folder (default $JAXCAR_SHARED or ../shared).")
  flags.mark_flag_as_required("dataset")


if __name__ == "__main__":
  cli.run(main, define_flags)
