"""Multi-process setup and the rules every process follows.

Every process makes the same jitted calls and checkpoint saves in the same order; only logging and
file writes (metrics, images, TensorBoard) happen on process 0.
"""

import os
import signal
import threading

import jax
import numpy as np
from jax.experimental import multihost_utils

DISTRIBUTED_ENV = "JAXCAR_DISTRIBUTED"


def initialize(requested: bool = False, coordinator: str | None = None, num_processes: int | None = None,
               process_id: int | None = None):
  """`jax.distributed.initialize()` when asked by flag or `$JAXCAR_DISTRIBUTED=1`.

  Without explicit arguments JAX detects the cluster (TPU pod, SLURM, Open MPI, Kubernetes).
  """
  if not (requested or os.environ.get(DISTRIBUTED_ENV, "") in ("1", "true", "yes")):
    return
  jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes, process_id=process_id)


class StopRequest:
  """Set by SIGTERM/SIGINT; `agreed()` is True on every process at the same step once any is set.

  Single process: the flag itself. Several: the flags of all processes gathered and or'ed, so all
  of them stop (and save) together; the loop calls it at the same steps on every process.
  `install` can be called again (a no-op while installed). After `jax.distributed.initialize`, JAX's
  preemption notifier takes SIGTERM (it only logs "SIGTERM caught") until a handler replaces it, so a
  multi-process run installs this one first thing, not after its slow start.
  """

  def __init__(self):
    self._event = threading.Event()
    self._previous = {}

  def install(self):
    if self._previous or threading.current_thread() is not threading.main_thread():
      return self  # signal handlers can only be set from the main thread (e.g. not in some test runners)
    for sig in (signal.SIGTERM, signal.SIGINT):
      self._previous[sig] = signal.signal(sig, self._handle)
    return self

  def uninstall(self):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)
    self._previous = {}

  def _handle(self, signum, frame):
    self._event.set()

  def agreed(self) -> bool:
    if jax.process_count() == 1:
      return self._event.is_set()
    flags = multihost_utils.process_allgather(np.asarray(self._event.is_set()))
    return bool(np.any(flags))
