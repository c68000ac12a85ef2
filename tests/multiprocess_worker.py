"""One process of a two-process CPU job over gloo.

usage: python tests/multiprocess_worker.py PORT PROCESS_ID OUTPUT.npz
  (tests/test_train_sharding.py) Each process holds 2 CPU devices and its half of a fixed global batch;
  process 0 writes the result.
usage: python tests/multiprocess_worker.py loop PORT PROCESS_ID REPORT.json PAUSE [TRAIN FLAGS...]
  (tests/test_multihost_loop.py) The whole `python -m jaxcar.train` command, with --distributed on a
  coordinator at 127.0.0.1:PORT, one CPU device per process. It records what this process did in
  REPORT.json: the steps it saved (every process takes part in each save), the step it resumed from,
  and the latest step it reads back after the run. PAUSE: `-` none; `start`: while the run starts (in
  `checkpoint.resume`, after the network and the data are built); a number N: after N steps, before the
  next one. There it writes `paused_<id>` beside the report and waits until a file `go` appears there.
  A SIGTERM or SIGINT the loop's handler receives also writes `signal_<id>` there (after the handler
  ran), so a test can send a signal at a known point and know it has been taken.
"""

import json
import sys
import time
from pathlib import Path

import jax

jax.config.update("jax_cpu_collectives_implementation", "gloo")


def main(port: str, process_id: str, output: str):
  jax.config.update("jax_num_cpu_devices", 2)
  jax.distributed.initialize(f"127.0.0.1:{port}", num_processes=2, process_id=int(process_id))
  import numpy as np  # pylint: disable=import-outside-toplevel
  from tests import sharding_case  # pylint: disable=import-outside-toplevel
  half = sharding_case.GLOBAL_BATCH // 2
  local = {k: v[jax.process_index() * half:(jax.process_index() + 1) * half]
           for k, v in sharding_case.global_batch_numpy().items()}
  losses, params = sharding_case.train(jax.devices(), local)
  if jax.process_index() == 0:
    np.savez(output, losses=np.asarray(losses), **{str(i): p for i, p in enumerate(params)})
  jax.distributed.shutdown()


def loop_main(port: str, process_id: str, report: str, pause: str, *train_flags: str):
  jax.config.update("jax_num_cpu_devices", 1)
  # pylint: disable=import-outside-toplevel
  from absl import flags
  from jaxcar import cli, train
  from jaxcar.training import checkpoint, distributed, steps
  # pylint: enable=import-outside-toplevel
  folder, record = Path(report).parent, {"saved": [], "resumed_from": None}

  def pause_here():
    (folder / f"paused_{process_id}").write_text("")
    while not (folder / "go").exists():
      time.sleep(0.05)

  save = checkpoint.save
  def recording_save(mngr, step, state, iterator, force=False):
    saved = save(mngr, step, state, iterator, force=force)
    if saved:
      record["saved"].append(int(step))
    return saved
  checkpoint.save = recording_save

  resume = checkpoint.resume
  def recording_resume(*args):
    if pause == "start":
      pause_here()
    state, step = resume(*args)
    record["resumed_from"] = None if state is None else int(step)
    return state, step
  checkpoint.resume = recording_resume

  handle = distributed.StopRequest._handle  # pylint: disable=protected-access
  def noting_handle(self, signum, frame):
    handle(self, signum, frame)
    (folder / f"signal_{process_id}").write_text(str(signum))
  distributed.StopRequest._handle = noting_handle  # pylint: disable=protected-access

  if pause.isdigit():
    global_batch, calls = steps.global_batch, []
    def pausing_global_batch(local_batch, mesh):
      calls.append(1)
      if len(calls) == int(pause) + 1:  # the batch of the step after PAUSE steps
        pause_here()
      return global_batch(local_batch, mesh)
    steps.global_batch = pausing_global_batch

  def reporting_main(argv):
    train.main(argv)
    record.update(process_index=jax.process_index(), process_count=jax.process_count(),
                  latest_step=checkpoint.latest_step(flags.FLAGS.workdir))
    Path(report).write_text(json.dumps(record))

  sys.argv = ["jaxcar.train", "--distributed", f"--coordinator=127.0.0.1:{port}", "--num_processes=2",
              f"--process_id={process_id}", *train_flags]
  cli.run(reporting_main, train.define_flags)


if __name__ == "__main__":
  if sys.argv[1] == "loop":
    loop_main(*sys.argv[2:])
  else:
    main(*sys.argv[1:])
