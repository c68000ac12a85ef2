"""The optax optimizer and learning-rate schedule a config describes.

Schedules (all in optimizer steps, so epoch-based recipes are converted in the config files):
- "constant".
- "step": lr * decay_factor ** k after the k-th boundary; boundaries at `decay_start` (default
  `decay_steps`) and every `decay_steps` after it. DACAR's Keras schedule
  lr = 0.002 * 0.1 ** floor((epoch + 1) / 20) is decay_start = 19 epochs, decay_steps = 20 epochs.
- "cosine": linear warm-up from 0 over `warmup_steps`, then a cosine decay to
  `learning_rate * final_fraction` at `num_steps` (jaxcar's zoo recipes).
- "restorer_halving": the Image Restorer's coded quirk: after every epoch whose (index + 1) is *not* a
  multiple of `halving_period`, the lr is halved (epoch length = `decay_steps`).
`reset_at_decay`: the optimizer restarts from its initial state (moments and bias-correction count) at
every lr change of a "step" or "restorer_halving" schedule, as the Image Restorer's Training.py did by
creating a new Adam at each halving.
"""

import inspect
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import optax


def schedule(opt: ml_collections.ConfigDict, num_steps: int) -> optax.Schedule:
  lr = opt.learning_rate
  if opt.schedule == "constant":
    return optax.constant_schedule(lr)
  if opt.schedule == "cosine":
    return optax.warmup_cosine_decay_schedule(0.0, lr, opt.warmup_steps, num_steps, lr * opt.final_fraction)
  if opt.schedule in ("step", "restorer_halving"):
    return optax.piecewise_constant_schedule(lr, decay_boundaries(opt, num_steps))
  raise ValueError(f"unknown optimizer.schedule {opt.schedule!r}; valid: constant, step, cosine, restorer_halving")


def decay_boundaries(opt: ml_collections.ConfigDict, num_steps: int) -> dict[int, float]:
  """{step: factor the lr is multiplied by from that step on} of a "step" or "restorer_halving" schedule."""
  if opt.decay_steps <= 0:
    raise ValueError(f"optimizer.schedule={opt.schedule!r} needs optimizer.decay_steps > 0")
  if opt.schedule == "step":
    first = opt.get("decay_start", 0) or opt.decay_steps
    return {b: opt.decay_factor for b in range(first, num_steps, opt.decay_steps)}
  epochs = range(num_steps // opt.decay_steps)
  halvings = [e for e in epochs if (e + 1) % opt.get("halving_period", 20) != 0]
  return {(e + 1) * opt.decay_steps: 0.5 for e in halvings}


def optimizer(opt: ml_collections.ConfigDict, num_steps: int) -> optax.GradientTransformation:
  """`optax.<name>` with the schedule and whichever of b1/b2/eps it accepts; optional global-norm clip."""
  factory = getattr(optax, opt.name, None)
  if factory is None or not callable(factory):
    raise ValueError(f"unknown optimizer.name {opt.name!r}; use an optax optimizer such as adam, adamax, sgd")
  accepted = inspect.signature(factory).parameters
  hyper = {k: opt[k] for k in ("b1", "b2", "eps") if k in accepted and k in opt}
  if opt.get("reset_at_decay", False) and opt.schedule != "constant":  # a constant lr never changes
    tx = _reset_at_decay(factory, hyper, opt, num_steps)
  else:
    tx = factory(learning_rate=schedule(opt, num_steps), **hyper)
  if opt.grad_clip_norm > 0:
    tx = optax.chain(optax.clip_by_global_norm(opt.grad_clip_norm), tx)
  return tx


def _reset_at_decay(factory, hyper: dict, opt: ml_collections.ConfigDict, num_steps: int):
  """`factory`'s optimizer at lr 1, restarted at every lr change, then scaled by the schedule.

  The schedule sits outside the reset so its own step count runs on; scaling the lr-1 update by
  schedule(count) is exactly what `factory(learning_rate=schedule)` computes for Adam-type optimizers
  (their update is linear in the lr).
  """
  if opt.schedule not in ("step", "restorer_halving"):
    raise ValueError(f"optimizer.reset_at_decay needs a 'step' or 'restorer_halving' schedule, not {opt.schedule!r}")
  restarting = restart_at(factory(learning_rate=1.0, **hyper), sorted(decay_boundaries(opt, num_steps)))
  return optax.chain(restarting, optax.scale_by_schedule(schedule(opt, num_steps)))


class RestartState(NamedTuple):
  count: jax.Array  # updates applied so far
  inner: Any


def restart_at(tx: optax.GradientTransformation, steps: list[int]) -> optax.GradientTransformation:
  """`tx`, whose state is replaced by a fresh `tx.init` just before the update of each step in `steps`."""
  restart_steps = jnp.asarray(steps or [-1], jnp.int32)

  def init(params):
    return RestartState(jnp.zeros([], jnp.int32), tx.init(params))

  def update(updates, state, params=None):
    fresh = jnp.any(state.count == restart_steps)
    initial = tx.init(params if params is not None else updates)
    inner = jax.tree.map(lambda new, old: jnp.where(fresh, new, old), initial, state.inner)
    updates, inner = tx.update(updates, inner, params)
    return updates, RestartState(optax.safe_int32_increment(state.count), inner)

  return optax.GradientTransformation(init, update)
