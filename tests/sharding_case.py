"""A fixed tiny training problem shared by the single-process and multi-process sharding tests."""

import jax
import numpy as np

from jaxcar import cli, models
from jaxcar.training import losses, optim, steps

GLOBAL_BATCH, PATCH, NUM_STEPS = 8, 16, 3


def global_batch_numpy() -> dict:
  rng = np.random.default_rng(0)
  targets = rng.uniform(0, 1, (GLOBAL_BATCH, PATCH, PATCH, 1)).astype(np.float32)
  inputs = np.clip(targets + rng.normal(0, 0.1, targets.shape), 0, 1).astype(np.float32)
  return {"inputs": inputs, "targets": targets}


def train(devices, local_batch: dict):
  """Losses of NUM_STEPS steps on the same batch, and the final params as host numpy leaves."""
  config = cli.load_config("dacar4:small")
  mesh = steps.make_mesh(devices)
  model = models.create("dacar4")
  tx = optim.optimizer(config.optimizer, NUM_STEPS)
  params = models.init(model, jax.random.PRNGKey(0), PATCH, PATCH)["params"]
  state = steps.global_replicated(steps.init_state(params, tx, 0, 0.0), mesh)
  step = steps.make_train_step(model, tx, losses.mse, mesh)
  batch = steps.global_batch(local_batch, mesh)
  losses_seen = []
  for _ in range(NUM_STEPS):
    state, metrics = step(state, batch)
    losses_seen.append(float(metrics["loss"]))
  leaves = [np.asarray(x.addressable_data(0)) for x in jax.tree_util.tree_leaves(state.params)]
  return losses_seen, leaves
