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


DEVICE_KEYS = ("inputs", "global_inputs", "targets")  # what a train step reads (not the loader's "quality")


def global_batch(local_batch: dict, mesh) -> dict:
  """This process's slice of the batch (numpy) -> global arrays split over all devices."""
  sharding = batch_sharded(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
          for k, v in local_batch.items() if k in DEVICE_KEYS}


def global_replicated(tree, mesh):
  """Host data every process holds in full -> replicated global arrays."""
  sharding = replicated(mesh)
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), tree)


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


def make_train_step(model, tx, loss_fn: Callable, mesh, ema_decay: float = 0.0):
  """`step(state, batch) -> (state, metrics)`, jitted with shardings and the state donated."""

  def step(state: TrainState, batch: dict):
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
