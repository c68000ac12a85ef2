"""`python -m benchmarks restore`: megapixels/s and peak memory of whole-image restoration vs PyTorch.

JAX side: `jaxcar.inference` as `jaxcar.restore` runs it: `predict` (one jitted pass, padded to the
size bucket) for images up to `--max_whole_pixels`, `predict_tiled` above that. PyTorch side: the
equivalent network, eager, under `no_grad`, fed the same way: whole for small images and through the
very same tiling code for large ones, so both do identical work. Weights are random: speed and memory
do not depend on them. Peak memory is the resident-set growth during one call, which for a 24 MP
image is dominated by the activations a framework keeps alive.
"""

import jax
import numpy as np
import torch
from absl import flags

from benchmarks import common, torch_twins
from jaxcar import models, predict
from jaxcar.ops import conv

FLAGS = flags.FlagValues()  # own flag set: several benchmarks can be imported in one process
flags.DEFINE_list("models", ["arcnn", "dacar3"], "networks to time", flag_values=FLAGS)
flags.DEFINE_list("sizes", ["768x512", "6000x4000"], "WIDTHxHEIGHT of the test images", flag_values=FLAGS)
flags.DEFINE_list("dtypes", ["float32"], "compute dtypes", flag_values=FLAGS)
flags.DEFINE_enum("color", "grey", ["grey", "rgb"], "colour mode, for networks that have one", flag_values=FLAGS)
flags.DEFINE_integer("num_blocks", 16, "residual blocks, for networks that have them", flag_values=FLAGS)
flags.DEFINE_integer("max_whole_pixels", 4_000_000, "larger images are restored in tiles", flag_values=FLAGS)
flags.DEFINE_integer("tile", 1024, "tile side for large images", flag_values=FLAGS)
flags.DEFINE_integer("overlap", 32, "context pixels around each tile", flag_values=FLAGS)
flags.DEFINE_integer("repeats", 3, "timed rounds (median reported)", flag_values=FLAGS)
flags.DEFINE_integer("torch_threads", 0, "PyTorch intra-op threads (0: one per core)", flag_values=FLAGS)
flags.DEFINE_enum("cpu_conv", "auto", conv.CHOICES, "JAX's CPU convolutions (jaxcar.ops.conv.set_backend)",
                  flag_values=FLAGS)
flags.DEFINE_bool("record", False, "write the table to benchmarks/results/restore.md", flag_values=FLAGS)


def parse_size(text: str) -> tuple[int, int]:
  try:
    width, height = (int(v) for v in text.lower().split("x"))
  except ValueError:
    raise ValueError(f"--sizes entries are WIDTHxHEIGHT like 768x512, got {text!r}") from None
  return height, width


class TorchPredictor:
  """Same call signature as `predict.Predictor`: an (H, W, C) float32 image -> (H, W, C_out) numpy."""

  def __init__(self, net, dtype: str):
    self.net, self.autocast = net.to(memory_format=torch.channels_last).eval(), dtype == "bfloat16"

  def __call__(self, image: np.ndarray, global_image=None) -> np.ndarray:
    batch = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None]  # channels-last strides
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.autocast):
      out = self.net(batch)
    return out[0].float().permute(1, 2, 0).numpy()


def restore_function(predictor, height: int, width: int):
  """How `jaxcar.restore` would run an image of this size with `predictor`."""
  if height * width <= FLAGS.max_whole_pixels:
    return lambda image: predict.predict(predictor, image)
  return lambda image: predict.predict_tiled(predictor, image, tile=FLAGS.tile, overlap=FLAGS.overlap)


def measure(name: str, dtype: str, height: int, width: int) -> list:
  accepted = models.options(name)
  options = {k: v for k, v in {"color": FLAGS.color, "num_blocks": FLAGS.num_blocks, "dtype": dtype}.items()
             if k in accepted}
  model = models.create(name, **options)
  channels = model.input_channels
  image = np.random.default_rng(0).random((height, width, channels), np.float32)
  params = models.init(model, jax.random.key(0))["params"]
  runs = {"jax": restore_function(predict.Predictor(model, params), height, width)}
  if name in torch_twins.FACTORIES:
    runs["torch"] = restore_function(TorchPredictor(torch_twins.create(name, **options), dtype), height, width)
  for run in runs.values():  # compile outside the timing, on one tile-sized piece for tiled images
    run(image[:min(height, FLAGS.tile), :min(width, FLAGS.tile)])
  memory = {k: 0 for k in runs}

  def timed(framework):
    def call():
      with common.PeakMemory() as peak:
        runs[framework](image)
      memory[framework] = max(memory[framework], peak.peak_bytes)
    return call

  rounds = common.interleaved_rounds({k: timed(k) for k in runs}, FLAGS.repeats, warmup=0)
  seconds = {k: float(np.median(t)) for k, t in rounds.items()}
  megapixels = height * width / 1e6
  row = [name, dtype, f"{width}x{height}", f"{megapixels / seconds['jax']:.2f}", f"{memory['jax'] / 2**20:,.0f}"]
  if "torch" in runs:
    row += [f"{megapixels / seconds['torch']:.2f}", f"{memory['torch'] / 2**20:,.0f}",
            common.speedup(rounds["jax"], rounds["torch"])]
  else:
    row += ["-", "-", "-"]
  print(" | ".join(row), flush=True)
  return row


def main(argv):
  # glibc's malloc defaults on purpose, unlike `jaxcar.restore` (host_memory): peak memory is read as
  # resident-set growth, which memory kept from an earlier call would hide.
  FLAGS(argv)
  conv.set_backend(FLAGS.cpu_conv)
  torch.set_num_threads(FLAGS.torch_threads or common.cpu_count())
  sizes = [parse_size(s) for s in FLAGS.sizes]
  rows = [measure(name, dtype, h, w) for dtype in FLAGS.dtypes for name in FLAGS.models for h, w in sizes]
  headers = ["network", "dtype", "image", "JAX MP/s", "JAX peak MiB", "PyTorch MP/s", "PyTorch peak MiB",
             "JAX / PyTorch (middle half of rounds)"]
  common.report("restore", f"Restore, median of {FLAGS.repeats} interleaved rounds; tiles of {FLAGS.tile} (overlap "
                f"{FLAGS.overlap}) above {FLAGS.max_whole_pixels / 1e6:g} MP",
                common.markdown_table(headers, rows), FLAGS.record, {"headers": headers, "rows": rows})
