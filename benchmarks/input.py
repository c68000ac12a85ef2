"""`python -m benchmarks input`: training patches per second from the Grain pipeline, per worker count.

Times whole batches after a warm-up (which also absorbs worker start-up and the one-off decoded-cache
build), so the number is the steady rate a training loop would see. Also reports the bytes per patch a
worker ships (uint8 images since issue 16; the train step makes the floats on the device).
"""

import io
import json
import multiprocessing
import os
import platform
import tempfile
import time
import timeit
from pathlib import Path

import numpy as np
import skimage.transform
from PIL import Image

from absl import app, flags

from benchmarks import common
from jaxcar import cli, paths
from jaxcar.configs import base
from jaxcar.data import cache, jpeg, pipeline, prepare, transforms

FLAGS = flags.FLAGS
flags.DEFINE_string("source", None, "image source (default: <shared>/data/train)")
flags.DEFINE_string("shared", None, "shared folder (default: $JAXCAR_SHARED or ../shared)")
flags.DEFINE_list("workers", ["0", "1", "2"], "worker counts to measure")
flags.DEFINE_integer("patch_size", 64, "patch side")
flags.DEFINE_enum("color", "rgb", ["rgb", "grey"], "colour mode")
flags.DEFINE_bool("quantization_maps", True, "append quantization maps (QCN inputs)")
flags.DEFINE_integer("global_size", 0, "also make QGCN's global image of this side (0: none)")
flags.DEFINE_integer("batch_size", 64, "per-process batch")
flags.DEFINE_float("seconds", 10.0, "timed seconds per worker count")
flags.DEFINE_integer("warmup_batches", 10, "untimed batches first")
flags.DEFINE_bool("record", False, "write the table to benchmarks/results/input.md (input_globalN.md with "
                  "--global_size=N)")
flags.DEFINE_bool("keep_freed_memory", True,
                  "workers keep freed buffers on the heap (False: an A/B of that choice)")
flags.DEFINE_integer("min_shared_memory_bytes", None, "workers send arrays of at least this many bytes "
                     "through shared memory, smaller ones pickled (default: pipeline.MIN_SHARED_MEMORY_BYTES; "
                     "0: every array, Grain's default)")
flags.DEFINE_bool("stages", False, "also time each per-patch stage alone (CPU time, median of 15 rounds)")
flags.DEFINE_string("train_config", "", "also train this config (e.g. qcn:small) on the same source for "
                    "--train_steps with each worker count, and report the share of wall time the training "
                    "loop waited for input")
flags.DEFINE_integer("train_steps", 60, "steps of each --train_config run (the first 10, with compilation, "
                     "are not counted)")


def cpu_seconds() -> float:
  """CPU time of this process and its live worker processes (Linux /proc; this process only elsewhere)."""
  total = sum(os.times()[:2])
  ticks = os.sysconf("SC_CLK_TCK")
  for child in multiprocessing.active_children():
    try:
      fields = Path(f"/proc/{child.pid}/stat").read_text().rsplit(")", 1)[1].split()
      total += (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
    except (OSError, IndexError, ValueError):
      pass
  return total


def measure(data_config, workers: int) -> tuple[float, float, float, float]:
  """(patches per wall second, patches per CPU second, bytes per patch, this process's share of the
  CPU time) with `workers` processes (0 = this process); the bytes are what a worker sends the training
  process for each patch.

  The CPU-second rate is what one worker core delivers, whatever else shares the machine; this
  process's share is what receiving the batches costs the training process (all of it at 0 workers).
  """
  iterator = pipeline.train_iterator(data_config, batch_size=FLAGS.batch_size, seed=0, process_index=0,
                                     process_count=1, num_workers=workers,
                                     keep_freed_memory=FLAGS.keep_freed_memory)
  for _ in range(FLAGS.warmup_batches):
    next(iterator)
  batches, start, cpu_start, own_start = 0, time.perf_counter(), cpu_seconds(), sum(os.times()[:2])
  while time.perf_counter() - start < FLAGS.seconds or not batches:
    batch = next(iterator)
    batches += 1
  patches = batches * FLAGS.batch_size
  cpu = cpu_seconds() - cpu_start
  rates = patches / (time.perf_counter() - start), patches / cpu
  own_share = (sum(os.times()[:2]) - own_start) / cpu
  iterator.close()  # stops its worker processes before the next count starts its own
  return (*rates, batch_bytes(batch) / FLAGS.batch_size, own_share)


def batch_bytes(batch: dict) -> int:
  return sum(np.asarray(value).nbytes for value in batch.values())


def training_input_wait(source: str, workers: int) -> float:
  """Share of wall time a real `train_and_evaluate` run spent blocked on input, after its first 10 steps."""
  from jaxcar.training import loop, writers  # pylint: disable=import-outside-toplevel
  overrides = [f"data.source={source}", f"data.num_workers={workers}", f"num_steps={FLAGS.train_steps}",
               "log_every=10", f"checkpoint_every={FLAGS.train_steps}", f"eval_every={FLAGS.train_steps}"]
  config = cli.load_config(FLAGS.train_config, overrides)
  with tempfile.TemporaryDirectory() as workdir:
    loop.train_and_evaluate(config, workdir)
    records = [json.loads(line) for line in (Path(workdir) / writers.METRICS_FILE).read_text().splitlines()]
  waits = [r["input_wait_fraction"] for r in records if "input_wait_fraction" in r and r["step"] > 10]
  return float(np.mean(waits))


def stage_costs(data_config) -> list[tuple[str, float]]:
  """(stage, CPU microseconds per patch) for each step of making a patch, timed alone in this process."""
  settings = transforms.PairSettings.from_config(data_config)
  images = cache.decoded_images(data_config.source, data_config.color, data_config.cache_dir or None)
  rng = np.random.default_rng(0)
  image = images[0]
  patch = np.ascontiguousarray(transforms.random_crop(image, settings.patch_size, (), rng))
  to_pil = lambda array: Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array)
  pil = to_pil(patch)
  data = jpeg.compress(patch, 30, settings.subsampling)
  examples = [transforms.degrade_patch(images[i % len(images)], settings, rng) for i in range(64)]
  batches = pipeline.TrainBatches(images, settings, FLAGS.batch_size, seed=0)
  stages = [
      ("crop (view)", lambda: transforms.random_crop(image, settings.patch_size, (), rng), 1),
      ("to Pillow, dihedral (Pillow), back to numpy",
       lambda: np.asarray(transforms.dihedral(to_pil(patch), 5)), 1),
      ("same, dihedral in numpy + contiguous copy",
       lambda: np.ascontiguousarray(np.rot90(patch, 1)[:, ::-1]), 1),
      ("JPEG encode (jpeg.encode)", lambda: jpeg.encode(pil, 30, settings.subsampling), 1),
      ("JPEG encode (Image.save)", lambda: pil.save(io.BytesIO(), format="JPEG", quality=30), 1),
      ("JPEG decode (decode_known)", lambda: jpeg.decode_known(data, patch.shape), 1),
      ("DQT tables (parsed; degrade_patch reuses them per quality)",
       lambda: jpeg.quantization_tables(data), 1),
      ("degrade_patch (crop, dihedral, encode, decode)",
       lambda: transforms.degrade_patch(image, settings, rng), 1),
      ("batch as shipped: uint8 images and one map period (used; the device makes the rest)",
       lambda: transforms.to_model_batch(examples, settings), 64),
      ("same as host floats (prepare.batch_model_inputs, shipped before issue 16)",
       lambda: _host_floats(examples, settings), 64),
      ("same, converted per example then batched", lambda: _per_example(examples, settings), 64),
      ("whole batch (pipeline.TrainBatches[k]: all of the above)",
       lambda: batches[int(rng.integers(1 << 20))], FLAGS.batch_size),
  ]
  if settings.global_size:
    size = settings.global_size
    stages += [
        ("global image (prepare.global_image)", lambda: prepare.global_image(patch, size, "zero_one"), 1),
        ("global image (skimage resize itself)",
         lambda: skimage.transform.resize(patch, (size, size), order=3), 1),
    ]
  return [(name, _cpu_microseconds(fn, number=max(1, 50 // per)) / per) for name, fn, per in stages]


def _cpu_microseconds(fn, number: int = 50, repeat: int = 15) -> float:
  # CPU time, not wall time, and the median of several rounds: other jobs on the machine then
  # change the answer little.
  rounds = timeit.repeat(fn, number=number, repeat=repeat, timer=time.process_time)
  return float(np.median(rounds)) / number * 1e6


def _host_floats(examples, settings):
  batch = prepare.batch_model_inputs(np.stack([e["degraded"] for e in examples]),
                                     np.stack([e["tables"] for e in examples]), settings)
  batch["targets"] = prepare.to_model_range(np.stack([e["clean"] for e in examples]), settings.value_range)
  return batch


def _per_example(examples, settings):
  converted = []
  for example in examples:
    inputs = prepare.model_inputs(example["degraded"], example["tables"], settings)
    converted.append({**inputs, "targets": prepare.to_model_range(example["clean"], settings.value_range),
                      "quality": example["quality"]})
  return {key: np.stack([example[key] for example in converted]) for key in converted[0]}


def main(argv):
  FLAGS(argv)  # called by benchmarks.__main__ (or a test) rather than app.run
  data_config = base.get_config().data
  data_config.source = FLAGS.source or str(paths.require_shared("data/train", FLAGS.shared))
  data_config.color = FLAGS.color
  data_config.patch_size = FLAGS.patch_size
  data_config.quality_range = (1, 60)
  data_config.quantization_maps = FLAGS.quantization_maps
  data_config.value_range = "minus_one_one"
  data_config.global_size = FLAGS.global_size
  if FLAGS.min_shared_memory_bytes is not None:
    pipeline.MIN_SHARED_MEMORY_BYTES = FLAGS.min_shared_memory_bytes
  rows = []
  for workers in [int(w) for w in FLAGS.workers]:
    rate, cpu_rate, patch_bytes, own_share = measure(data_config, workers)
    rows.append((workers, rate, cpu_rate, patch_bytes, own_share))
    print(f"{workers} workers: {rate:,.0f} patches/s, {cpu_rate:,.0f} per CPU second, {patch_bytes:,.0f} bytes "
          f"per patch, {own_share:.0%} of the CPU in the training process", flush=True)
  table = format_table(rows)
  if FLAGS.train_config:
    table += (f"\n\nTraining `{FLAGS.train_config}` on the same source, {FLAGS.train_steps} steps: share of wall "
              "time the loop waited for input\n\n| workers | input wait |\n|---|---|\n")
    table += "\n".join(f"| {workers} | {training_input_wait(data_config.source, workers):.1%} |"
                       for workers, *_ in rows)
  if FLAGS.stages:
    table += "\n\n| stage | CPU us per patch |\n|---|---|\n" + "\n".join(
        f"| {name} | {cost:.0f} |" for name, cost in stage_costs(data_config))
  print(table)
  if FLAGS.record:
    name = f"input_global{FLAGS.global_size}" if FLAGS.global_size else "input"
    common.save(name, table + "\n", {"command": format_command(), "table": table, "rows": [
        {"workers": workers, "patches_per_second": rate, "patches_per_cpu_second": cpu_rate,
         "bytes_per_patch": patch_bytes, "training_process_cpu_share": own_share}
        for workers, rate, cpu_rate, patch_bytes, own_share in rows]})


def format_command() -> str:
  return "python -m benchmarks input " + " ".join(
      f"--{name}={FLAGS[name].value}" for name in ("patch_size", "color", "quantization_maps", "global_size",
                                                   "batch_size", "seconds", "keep_freed_memory", "stages",
                                                   "train_config", "train_steps")) + (
      f" --min_shared_memory_bytes={pipeline.MIN_SHARED_MEMORY_BYTES}")


def format_table(rows) -> str:
  command = format_command()
  base_rate, base_cpu_rate = (rows[0][1], rows[0][2]) if rows and rows[0][0] == 0 else (None, None)
  load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
  machine = platform.processor() or platform.machine()
  lines = [f"Input pipeline, {FLAGS.patch_size}x{FLAGS.patch_size} {FLAGS.color}, "
           f"maps={FLAGS.quantization_maps}, global={FLAGS.global_size}, q in [1, 60], on {machine} "
           f"({os.cpu_count()} cores, load average {load:.1f} at the end): `{command}`", "",
           "| workers | patches/s (wall) | vs 0 workers | patches per CPU second | bytes per patch shipped "
           "| CPU share of the training process | vs 0 workers, each worker on a core of its own |",
           "|---|---|---|---|---|---|---|"]
  for workers, rate, cpu_rate, patch_bytes, own_share in rows:
    ratio = f"{rate / base_rate:.2f}x" if base_rate else "-"
    lines.append(f"| {workers} | {rate:,.0f} | {ratio} | {cpu_rate:,.0f} | {patch_bytes:,.0f} | {own_share:.0%} "
                 f"| {own_core_scaling(workers, cpu_rate, own_share, base_cpu_rate)} |")
  return "\n".join(lines)


def own_core_scaling(workers: int, cpu_rate: float, own_share: float, base_cpu_rate: float | None) -> str:
  """The wall-rate ratio to 0 workers on a machine with a core for each worker and one for the
  training process: workers x (patches per worker CPU second) / (patches per CPU second at 0 workers).
  A projection from CPU accounting: on 2 cores the training process takes its share from the workers."""
  if not workers or not base_cpu_rate or own_share >= 1.0:
    return "-"
  return f"{workers * cpu_rate / (1.0 - own_share) / base_cpu_rate:.2f}x"


if __name__ == "__main__":
  app.run(main)
