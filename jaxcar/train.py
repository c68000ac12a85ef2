"""`python -m jaxcar.train --config=NAME[:variants] --workdir=DIR [--config.field=value ...]`.

NAME is a file in configs/ (or a path to one); `:small` gives a run of minutes on a CPU. Rerunning
the same command resumes from the latest checkpoint in DIR. `--print_config` prints the config's
fields and values (overrides applied) and exits. `--distributed` (or $JAXCAR_DISTRIBUTED=1) calls
jax.distributed.initialize() first, for TPU pods and clusters.
"""

import sys

from absl import app, flags, logging
from ml_collections import config_flags as ml_config_flags

from jaxcar import logs
from jaxcar.training import config_flags

_CONFIG = ml_config_flags.DEFINE_config_file("config", None, "configs/NAME.py or a path, then `:variants`")
_PRINT_CONFIG = flags.DEFINE_bool("print_config", False, "print the config's fields and values, then exit")
_WORKDIR = flags.DEFINE_string("workdir", None, "where checkpoints, metrics and samples go (local or gs://...)")
_DISTRIBUTED = flags.DEFINE_bool("distributed", False, "call jax.distributed.initialize() (multi-host)")
_COORDINATOR = flags.DEFINE_string("coordinator", None, "host:port of process 0 when not auto-detected")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "process count when not auto-detected")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "this process's index when not auto-detected")

# Errors a user can fix from the command line: shown as one line, not a traceback.
USER_ERRORS = (config_flags.ConfigError, FileNotFoundError, ValueError, OSError, FloatingPointError)


def parse_flags(argv):
  try:
    return config_flags.parse(argv)
  except config_flags.ConfigError as e:
    sys.exit(f"error: {e}")


def main(argv):
  del argv
  logs.quiet_unless_verbose()  # progress lines are printed; Orbax logs every save at INFO
  if _PRINT_CONFIG.value:
    print(_CONFIG.value)
    return
  if not _WORKDIR.value:
    sys.exit("error: --workdir is required (a folder for checkpoints and metrics; rerun to resume)")
  from jaxcar import host_memory  # pylint: disable=import-outside-toplevel
  from jaxcar.training import distributed, loop  # pylint: disable=import-outside-toplevel
  host_memory.for_jax_on_cpu()  # before JAX's backend starts
  distributed.initialize(_DISTRIBUTED.value, _COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
  try:
    loop.train_and_evaluate(_CONFIG.value, _WORKDIR.value)
  except USER_ERRORS as e:
    logging.info("training stopped", exc_info=True)
    sys.exit(f"error: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
