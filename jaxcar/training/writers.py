"""Run outputs written by process 0 only: JSONL metrics, TensorBoard events, sample images, progress."""

import datetime
import json
import logging
import time
from typing import Callable

from etils import epath
import jax
import numpy as np

from jaxcar.training import validation

METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"
SAMPLES_DIR = "samples"


class WriteError(OSError):
  """A run output could not be written (full disk, lost permission): one line naming the file and why."""


class RunWriter:
  """Every process may call it; only process 0 writes. Appends, so a resumed run extends its history.

  `resumed_step`: the run resumed from the checkpoint at this step, so the rows logged after it (by the
  interrupted run, between its last checkpoint and the interruption) are dropped, as they are logged again.
  """

  def __init__(self, workdir, resumed_step: int | None = None):
    self.workdir = epath.Path(workdir)
    self.active = jax.process_index() == 0
    self._tensorboard = None
    if self.active:
      if resumed_step is not None:
        drop_rows_after(self.workdir / METRICS_FILE, resumed_step)
      from tensorboardX import SummaryWriter  # pylint: disable=import-outside-toplevel
      # purge_step: TensorBoard hides the interrupted run's events past the checkpoint the same way.
      purge = None if resumed_step is None else resumed_step + 1
      self._tensorboard = _TensorBoard(
          SummaryWriter(str(self.workdir / TENSORBOARD_DIR), purge_step=purge), self.workdir / TENSORBOARD_DIR)

  def scalars(self, step: int, values: dict):
    if not self.active:
      return
    record = {"step": step, **{k: float(v) for k, v in values.items()}}
    _append_line(self.workdir / METRICS_FILE, json.dumps(record))
    self._tensorboard.write(lambda events: [events.add_scalar(name, float(value), step)
                                            for name, value in values.items()])

  def image(self, step: int, name: str, image: np.ndarray):
    if not self.active:
      return
    folder = self.workdir / SAMPLES_DIR
    path = folder / f"{name}_{step:08d}.png"
    try:
      folder.mkdir(parents=True, exist_ok=True)
      validation.save_png(image, path)
    except OSError as error:
      raise WriteError(_failure(path, error)) from None
    self._tensorboard.write(lambda events: events.add_image(name, image, step, dataformats="HWC"))

  def close(self):
    if self._tensorboard is not None:
      self._tensorboard.close()


class _TensorBoard:
  """tensorboardX's SummaryWriter, whose write failures are one WriteError line.

  It writes from a background thread and flushes again at exit, so after one failure (a full disk) it
  would print the same error as tracebacks twice more: the first failure stops its thread and marks it
  closed (attributes of the pinned tensorboardX 2.6.5), and later writes are skipped.
  """

  def __init__(self, summary_writer, folder):
    self._writer, self._folder, self._failed = summary_writer, folder, False

  def write(self, add: Callable) -> None:
    if self._failed:
      return
    try:
      add(self._writer)
      self._writer.flush()
    except OSError as error:
      self._abandon()
      raise WriteError(_failure(self._folder, error)) from None

  def close(self) -> None:
    if self._failed:
      return
    try:
      self._writer.close()
    except OSError as error:
      self._abandon()
      raise WriteError(_failure(self._folder, error)) from None

  def _abandon(self) -> None:
    self._failed = True
    events = self._writer.file_writer.event_writer
    events._closed = True  # pylint: disable=protected-access  (its atexit hook then does nothing)
    try:
      events._worker.stop()  # pylint: disable=protected-access
    except (OSError, AttributeError):
      pass


def _append_line(path: epath.Path, line: str) -> None:
  try:
    _write_line(path, line)
  except OSError as error:
    raise WriteError(_failure(path, error)) from None


def _write_line(path: epath.Path, line: str) -> None:
  with path.open("a") as f:
    f.write(line + "\n")


def _failure(path, error: OSError) -> str:
  return f"could not write {path} ({error.strerror or type(error).__name__})"


def drop_rows_after(path: epath.Path, step: int) -> int:
  """Rewrites the JSONL `path` (atomically) without its rows past `step` or cut short; the count dropped."""
  if not path.exists():
    return 0
  kept, dropped = [], 0
  try:
    for line in path.read_text().splitlines():
      try:
        row_step = json.loads(line)["step"]
      except (ValueError, KeyError, TypeError):
        row_step = None  # a line cut short by the interruption
      if row_step is not None and row_step <= step:
        kept.append(line)
      elif line.strip():
        dropped += 1
    if dropped:
      partial = path.parent / f"{path.name}.partial"
      partial.write_text("".join(line + "\n" for line in kept))
      partial.replace(path)
      log(f"{path.name}: dropped {dropped} row(s) past step {step}, logged before the interruption")
  except OSError as error:
    raise WriteError(_failure(path, error)) from None
  return dropped


class Progress:
  """`step 1200/5000  loss 0.0012  412.3 patches/s  input wait 3%  ETA 0:09:10`, measured between calls.

  "input wait" is the share of wall time the loop spent blocked on the data pipeline: near 0 when the
  accelerator is the bottleneck, the fraction of time it sat idle otherwise.
  """

  def __init__(self, start_step: int, num_steps: int, global_batch: int):
    self.num_steps, self.global_batch = num_steps, global_batch
    self._step, self._time = start_step, time.perf_counter()

  def line(self, step: int, metrics: dict, input_seconds: float = 0.0) -> tuple[str, float, float]:
    """(the line, patches per second, input-wait fraction) since the previous call."""
    now = time.perf_counter()
    elapsed = max(now - self._time, 1e-9)
    rate = (step - self._step) * self.global_batch / elapsed
    input_wait = min(input_seconds / elapsed, 1.0)
    self._step, self._time = step, now
    eta = (self.num_steps - step) * self.global_batch / max(rate, 1e-9)
    parts = "  ".join(f"{k} {v:.6g}" for k, v in metrics.items())
    return (f"step {step}/{self.num_steps}  {parts}  {rate:.1f} patches/s  input wait {input_wait:.0%}  "
            f"ETA {datetime.timedelta(seconds=int(eta))}"), rate, input_wait


def log(message: str):
  if jax.process_index() == 0:
    logging.info("%s", message)
    print(message, flush=True)
