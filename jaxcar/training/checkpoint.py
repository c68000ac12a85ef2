"""Orbax checkpoints of a training run, and how other tools read them back.

Layout under `workdir` (a local path or anything etils/Orbax supports, e.g. gs://bucket/run):
  config.json                        the run's config (written once by process 0)
  checkpoints/<step>/state/          the train state pytree (Orbax StandardSave): step, params,
                                     opt_state, ema_params, rng; NoGAN: {"generator": ..., "discriminator": ...}
  checkpoints/<step>/data/           the Grain iterator position, one process_<i>-of-<n>.json per process
  best/<step>/state/                 with config.keep_best: the state of the best validation PSNR so far
Saving is asynchronous, decided by a fixed-interval policy, keeps the latest `keep_checkpoints`.
"""

import functools
import json

from absl import logging
from etils import epath
import grain
import jax
import ml_collections
import orbax.checkpoint as ocp

from jaxcar import paths

CHECKPOINT_DIR = "checkpoints"
BEST_DIR = "best"
CONFIG_FILE = "config.json"


@functools.cache
def _write_arrays_whole():
  """Replica-parallel saving splits each replicated array over its replicas, compiling one slice per
  device and array: ~40 compiles (20 s on a busy CPU) per first save for a network of a few MB. These
  networks are at most ~50 MB, so one replica writes each array whole.

  Orbax takes this only as a process-wide handler, so it is installed when jaxcar first makes a
  checkpoint manager (once), not when this module is imported."""
  # Orbax logs a warning for every override; this one is jaxcar's own choice, not news to a user.
  is_not_the_notice = lambda record: "overriding" not in record.getMessage()
  logging.get_absl_logger().addFilter(is_not_the_notice)
  try:
    ocp.type_handlers.register_type_handler(jax.Array, ocp.type_handlers.ArrayHandler(use_replica_parallel=False),
                                            override=True)
  finally:
    logging.get_absl_logger().removeFilter(is_not_the_notice)


class CheckpointMismatch(ValueError):
  """A checkpoint in the workdir that does not fit the current config."""


def manager(workdir, config: ml_collections.ConfigDict) -> ocp.CheckpointManager:
  _write_arrays_whole()
  policies = ocp.checkpoint_managers
  options = ocp.CheckpointManagerOptions(
      save_decision_policy=policies.FixedIntervalPolicy(config.checkpoint_every),
      preservation_policy=policies.LatestN(config.keep_checkpoints),
      enable_async_checkpointing=True, create=True)
  return ocp.CheckpointManager(checkpoint_dir(workdir), options=options)


def checkpoint_dir(workdir, folder: str = CHECKPOINT_DIR) -> epath.Path:
  """WORKDIR/checkpoints (or another `folder`), absolute: Orbax refuses relative paths, users type them."""
  return epath.Path(paths.absolute(workdir)) / folder


def best_manager(workdir) -> ocp.CheckpointManager:
  """WORKDIR/best: one state, the one with the highest validation PSNR saved so far. Orbax ranks by the
  metrics stored beside each save, so the best survives a resume."""
  _write_arrays_whole()
  options = ocp.CheckpointManagerOptions(max_to_keep=1, best_fn=lambda metrics: metrics["psnr"], best_mode="max",
                                         enable_async_checkpointing=False, create=True)
  return ocp.CheckpointManager(checkpoint_dir(workdir, BEST_DIR), options=options)


def save_if_best(mngr: ocp.CheckpointManager, step: int, state, psnr: float) -> None:
  """Offers the state validated at `step` to the best manager, which keeps it only if `psnr` is the best.

  A resumed run validates some steps again with identical parameters; those are skipped.
  """
  if step not in mngr.all_steps():
    mngr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state)), metrics={"psnr": float(psnr)})


def save(mngr: ocp.CheckpointManager, step: int, state, iterator, force: bool = False) -> bool:
  args = ocp.args.Composite(state=ocp.args.StandardSave(state), data=grain.checkpoint.CheckpointSave(iterator))
  return mngr.save(step, args=args, force=force)


def resume(mngr: ocp.CheckpointManager, abstract_state, iterator):
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


def load_params(workdir, config: ml_collections.ConfigDict | None = None, step: int | None = None):
  """The restoring network's parameters (EMA when the run kept one) at `step` (default: the best
  validation state of a `keep_best` run, else the latest).

  Needs no optimizer or model: the state is read as saved, so `config` is not needed either (accepted
  so callers can pass what they have). For NoGAN it is the generator's.
  """
  mngr = _reader(workdir)
  if step is None and best_step(workdir) is not None:
    mngr, step = _reader(workdir, BEST_DIR), best_step(workdir)
    logging.info("using the best-validation parameters of %s (step %d)", workdir, step)
  step = mngr.latest_step() if step is None else step
  if step is None:
    raise FileNotFoundError(f"no checkpoint in {mngr.directory}; train first with python -m jaxcar.train")
  # Onto this process's first device, whatever mesh saved it: a pod's or 8-device checkpoint on a laptop.
  on_device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  target = jax.tree.map(lambda saved: jax.ShapeDtypeStruct(saved.shape, saved.dtype, sharding=on_device),
                        mngr.item_metadata(step)["state"].tree)
  state = mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target)))["state"]
  state = state.get("generator", state)
  return state["ema_params"] if state.get("ema_params") is not None else state["params"]


def latest_step(workdir) -> int | None:
  """The step of the newest checkpoint in `workdir`, or None."""
  return _reader(workdir).latest_step()


def best_step(workdir) -> int | None:
  """The step of the best-validation state a `keep_best` run kept, or None."""
  if not checkpoint_dir(workdir, BEST_DIR).is_dir():
    return None
  return _reader(workdir, BEST_DIR).latest_step()  # the folder holds only the best one


def _reader(workdir, folder: str = CHECKPOINT_DIR) -> ocp.CheckpointManager:
  # Not `read_only`: Orbax logs four warnings for it; a manager that is never asked to save writes nothing.
  # Both items' handlers are named so that reading the metadata does not warn about the other one.
  handlers = {"state": ocp.StandardCheckpointHandler(), "data": grain.checkpoint.CheckpointHandler()}
  return ocp.CheckpointManager(checkpoint_dir(workdir, folder), item_handlers=handlers,
                               options=ocp.CheckpointManagerOptions(create=False))
