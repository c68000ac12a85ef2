"""Orbax checkpoints of a training run, and how other tools read them back.

Layout under `workdir` (a local path or anything etils/Orbax supports, e.g. gs://bucket/run):
  config.json                        the run's config (written once by process 0)
  checkpoints/<step>/state/          the train state pytree (Orbax StandardSave): step, params,
                                     opt_state, ema_params, rng; NoGAN: {"generator": ..., "discriminator": ...}
  checkpoints/<step>/data/           the Grain iterator position, one process_<i>-of-<n>.json per process
Saving is asynchronous, decided by a fixed-interval policy, keeps the latest `keep_checkpoints`.
"""

import json

from etils import epath
import grain
import jax
import ml_collections
import orbax.checkpoint as ocp

CHECKPOINT_DIR = "checkpoints"

# Replica-parallel saving splits each replicated array over its replicas, compiling one slice per
# device and array: ~40 compiles (20 s on a busy CPU) per first save for a network of a few MB. These
# networks are at most ~50 MB, so one replica writes each array whole.
ocp.type_handlers.register_type_handler(jax.Array, ocp.type_handlers.ArrayHandler(use_replica_parallel=False),
                                        override=True)
CONFIG_FILE = "config.json"


class CheckpointMismatch(ValueError):
  """A checkpoint in the workdir that does not fit the current config."""


def manager(workdir, config: ml_collections.ConfigDict) -> ocp.CheckpointManager:
  policies = ocp.checkpoint_managers
  options = ocp.CheckpointManagerOptions(
      save_decision_policy=policies.FixedIntervalPolicy(config.checkpoint_every),
      preservation_policy=policies.LatestN(config.keep_checkpoints),
      enable_async_checkpointing=True, create=True)
  return ocp.CheckpointManager(epath.Path(workdir) / CHECKPOINT_DIR, options=options)


def save(mngr: ocp.CheckpointManager, step: int, state, iterator, force: bool = False) -> bool:
  args = ocp.args.Composite(state=ocp.args.StandardSave(state), data=grain.checkpoint.CheckpointSave(iterator))
  return mngr.save(step, args=args, force=force)


def restore_latest(mngr: ocp.CheckpointManager, abstract_state, iterator):
  """(state, step) from the latest checkpoint, moving `iterator` to its saved position; (None, 0) if none."""
  step = mngr.latest_step()
  if step is None:
    return None, 0
  args = ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state),
                            data=grain.checkpoint.CheckpointRestore(iterator))
  try:
    restored = mngr.restore(step, args=args)
  except (ValueError, KeyError, TypeError) as e:
    raise CheckpointMismatch(
        f"the checkpoint at step {step} in {mngr.directory} does not match this config "
        f"({str(e).splitlines()[0][:200]}); use a fresh --workdir or the config it was trained with") from None
  return restored["state"], step


def write_config(workdir, config: ml_collections.ConfigDict):
  if jax.process_index() == 0:
    (epath.Path(workdir) / CONFIG_FILE).write_text(config.to_json_best_effort(indent=2))


def read_config(workdir) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(json.loads((epath.Path(workdir) / CONFIG_FILE).read_text()))


def restore_params(workdir, config: ml_collections.ConfigDict | None = None, step: int | None = None):
  """The restoring network's parameters (EMA when the run kept one) at `step` (default: latest).

  Needs no optimizer or model: the state is read as saved, so `config` is not needed either (accepted
  so callers can pass what they have). For NoGAN it is the generator's.
  """
  directory = epath.Path(workdir) / CHECKPOINT_DIR
  mngr = ocp.CheckpointManager(directory, options=ocp.CheckpointManagerOptions(read_only=True))
  step = mngr.latest_step() if step is None else step
  if step is None:
    raise FileNotFoundError(f"no checkpoint in {directory}; train first with python -m jaxcar.train")
  state = mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))["state"]
  state = state.get("generator", state)
  return state["ema_params"] if state.get("ema_params") is not None else state["params"]
