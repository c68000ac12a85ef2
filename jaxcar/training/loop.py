"""`train_and_evaluate(config, workdir)`: the whole training run, flag-free so tests call it directly.

Resumes from the latest checkpoint in `workdir` (state, RNG and the data iterator's position), so an
interrupted run continues with exactly the batch it would have seen. SIGTERM/SIGINT save a checkpoint
and return cleanly; with several processes, a signal to any one stops all of them at the same step,
and one that comes while the run starts ends it, on every process, before its first step. A
non-finite loss stops the run without saving, keeping the last good checkpoint.
With `config.keep_best`, every validation also offers the state to WORKDIR/best (the best one stays).

Before anything is created or compiled the config is checked (`config_checks.check`), and process 0
locks the workdir (WORKDIR/.lock) so a second run on it at once stops with one line naming the first.
A failed checkpoint or metrics write (a full disk) ends the run with one line naming the file and the
cause, after waiting for the save in flight, so the last good checkpoint stays.
"""

import datetime
import fcntl
import os
import socket
import time

from etils import epath
import jax
import ml_collections
import numpy as np

from jaxcar import paths
from jaxcar.ops import conv
from jaxcar.training import checkpoint, config_checks, distributed, steps, validation, writers

LOCK_FILE = ".lock"


class NonFiniteLoss(FloatingPointError):
  """The loss became NaN or Inf; the last good checkpoint is kept."""


class WorkdirError(OSError):
  """The workdir cannot be created or written."""


class WorkdirBusy(WorkdirError):
  """Another training run holds the workdir's lock."""


class RunWriteFailed(OSError):
  """A checkpoint or a run output could not be written; the message says what is kept."""


def make_trainer(config, mesh):
  if "nogan" in config:
    from jaxcar.training import nogan  # pylint: disable=import-outside-toplevel
    return nogan.NoGANTrainer(config, mesh)
  from jaxcar.training import supervised  # pylint: disable=import-outside-toplevel
  return supervised.SupervisedTrainer(config, mesh)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir) -> dict:
  """Train until `config.num_steps`; returns the last logged metrics (and validation PSNR)."""
  config_checks.check(config)  # first: a bad value costs nothing and leaves no files behind
  stop = distributed.StopRequest()
  if jax.process_count() > 1:
    # Now, not after the slow start (data, compiles, restore): once jax.distributed is up, JAX's own
    # preemption notifier takes a SIGTERM no handler of ours is there for, and the run would train on.
    stop.install()
  try:
    conv.set_backend(config.get("cpu_conv", "auto"))  # runs saved before the field had none
    devices = mesh_devices(config)
    _check_batch(config, len(devices))
    _prepare_workdir(workdir)
    lock = lock_workdir(workdir)
    try:
      with checkpoint.background_tracebacks_as_info():
        return _train(config, workdir, devices, stop)
    finally:
      unlock_workdir(lock)
  finally:
    stop.uninstall()


def _train(config, workdir, devices, stop) -> dict:
  mesh = steps.make_mesh(devices)
  trainer = make_trainer(config, mesh)
  iterator = _train_iterator(config)
  mngr = checkpoint.manager(workdir, config)
  try:
    state, start_step = checkpoint.resume(mngr, trainer.abstract_state(), iterator)
  except BaseException:
    mngr.close()
    raise
  resumed_step = None if state is None else start_step
  if state is None:
    state = trainer.init_state()
  else:
    writers.log(f"resumed from the checkpoint at step {start_step} in {workdir}")
  stop.install()  # (one process: here, so that Ctrl-C while starting interrupts at once)
  best = writer = None
  try:
    checkpoint.write_config(workdir, config)
    examples = validation.load(config.data, trainer.size_multiple)
    best = checkpoint.best_manager(workdir) if config.get("keep_best", False) else None
    writer = writers.RunWriter(workdir, resumed_step=resumed_step)
    last = _run(config, trainer, state, start_step, iterator, (mngr, best), examples, writer, stop, mesh)
  except (checkpoint.SaveError, writers.WriteError) as error:
    _shut_down(stop, mngr, best, writer, quiet=True)  # the save in flight finishes (or fails) first
    raise RunWriteFailed(f"{error}; {checkpoint.kept_note(workdir)}") from None
  except BaseException:
    _shut_down(stop, mngr, best, writer, quiet=True)
    raise
  try:
    _shut_down(stop, mngr, best, writer, quiet=False)  # the last save is asynchronous: it can fail here
  except checkpoint.SaveError as error:
    raise RunWriteFailed(f"{error}; {checkpoint.kept_note(workdir)}") from None
  return last


def _shut_down(stop, mngr, best, writer, quiet: bool) -> None:
  """Waits for the checkpoint in flight and closes everything; `quiet`: an error is already on its way,
  so a second one (the same full disk) is only logged."""
  stop.uninstall()
  try:
    checkpoint.finish(mngr)
  except checkpoint.SaveError as error:
    if not quiet:
      raise
    writers.log(f"also: {error}")
  finally:
    if best is not None:
      best.close()
    if writer is not None:
      writer.close()


def _run(config, trainer, state, step, iterator, managers, examples, writer, stop, mesh) -> dict:
  mngr, best = managers  # the run's checkpoints; the best-validation one (None without keep_best)
  progress = writers.Progress(step, config.num_steps, config.batch_size)
  last, pending = {}, []
  stop_every = 1 if jax.process_count() == 1 else config.log_every  # a cross-process check costs a sync
  input_seconds = 0.0  # host time blocked on the data pipeline since the last log
  if stop.agreed():  # a signal while the run started: nothing new to save
    writers.log(f"stop requested while starting: stopped before step {step + 1}; rerun the same command to "
                f"resume")
    return last
  while step < config.num_steps:
    waiting_since = time.perf_counter()
    batch = steps.global_batch(next(iterator), mesh)
    input_seconds += time.perf_counter() - waiting_since
    state, metrics = trainer.train_step(state, batch, step)
    step += 1
    pending.append(metrics)
    at_end = step == config.num_steps
    stopping = step % stop_every == 0 and stop.agreed()
    if step % config.log_every == 0 or at_end or stopping or mngr.should_save(step):
      last = _log(step, pending, progress, writer, input_seconds)
      pending, input_seconds = [], 0.0
    if step % config.eval_every == 0 or at_end:
      scores = _validate(step, trainer, state, examples, config, writer)
      last.update(scores)
      if best is not None and scores:
        checkpoint.save_if_best(best, step, state, scores["validation_psnr"])
    if stopping:
      checkpoint.save(mngr, step, state, iterator, force=True)
      writers.log(f"stop requested: saved the checkpoint at step {step}; rerun the same command to resume")
      return last
    checkpoint.save(mngr, step, state, iterator, force=at_end)
  return last


def _log(step, pending, progress, writer, input_seconds) -> dict:
  """Average the metrics since the last log; stop on NaN/Inf before anything is saved."""
  fetched = jax.device_get(pending)
  names = sorted({k for m in fetched for k in m})  # NoGAN phases report different metrics
  averaged = {k: float(np.mean([m[k] for m in fetched if k in m])) for k in names}
  if not all(np.isfinite(v) for v in averaged.values()):
    raise NonFiniteLoss(f"non-finite training metrics {averaged} by step {step}; the last good checkpoint "
                        f"is kept. Lower optimizer.learning_rate or set optimizer.grad_clip_norm, then rerun")
  line, rate, input_wait = progress.line(step, averaged, input_seconds)
  writers.log(line)
  writer.scalars(step, {**averaged, "patches_per_second": rate, "input_wait_fraction": input_wait})
  return averaged


def _validate(step, trainer, state, examples, config, writer) -> dict:
  if not examples:
    return {}
  scores, restored = validation.evaluate(lambda inputs: trainer.predict(state, inputs), examples,
                                         config.data.value_range)
  writers.log(f"step {step}  validation PSNR {scores['psnr']:.3f} dB (JPEG {scores['psnr_jpeg']:.3f} dB)")
  writer.scalars(step, {f"validation/{k}": v for k, v in scores.items()})
  writer.image(step, "validation", validation.sample_grid(examples[0], restored[0]))
  return {f"validation_{k}": v for k, v in scores.items()}


def _train_iterator(config):
  from jaxcar.data import pipeline  # pylint: disable=import-outside-toplevel
  return pipeline.train_iterator(config.data, batch_size=config.batch_size // jax.process_count(),
                                 seed=config.seed, process_index=jax.process_index(),
                                 process_count=jax.process_count())


def mesh_devices(config) -> list:
  """The devices the batch is split over: all, or the first `config.num_devices` (an equal share of
  each process's own devices, since every process feeds its devices' part of the batch)."""
  wanted, processes = config.get("num_devices", 0), jax.process_count()
  if not wanted:
    return jax.devices()
  if wanted % processes or wanted // processes > jax.local_device_count():
    raise ValueError(f"num_devices={wanted} must be a multiple of the {processes} processes and at most "
                     f"{jax.device_count()}; set --config.num_devices=0 for all devices")
  by_process = [[d for d in jax.devices() if d.process_index == p] for p in range(processes)]
  return [device for devices in by_process for device in devices[:wanted // processes]]


def _check_batch(config, devices: int):
  # Every device gets the same share, and every process loads its own devices' shares.
  if config.batch_size % devices:
    raise ValueError(f"batch_size {config.batch_size} must be a multiple of the {devices} devices; set "
                     f"--config.batch_size={max(devices, config.batch_size // devices * devices)}, or "
                     f"--config.num_devices to a divisor of it")


def _prepare_workdir(workdir):
  path = epath.Path(workdir)
  try:
    path.mkdir(parents=True, exist_ok=True)
    probe = path / f".write_test_{jax.process_index()}_{os.getpid()}"
    probe.write_text("ok")
    probe.unlink()
  except OSError as e:
    raise WorkdirError(f"workdir {workdir} is not writable ({type(e).__name__}: {e.strerror or e}); "
                       f"pass a --workdir you can write to") from None


def lock_workdir(workdir) -> int | None:
  """Process 0 takes an exclusive lock on WORKDIR/.lock (the open file's descriptor; None elsewhere).

  The file names the holder (pid, host, since when) for the error a second run gets. The kernel drops
  the lock when its process dies however it ends, so a stale file never blocks. gs:// and other remote
  workdirs have no such lock: they are not locked (with a note).
  """
  if jax.process_index() != 0:
    return None
  if "://" in str(workdir):
    writers.log(f"note: {workdir} is not a local folder, so it is not locked against a second run on it")
    return None
  path = os.path.join(paths.absolute(workdir), LOCK_FILE)
  try:
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
  except OSError as e:
    raise WorkdirError(f"cannot create the lock file {path} ({e.strerror}); pass a --workdir you can "
                       f"write to") from None
  try:
    fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except OSError:
    holder = os.pread(descriptor, 1000, 0).decode(errors="replace").strip() or "another process"
    os.close(descriptor)
    raise WorkdirBusy(f"workdir {workdir} is in use by another training run ({holder}); wait for it to end, "
                      f"or pass another --workdir") from None
  since = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
  os.ftruncate(descriptor, 0)
  os.pwrite(descriptor, f"pid {os.getpid()} on host {socket.gethostname()} since {since}\n".encode(), 0)
  return descriptor


def unlock_workdir(descriptor: int | None) -> None:
  if descriptor is not None:
    fcntl.flock(descriptor, fcntl.LOCK_UN)
    os.close(descriptor)
