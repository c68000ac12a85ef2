"""The optax optimizer and learning-rate schedule a config describes.

Schedules (all in optimizer steps, so epoch-based recipes are converted in the config files):
- "constant".
- "step": lr * decay_factor ** k after the k-th boundary; boundaries at `decay_start` (default
  `decay_steps`) and every `decay_steps` after it. DACAR's Keras schedule
  lr = 0.002 * 0.1 ** floor((epoch + 1) / 20) is decay_start = 19 epochs, decay_steps = 20 epochs.
- "cosine": linear warm-up from 0 over `warmup_steps`, then a cosine decay to
  `learning_rate * final_fraction` at `num_steps` (jaxcar's zoo recipes).
- "restorer_halving": the Image Restorer's coded quirk: after every epoch whose (index + 1) is *not* a
  multiple of `halving_period`, the lr is halved (epoch length = `decay_steps`). The seed also
  recreated Adam at each halving; that reset is not reproduced (moments carry over).
"""

import inspect

import ml_collections
import optax


def schedule(opt: ml_collections.ConfigDict, num_steps: int) -> optax.Schedule:
  lr = opt.learning_rate
  if opt.schedule == "constant":
    return optax.constant_schedule(lr)
  if opt.schedule == "cosine":
    return optax.warmup_cosine_decay_schedule(0.0, lr, opt.warmup_steps, num_steps, lr * opt.final_fraction)
  if opt.decay_steps <= 0:
    raise ValueError(f"optimizer.schedule={opt.schedule!r} needs optimizer.decay_steps > 0")
  if opt.schedule == "step":
    first = opt.get("decay_start", 0) or opt.decay_steps
    boundaries = range(first, num_steps, opt.decay_steps)
    return optax.piecewise_constant_schedule(lr, {b: opt.decay_factor for b in boundaries})
  if opt.schedule == "restorer_halving":
    epochs = range(num_steps // opt.decay_steps)
    halvings = [e for e in epochs if (e + 1) % opt.get("halving_period", 20) != 0]
    return optax.piecewise_constant_schedule(lr, {(e + 1) * opt.decay_steps: 0.5 for e in halvings})
  raise ValueError(f"unknown optimizer.schedule {opt.schedule!r}; valid: constant, step, cosine, restorer_halving")


def optimizer(opt: ml_collections.ConfigDict, num_steps: int) -> optax.GradientTransformation:
  """`optax.<name>` with the schedule and whichever of b1/b2/eps it accepts; optional global-norm clip."""
  factory = getattr(optax, opt.name, None)
  if factory is None or not callable(factory):
    raise ValueError(f"unknown optimizer.name {opt.name!r}; use an optax optimizer such as adam, adamax, sgd")
  accepted = inspect.signature(factory).parameters
  hyper = {k: opt[k] for k in ("b1", "b2", "eps") if k in accepted and k in opt}
  tx = factory(learning_rate=schedule(opt, num_steps), **hyper)
  if opt.grad_clip_norm > 0:
    tx = optax.chain(optax.clip_by_global_norm(opt.grad_clip_norm), tx)
  return tx
