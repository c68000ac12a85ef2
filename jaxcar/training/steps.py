"""Pure, jitted train and apply steps, sharded with NamedSharding over a one-axis `data` mesh.

The batch is split over every device of every process (`P("data")`); parameters, optimizer state and
metrics are replicated (`P()`), so gradients of the global batch are reduced by the compiler, no pmap
and no explicit pmean. The state is donated: each step updates it in place.
"""

import functools
from typing import Any, Callable

import flax.struct
import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec as P
import numpy as np
import optax

from jaxcar.data import prepare
from jaxcar.ops import conv

DATA_AXIS = "data"


@flax.struct.dataclass
class TrainState:
  step: jax.Array         # int32 scalar: optimizer steps taken
  params: Any
  opt_state: Any
  ema_params: Any         # parameter EMA, or None when config.ema_decay == 0
  rng: jax.Array          # raw uint32 key; each step folds in its step number


def make_mesh(devices=None) -> jax.sharding.Mesh:
  """A one-axis mesh over `devices` (default: every device of every process)."""
  devices = jax.devices() if devices is None else devices
  return jax.make_mesh((len(devices),), (DATA_AXIS,), axis_types=(jax.sharding.AxisType.Auto,), devices=devices)


def replicated(mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharded(mesh) -> NamedSharding:
  return NamedSharding(mesh, P(DATA_AXIS))


# What a train step reads (not the loader's "quality"); "maps" only in batches from the workers.
DEVICE_KEYS = ("inputs", "maps", "global_inputs", "targets")


def global_batch(local_batch: dict, mesh) -> dict:
  """This process's slice of the batch (numpy) -> global arrays split over all devices."""
  sharding = batch_sharded(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
          for k, v in local_batch.items() if k in DEVICE_KEYS}


def global_replicated(tree, mesh):
  """Host data every process holds in full -> replicated global arrays."""
  sharding = replicated(mesh)
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), tree)


def model_batch(batch: dict, value_range: str | None, global_size: int = 0) -> dict:
  """A batch as the workers ship it -> the model's float32 inputs and targets; traced inside the steps.

  Workers send uint8 `inputs`/`targets` and one 8x8 period of the quantization maps (`maps`;
  `transforms.to_model_batch`), a fifth of the bytes of floats. Here they become exactly the arrays
  `prepare.batch_model_inputs` makes on the host: each uint8 value is looked up in a 256-entry table
  of the host's own `to_model_range` values (arithmetic here could round differently: a compiler may
  fuse x * scale + offset into one FMA), and the maps are the period tiled (a copy). With
  `global_size` > 0 (config.data.global_size), QGCN's global image is made here too (`_global_images`),
  within float32 rounding of the host's (a matrix product), not bit for bit. A batch whose `inputs`
  are already floats (tests, the step benchmark) passes through unchanged.
  """
  if batch["inputs"].dtype != jnp.uint8:
    return batch
  if value_range is None:
    raise ValueError("a uint8 batch needs the data's value_range to become model inputs")
  table = jnp.asarray(prepare.to_model_range(np.arange(256, dtype=np.uint8), value_range))
  image = table[batch["inputs"].astype(jnp.int32)]
  inputs = image
  if "maps" in batch:
    period = batch["maps"]
    height, width = image.shape[1:3]
    maps = jnp.tile(period, (1, -(-height // period.shape[1]), -(-width // period.shape[2]), 1))
    inputs = jnp.concatenate([image, maps[:, :height, :width].astype(image.dtype)], axis=-1)
  result = {"inputs": inputs, "targets": table[batch["targets"].astype(jnp.int32)]}
  if global_size > 0:
    result["global_inputs"] = _global_images(batch["inputs"], global_size, value_range)
  return result


def _global_images(images: jax.Array, size: int, value_range: str) -> jax.Array:
  """`prepare.global_images` of (B, H, W, C) uint8 on the device: the same cached resize matrices, in
  the same order, clip and scale: workers shipping the 112x112 float32 images (150 kB per patch) spent
  more on shared-memory page faults than on the patch. HIGHEST: TPUs would otherwise use bf16 passes."""
  height, width = images.shape[1:3]
  across_width, across_height, scale, offset = prepare.global_image_constants(height, width, size, value_range)
  highest = jax.lax.Precision.HIGHEST
  # As einsums over the channels-last images: on CPU within 6e-8 of the host's products, 95% bit for
  # bit; flattening them to 2-D dots first (less CPU) strayed up to 5.4e-7, past the pinned 5e-7.
  centred = images.astype(jnp.float32) - 128.0
  across = jnp.einsum("bhwc,wx->bhxc", centred, across_width, precision=highest)
  resized = jnp.einsum("bhxc,hy->byxc", across, across_height, precision=highest)
  # skimage clips to each image's own range (all channels), as prepare.global_image does.
  low = jnp.min(images, axis=(1, 2, 3), keepdims=True).astype(jnp.float32) - 128.0
  high = jnp.max(images, axis=(1, 2, 3), keepdims=True).astype(jnp.float32) - 128.0
  return jnp.clip(resized, low, high) * scale + offset


def model_inputs(batch: dict) -> tuple:
  """The positional inputs of a network: (image,) or QGCN's (image, global_image)."""
  if "global_inputs" in batch:
    return batch["inputs"], batch["global_inputs"]
  return (batch["inputs"],)


def init_state(params, tx: optax.GradientTransformation, seed: int, ema_decay: float) -> TrainState:
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                    ema_params=params if ema_decay > 0 else None,
                    rng=jax.random.PRNGKey(seed))


def ema_update(ema, params, decay: float):
  return jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p, ema, params)


def make_train_step(model, tx, loss_fn: Callable, mesh, ema_decay: float = 0.0, value_range: str | None = None,
                    global_size: int = 0):
  """`step(state, batch) -> (state, metrics)`, jitted with shardings and the state donated.

  `value_range` and `global_size` (config.data's) turn the workers' uint8 batches into model inputs
  on the device (`model_batch`); float batches need neither."""

  def step(state: TrainState, batch: dict):
    batch = model_batch(batch, value_range, global_size)
    rngs = {"dropout": jax.random.fold_in(state.rng, state.step)}

    def loss_of(params):
      restored = model.apply({"params": params}, *model_inputs(batch), rngs=rngs)
      return loss_fn(restored.astype(jnp.float32), batch["targets"])

    loss, grads = jax.value_and_grad(loss_of)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    ema = ema_update(state.ema_params, params, ema_decay) if ema_decay > 0 else None
    metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads), "param_norm": optax.tree.norm(params)}
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state, ema_params=ema), metrics

  return jax.jit(with_split_batch(step, mesh), in_shardings=(replicated(mesh), batch_sharded(mesh)),
                 out_shardings=(replicated(mesh), replicated(mesh)), donate_argnums=0)


def with_split_batch(step_fn: Callable, mesh) -> Callable:
  """`step_fn`, traced so that its convolutions run on each device's slice of the batch (on CPU
  meshes through oneDNN, `conv.batch_split_over`; unchanged elsewhere)."""

  @functools.wraps(step_fn)
  def traced(*args):
    with conv.batch_split_over(mesh):
      return step_fn(*args)

  return traced


def make_apply(model, mesh):
  """`apply(params, *inputs) -> restored` on whole images, replicated (every process runs it alike)."""

  def apply(params, *inputs):
    return model.apply({"params": params}, *inputs).astype(jnp.float32)

  return jax.jit(apply, out_shardings=replicated(mesh))
