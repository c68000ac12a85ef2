"""Orbax checkpoints of a training run, and how other tools read them back.

Layout under `workdir` (a local path or anything etils/Orbax supports, e.g. gs://bucket/run):
  config.json                        the run's config (written once by process 0)
  checkpoints/<step>/state/          the train state pytree (Orbax StandardSave): step, params,
                                     opt_state, ema_params, rng; NoGAN: {"generator": ..., "discriminator": ...}
  checkpoints/<step>/data/           the Grain iterator position, one process_<i>-of-<n>.json per process
  best/<step>/state/                 with config.keep_best: the state of the best validation PSNR so far
  checkpoints_corrupt/<step>/       a damaged checkpoint `resume` set aside (never deleted) before
                                     falling back to the newest intact one
Saving is asynchronous, decided by a fixed-interval policy, keeps the latest `keep_checkpoints`. A
failed save (a full disk) is one `SaveError` line; the older checkpoints stay.
"""

import contextlib
import functools
import json
import logging as std_logging
import os
import re

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
CORRUPT_DIR = "checkpoints_corrupt"


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


class SaveError(OSError):
  """A checkpoint could not be written (full disk, lost permission): one line naming where and why."""


def manager(workdir, config: ml_collections.ConfigDict) -> ocp.CheckpointManager:
  _write_arrays_whole()
  policies = ocp.checkpoint_managers
  options = ocp.CheckpointManagerOptions(
      save_decision_policy=policies.FixedIntervalPolicy(config.checkpoint_every),
      preservation_policy=policies.LatestN(config.keep_checkpoints),
      enable_async_checkpointing=True, create=True,
      cleanup_tmp_directories=True)  # the half-written step of a failed save (a full disk) goes on restart
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
  """Starts an asynchronous save of `step` if due (or `force`); SaveError if this or the previous
  save failed (Orbax reports a background save's failure at the next call)."""
  args = ocp.args.Composite(state=ocp.args.StandardSave(state), data=grain.checkpoint.CheckpointSave(iterator))
  try:
    return mngr.save(step, args=args, force=force)
  except Exception as error:  # pylint: disable=broad-except  (Orbax/TensorStore raise ValueError, Exception)
    raise SaveError(_save_failure(mngr.directory, error)) from None


def finish(mngr: ocp.CheckpointManager) -> None:
  """Waits for the save in flight and closes the manager; SaveError (one line) if that save failed."""
  try:
    mngr.wait_until_finished()
  except Exception as error:  # pylint: disable=broad-except
    raise SaveError(_save_failure(mngr.directory, error)) from None
  finally:
    with contextlib.suppress(Exception):
      mngr.close()


def kept_note(workdir) -> str:
  """What is left to resume from after a failure: "the checkpoint at step N in DIR is kept"."""
  try:
    step = latest_step(workdir)
  except Exception:  # pylint: disable=broad-except  (a note about a failure must not fail itself)
    step = None
  if step is None:
    return "no checkpoint was saved yet"
  return (f"the checkpoint at step {step} in {checkpoint_dir(workdir)} is kept: fix the cause (free space), "
          f"then rerun the same command to resume")


def _save_failure(directory, error: BaseException) -> str:
  return f"could not save a checkpoint in {directory} ({_cause(error)})"


_ERRNO = re.compile(r"(?:os_error_code='?|\[Errno )(\d+)")


def _cause(error: BaseException) -> str:
  """The operating system's reason ("No space left on device") if there is one, else the first line."""
  seen = error
  while seen is not None:
    if isinstance(seen, OSError) and seen.strerror:
      return seen.strerror + (f": {seen.filename}" if seen.filename else "")
    seen = seen.__cause__ or seen.__context__
  text = str(error)
  found = _ERRNO.search(text)
  if found:
    return os.strerror(int(found.group(1)))
  return (text.splitlines() or [type(error).__name__])[0][:200]


class _BackgroundTracebacksAsInfo(std_logging.Filter):
  """Orbax logs a failed background save as several ERROR records with tracebacks, one per thread;
  jaxcar raises one SaveError line instead, so those records are lowered to INFO (--verbosity shows them)."""

  def filter(self, record: std_logging.LogRecord) -> bool:
    if record.exc_info and record.levelno >= std_logging.ERROR and f"{os.sep}orbax{os.sep}" in record.pathname:
      record.levelno, record.levelname = std_logging.INFO, "INFO"
    return True


@contextlib.contextmanager
def background_tracebacks_as_info():
  quiet = _BackgroundTracebacksAsInfo()
  logger = logging.get_absl_logger()
  logger.addFilter(quiet)
  try:
    yield
  finally:
    logger.removeFilter(quiet)


def resume(mngr: ocp.CheckpointManager, abstract_state, iterator):
  """(state, step) from the newest intact checkpoint, moving `iterator` to its saved position; (None, 0)
  if none.

  A damaged checkpoint (a truncated or garbled file; its tree fits `abstract_state` or cannot be read)
  is moved to WORKDIR/checkpoints_corrupt/<step> with a one-line warning and the previous one is tried.
  A checkpoint whose tree differs (another config) is a CheckpointMismatch.
  """
  for step in sorted(mngr.all_steps(), reverse=True):
    args = ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state),
                              data=grain.checkpoint.CheckpointRestore(iterator))
    try:
      restored = mngr.restore(step, args=args)
    except Exception as error:  # pylint: disable=broad-except  (TensorStore raises bare Exception)
      reason = str(error).splitlines()[0][:200] if str(error) else type(error).__name__
      if _fits(mngr.directory, step, abstract_state) is False:
        raise CheckpointMismatch(
            f"the checkpoint at step {step} in {mngr.directory} does not match this config "
            f"({reason}); use a fresh --workdir or the config it was trained with") from None
      aside = _set_aside(mngr.directory, step)
      logging.warning("the checkpoint at step %d is damaged (%s); moved it to %s and trying the previous one",
                      step, reason[:120], aside)
      mngr.reload()
      continue
    return restored["state"], step
  return None, 0


def _fits(directory, step: int, abstract_state) -> bool | None:
  """Whether the saved state's tree (paths and shapes) is `abstract_state`'s; None if unreadable."""
  try:
    reader = _reader_at(epath.Path(directory))
    saved = reader.item_metadata(step)["state"].tree
    reader.close()
  except Exception:  # pylint: disable=broad-except  (a damaged metadata file: any error)
    return None
  return _shapes(saved) == _shapes(abstract_state)


def _shapes(tree) -> dict:
  def name(key):
    return str(next(getattr(key, a) for a in ("key", "name", "idx") if hasattr(key, a)))
  return {"/".join(map(name, path)): tuple(getattr(leaf, "shape", ()))
          for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _set_aside(directory, step: int) -> epath.Path:
  """Moves checkpoints/<step> to checkpoints_corrupt/<step> (or <step>.1, ... if taken): kept, not deleted."""
  directory = epath.Path(directory)
  folder = directory.parent / CORRUPT_DIR
  target = folder / str(step)
  if jax.process_index() == 0:
    folder.mkdir(parents=True, exist_ok=True)
    copy = 0
    while target.exists():
      copy += 1
      target = folder / f"{step}.{copy}"
    (directory / str(step)).rename(target)
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
    multihost_utils.sync_global_devices(f"jaxcar_set_aside_{step}")
  return target


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
  return _reader_at(checkpoint_dir(workdir, folder))


def _reader_at(directory: epath.Path) -> ocp.CheckpointManager:
  # Not `read_only`: Orbax logs four warnings for it; a manager that is never asked to save writes nothing.
  # Both items' handlers are named so that reading the metadata does not warn about the other one.
  handlers = {"state": ocp.StandardCheckpointHandler(), "data": grain.checkpoint.CheckpointHandler()}
  return ocp.CheckpointManager(directory, item_handlers=handlers, options=ocp.CheckpointManagerOptions(create=False))
