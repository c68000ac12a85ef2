"""The whole training loop in two processes over gloo on 127.0.0.1, one CPU device each.

`python -m jaxcar.train --distributed` runs in two worker processes (tests/multiprocess_worker.py loop),
on one workdir, for NUM_STEPS steps of DACAR4 with a checkpoint every CHECKPOINT_EVERY:

1. Both pause before step PAUSE_AFTER + 1; the test sends SIGTERM to process 1 only (not the one that
   writes the logs), waits until its handler ran, and lets both go on. Process 0 learns of the signal
   through the loop's cross-process check (`StopRequest.agreed`), so both stop after step
   STOP_STEP = PAUSE_AFTER + 1, both take part in its save, exit 0, and read back the same latest step.
2. The same command again, and SIGTERM to process 0 while both start (paused in `checkpoint.resume`,
   after the network and data are built): both stop before their first step, saving nothing new. (Before
   the loop installed its handler first thing, JAX's own preemption notifier took that signal, logged
   "SIGTERM caught", and the run trained to the end.)
3. The same command again: both resume from STOP_STEP and finish, saving the same steps.
4. The result equals a one-process run of NUM_STEPS steps, bit for bit: final parameters and every
   logged loss, gradient norm and parameter norm.

What "a one-process run" must be to be equal: each process loads its own half of the global batch,
from its own half of the images and with a seed that folds in the process index
(`pipeline.train_dataset`), so a plain one-process run of the same config sees other batches. The peer
is therefore one process feeding a mesh of two devices (`num_devices=2` of the test's simulated
devices) with the same global batch: process 0's half then process 1's half, from the same two
per-process iterators. The device program is then the same SPMD program as in the two processes
(one batch slice per device, oneDNN convolutions on each slice, one two-way gradient sum, and a sum
of two terms does not depend on their order), so equality is exact, not within a tolerance; the
difference is only which transport (in-process or gloo over TCP) carries the two partial results.

Skips if this jaxlib has no gloo CPU collectives.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from jaxcar import cli
from jaxcar.data import pipeline
from jaxcar.training import checkpoint, loop

ROOT = Path(__file__).resolve().parents[1]
NUM_STEPS, CHECKPOINT_EVERY, PAUSE_AFTER = 10, 4, 5
STOP_STEP = PAUSE_AFTER + 1
GLOBAL_BATCH = 4
# Seconds; only so that a hung worker fails the test instead of hanging the suite, never reached when
# all is well. A signal is taken within moments even on a loaded machine: its wait is shorter.
WAIT_LIMIT, SIGNAL_LIMIT = 600, 120


def _gloo_available() -> bool:
  try:
    from jax._src.lib import xla_client  # pylint: disable=import-outside-toplevel
    return hasattr(xla_client._xla, "make_gloo_tcp_collectives")  # pylint: disable=protected-access
  except ImportError:
    return False


pytestmark = pytest.mark.skipif(not _gloo_available(),
                                reason="this jaxlib has no gloo CPU collectives (make_gloo_tcp_collectives)")


def _overrides(images) -> list[str]:
  return [f"data.source={images}", f"data.validation={images}", "data.num_workers=0", "data.patch_size=16",
          f"batch_size={GLOBAL_BATCH}", f"num_steps={NUM_STEPS}", f"checkpoint_every={CHECKPOINT_EVERY}",
          "keep_checkpoints=10", "log_every=1", "eval_every=1000"]


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _start(workdir: Path, folder: Path, images, pause: str) -> list[subprocess.Popen]:
  """The two workers of one run; `pause` as tests/multiprocess_worker.py takes it. Output: folder/log_<i>."""
  folder.mkdir(parents=True)
  port = _free_port()
  env = {**{k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "PYTHONPATH")},
         "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu"}  # no XLA_FLAGS: one device per process
  train_flags = ["--config=dacar4:small", f"--workdir={workdir}", *(f"--config.{o}" for o in _overrides(images))]
  workers = []
  for i in range(2):
    with open(folder / f"log_{i}", "w") as log:
      workers.append(subprocess.Popen(
          [sys.executable, str(ROOT / "tests" / "multiprocess_worker.py"), "loop", str(port), str(i),
           str(folder / f"report_{i}.json"), pause, *train_flags],
          cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT))
  return workers


def _wait_for(predicate, workers, folder: Path, running: bool = True, limit: float = WAIT_LIMIT,
              hung: str = "the workers hung"):
  """Polls `predicate`; fails at once, with the worker's output, if one exits (`running`) or exits
  with an error (not `running`), and kills the workers left so none outlives the test."""
  start = time.monotonic()
  while not predicate():
    for i, worker in enumerate(workers):
      if worker.poll() is not None and (running or worker.returncode != 0):
        _kill(workers)
        pytest.fail(f"worker {i} exited ({worker.returncode}):\n{(folder / f'log_{i}').read_text()[-3000:]}")
    if time.monotonic() - start > limit:
      _kill(workers)
      pytest.fail(f"{hung}; worker 0's output:\n{(folder / 'log_0').read_text()[-3000:]}")
    time.sleep(0.1)


def _kill(workers):
  for worker in workers:
    if worker.poll() is None:
      worker.kill()
      worker.wait()


def _finish(workers, folder: Path) -> list[dict]:
  """Both workers' reports once both exited 0."""
  _wait_for(lambda: all(worker.poll() is not None for worker in workers), workers, folder, running=False)
  return [json.loads((folder / f"report_{i}.json").read_text()) for i in range(2)]


@pytest.fixture(scope="module")
def two_processes(images, tmp_path_factory):
  """The workers' reports of each run (interrupted, stopped_while_starting, rerun) and the workdir."""
  root = tmp_path_factory.mktemp("multihost")
  workdir, runs = root / "run", {name: root / name for name in ("interrupted", "starting", "rerun")}
  reports = {"interrupted": _signalled_run(workdir, runs["interrupted"], images, str(PAUSE_AFTER), signalled=1),
             "starting": _signalled_run(workdir, runs["starting"], images, "start", signalled=0),
             "rerun": _finish(_start(workdir, runs["rerun"], images, "-"), runs["rerun"])}
  return reports, workdir


def _signalled_run(workdir, folder, images, pause: str, signalled: int) -> list[dict]:
  """A run whose workers pause at `pause`, where process `signalled` gets SIGTERM; then both go on."""
  workers = _start(workdir, folder, images, pause)
  _wait_for(lambda: all((folder / f"paused_{i}").exists() for i in range(2)), workers, folder)
  workers[signalled].send_signal(signal.SIGTERM)
  _wait_for(lambda: (folder / f"signal_{signalled}").exists(), workers, folder, limit=SIGNAL_LIMIT,
            hung=f"the loop's handler never took the SIGTERM to process {signalled} (JAX's preemption notifier did?)")
  (folder / "go").write_text("")
  reports = _finish(workers, folder)
  assert not (folder / f"signal_{1 - signalled}").exists()  # the other one stopped without a signal of its own
  return reports


@pytest.fixture(scope="module")
def one_process(images, tmp_path_factory):
  """The workdir of NUM_STEPS steps in one process on two devices, fed the two processes' global batch."""
  workdir = tmp_path_factory.mktemp("one_process")
  config = cli.load_config("dacar4:small", [*_overrides(images), "num_devices=2"])
  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(loop, "_train_iterator", _BothProcesses)
    loop.train_and_evaluate(config, workdir)
  return workdir


class _BothProcesses:
  """The global batch of a two-process run, in one process: the two per-process iterators' batches,
  process 0's first (its devices come first in the mesh). Checkpointable like a Grain iterator."""

  def __init__(self, config):
    self.iterators = [pipeline.train_iterator(config.data, batch_size=config.batch_size // 2, seed=config.seed,
                                              process_index=p, process_count=2) for p in range(2)]

  def __iter__(self):
    return self

  def __next__(self) -> dict:
    halves = [next(iterator) for iterator in self.iterators]
    return {k: np.concatenate([half[k] for half in halves]) for k in halves[0]}

  def get_state(self) -> bytes:
    return json.dumps([iterator.get_state() for iterator in self.iterators]).encode()

  def set_state(self, state: bytes) -> None:
    for iterator, part in zip(self.iterators, json.loads(state)):
      iterator.set_state(part)

  def start_prefetch(self) -> None:
    pass


def test_sigterm_to_one_process_stops_and_saves_both(two_processes):
  reports, _ = two_processes
  for i, report in enumerate(reports["interrupted"]):
    assert (report["process_index"], report["process_count"]) == (i, 2)
    assert report["resumed_from"] is None
    # Every process took part in each save, the last one the stop's, and reads back the same latest step.
    assert report["saved"] == [CHECKPOINT_EVERY, STOP_STEP], report
    assert report["latest_step"] == STOP_STEP, report


def test_sigterm_while_starting_stops_both_before_their_first_step(two_processes):
  reports, _ = two_processes
  for report in reports["starting"]:
    assert report["resumed_from"] == STOP_STEP, report
    assert report["saved"] == [], report
    assert report["latest_step"] == STOP_STEP, report


def test_rerun_resumes_both_and_finishes(two_processes):
  reports, workdir = two_processes
  for report in reports["rerun"]:
    assert report["resumed_from"] == STOP_STEP, report
    assert report["saved"] == [8, NUM_STEPS], report
    assert report["latest_step"] == NUM_STEPS, report
  for step in (CHECKPOINT_EVERY, STOP_STEP, 8, NUM_STEPS):
    folder = workdir / "checkpoints" / str(step)
    assert (folder / "state").is_dir(), step
    assert sorted(p.name for p in (folder / "data").glob("process_*.json")) == \
        ["process_0-of-2.json", "process_1-of-2.json"], step  # each process's data position


def _logged(workdir) -> list[tuple]:
  """(step, loss, gradient norm, parameter norm) of each training row of metrics.jsonl, in file order."""
  rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
  return [(r["step"], r["loss"], r["grad_norm"], r["param_norm"]) for r in rows if "loss" in r]


def test_result_equals_a_one_process_run(two_processes, one_process):
  _, workdir = two_processes
  logged = _logged(workdir)
  assert [row[0] for row in logged] == list(range(1, NUM_STEPS + 1))  # each step once, in order, over 3 runs
  assert logged == _logged(one_process)
  expected, got = checkpoint.load_params(one_process), checkpoint.load_params(workdir)
  assert jax.tree_util.tree_structure(got) == jax.tree_util.tree_structure(expected)
  for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(expected)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
