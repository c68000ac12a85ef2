"""`python -m benchmarks step`: train-step patches/s of jaxcar's real step against an eager PyTorch step.

JAX side: `jaxcar.training.steps.make_train_step` (the step training runs: jitted, sharded over every
local device, state donated) with Adam and an MSE loss, its convolutions as `jaxcar.ops.conv` picks them
(oneDNN custom calls on one CPU device; `--cpu_conv=xla` times XLA's own). PyTorch side: the equivalent network from
`benchmarks.torch_twins`, channels-last, Adam, MSE, eager, `autocast(bfloat16)` for the bfloat16 rows (float32
parameters, bf16 compute: the same split as a jaxcar model with `dtype="bfloat16"`). Both run the same
shapes in alternating rounds; the ratio is JAX speed over PyTorch speed, the median of the per-round
ratios, with the middle half of the rounds in brackets.

GFLOP/s use XLA's own count of the step compiled with XLA's convolutions (convolutions forward and backward, optimizer), applied
to both frameworks; MFU is that rate over the best square-matmul rate of either framework in the same dtype,
the matmuls timed in the same rounds as the steps.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import torch
from absl import flags

from benchmarks import common, torch_twins
from jaxcar import models
from jaxcar.ops import conv, host_memory
from jaxcar.training import losses, steps

FLAGS = flags.FlagValues()  # own flag set: several benchmarks can be imported in one process
flags.DEFINE_list("models", ["arcnn", "dacar3", "qcn"], "networks to time, or 'all'", flag_values=FLAGS)
flags.DEFINE_list("dtypes", ["float32", "bfloat16"], "compute dtypes", flag_values=FLAGS)
flags.DEFINE_enum("color", "grey", ["grey", "rgb"], "colour mode, for networks that have one", flag_values=FLAGS)
flags.DEFINE_integer("num_blocks", 16, "residual blocks, for networks that have them", flag_values=FLAGS)
flags.DEFINE_integer("batch_size", 16, "global batch", flag_values=FLAGS)
flags.DEFINE_integer("patch_size", 64, "patch side", flag_values=FLAGS)
flags.DEFINE_integer("repeats", 15, "timed rounds (medians reported)", flag_values=FLAGS)
flags.DEFINE_integer("peak_size", 2048, "side of the square matmul that measures the peak", flag_values=FLAGS)
flags.DEFINE_integer("torch_threads", 0, "PyTorch intra-op threads (0: one per core)", flag_values=FLAGS)
flags.DEFINE_enum("cpu_conv", "auto", conv.CHOICES, "JAX's CPU convolutions (jaxcar.ops.conv.set_backend)",
                  flag_values=FLAGS)
flags.DEFINE_bool("record", False, "write the table to benchmarks/results/step.md", flag_values=FLAGS)


def model_options(name: str, dtype: str) -> dict:
  """The benchmark's color/num_blocks settings, for the networks that take them."""
  accepted = models.options(name)
  chosen = {"color": FLAGS.color, "num_blocks": FLAGS.num_blocks, "dtype": dtype}
  return {k: v for k, v in chosen.items() if k in accepted}


def random_batch(model, batch: int, size: int) -> dict:
  """Inputs and targets of the shapes `model` trains on, uniform in [0, 1)."""
  rng = np.random.default_rng(0)
  inputs = models.dummy_inputs(model, batch, size, size)
  variables = jax.eval_shape(lambda: models.init(model, jax.random.key(0), size, size))
  out = jax.eval_shape(model.apply, variables, *inputs)
  shapes = [x.shape for x in inputs]
  arrays = {"inputs": shapes[0], "targets": out.shape}
  if len(shapes) == 2:
    arrays["global_inputs"] = shapes[1]
  return {k: rng.random(shape, np.float32) for k, shape in arrays.items()}


class JaxStep:
  """The training step jaxcar runs, on a device-resident batch; `()` runs one step to completion."""

  def __init__(self, model, batch: dict):
    mesh = steps.make_mesh()
    tx = optax.adam(1e-4)
    params = models.init(model, jax.random.key(0), batch["inputs"].shape[1], batch["inputs"].shape[2])["params"]
    self.state = jax.device_put(steps.init_state(params, tx, 0, 0.0), steps.replicated(mesh))
    self.batch = steps.global_batch(batch, mesh)
    self.step = steps.make_train_step(model, tx, losses.mse, mesh)
    self.flops = _xla_flops(model, tx, mesh, self.state, self.batch)

  def __call__(self):
    self.state, metrics = self.step(self.state, self.batch)
    metrics["loss"].block_until_ready()


def _xla_flops(model, tx, mesh, state, batch) -> float:
  """XLA's FLOP count of the step compiled with its own convolutions (it cannot see into custom calls)."""
  with conv.xla_only():  # traced (lowered) inside the block
    compiled = steps.make_train_step(model, tx, losses.mse, mesh).lower(state, batch).compile()
  return float(_cost(compiled).get("flops", 0.0))


def _cost(compiled) -> dict:
  cost = compiled.cost_analysis()
  return cost[0] if isinstance(cost, list) else (cost or {})


class TorchStep:
  """The same step in eager PyTorch, channels-last (model and batch): PyTorch's fastest CPU layout for
  convolutions. In the default NCHW a 2-channel input (QCN grey) makes every layer reorder its
  activations, 1.26x (f32) to 1.58x (bf16) slower for qcn-16 here (BUILD_NOTES.md)."""

  def __init__(self, name: str, options: dict, batch: dict, dtype: str):
    self.net = torch_twins.create(name, **options).to(memory_format=torch.channels_last)
    self.optimizer = torch.optim.Adam(self.net.parameters(), lr=1e-4)
    channels_last = lambda a: torch.from_numpy(a).permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last)
    self.inputs, self.targets = channels_last(batch["inputs"]), channels_last(batch["targets"])
    self.autocast = dtype == "bfloat16"

  def __call__(self):
    self.optimizer.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.autocast):
      restored = self.net(self.inputs)
    loss = torch.mean(torch.square(restored.float() - self.targets))
    loss.backward()
    self.optimizer.step()


def measure(name: str, dtype: str) -> tuple[list, float]:
  """One table row (patches/s of both frameworks, their ratio, GFLOP/s, MFU) and the matmul peak.

  The peak's matmuls run in the same rounds as the steps: this host's speed drifts, and a peak
  measured at another time once gave an MFU above 100%.
  """
  options = model_options(name, dtype)
  model = models.create(name, **options)
  batch = random_batch(model, FLAGS.batch_size, FLAGS.patch_size)
  contenders = {"jax": JaxStep(model, batch)}
  if name in torch_twins.FACTORIES:
    contenders["torch"] = TorchStep(name, options, batch, dtype)
  matmuls, matmul_flops = common.matmul_calls(dtype, FLAGS.peak_size)
  rounds = common.interleaved_rounds({**contenders, **matmuls}, FLAGS.repeats, warmup=2)
  peak = max(matmul_flops / rounds.pop(call).min() for call in matmuls) / 1e9
  flops = contenders["jax"].flops
  seconds = {k: float(np.median(t)) for k, t in rounds.items()}
  rate = {k: FLAGS.batch_size / s for k, s in seconds.items()}
  gflops = {k: flops / s / 1e9 for k, s in seconds.items()}
  described = name + "".join(f" {k}={v}" for k, v in options.items() if k != "dtype")
  row = [described, dtype, f"{rate['jax']:.1f}", f"{gflops['jax']:.0f}", f"{gflops['jax'] / peak:.0%}"]
  if "torch" in rate:
    row += [f"{rate['torch']:.1f}", f"{gflops['torch']:.0f}", f"{gflops['torch'] / peak:.0%}",
            common.speedup(rounds["jax"], rounds["torch"])]
  else:
    row += ["-", "-", "-", "-"]
  print(" | ".join(row + [f"matmul peak {peak:.0f} GFLOP/s"]), flush=True)
  return row, peak


def main(argv):
  host_memory.for_jax_on_cpu()  # as training does; PyTorch's allocations share the setting
  FLAGS(argv)
  conv.set_backend(FLAGS.cpu_conv)
  if FLAGS.batch_size % jax.device_count():
    raise SystemExit(f"--batch_size={FLAGS.batch_size} must be a multiple of the {jax.device_count()} devices")
  torch.set_num_threads(FLAGS.torch_threads or common.cpu_count())
  names = models.names() if FLAGS.models == ["all"] else FLAGS.models
  rows, peaks = [], {}
  for dtype in FLAGS.dtypes:
    for name in names:
      row, peak = measure(name, dtype)
      rows.append(row)
      peaks[dtype] = max(peaks.get(dtype, 0.0), peak)
  headers = ["network", "dtype", "JAX patches/s", "JAX GFLOP/s", "JAX MFU", "PyTorch patches/s",
             "PyTorch GFLOP/s", "PyTorch MFU", "JAX / PyTorch (middle half of rounds)"]
  peak_text = ", ".join(f"{d} {p:.0f} GFLOP/s" for d, p in peaks.items())
  common.report("step", f"Train step, batch {FLAGS.batch_size} of {FLAGS.patch_size}x{FLAGS.patch_size}, median of "
                f"{FLAGS.repeats} interleaved rounds; best matmul peak {peak_text}",
                common.markdown_table(headers, rows), FLAGS.record,
                {"headers": headers, "rows": rows, "matmul_peak_gflops": peaks})
