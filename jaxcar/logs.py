"""What jaxcar's command lines log by default: jaxcar's own lines, and other libraries' errors.

Orbax, JAX and matplotlib log through the same absl/Python logging as jaxcar: reading one checkpoint
alone gave ~20 INFO lines and 3 warnings. By default the CLIs show jaxcar's warnings (and errors from
anyone); `--verbosity=0` (INFO) or any other `--verbosity` shows every library's lines again.
"""

import logging as std_logging
from pathlib import Path

from absl import flags, logging

PACKAGE_DIR = str(Path(__file__).resolve().parent)


class OwnLinesOnly(std_logging.Filter):
  """Passes jaxcar's records, and other libraries' from ERROR up."""

  def filter(self, record: std_logging.LogRecord) -> bool:
    return record.levelno >= std_logging.ERROR or record.pathname.startswith(PACKAGE_DIR)


def quiet_unless_verbose(flag_values: flags.FlagValues = flags.FLAGS) -> None:
  """For a CLI's main, after flag parsing: unless --verbosity was given, WARNING and up, jaxcar's only."""
  if flag_values["verbosity"].present:
    return
  logging.set_verbosity(logging.WARNING)
  handler = logging.get_absl_handler()
  if not any(isinstance(f, OwnLinesOnly) for f in handler.filters):
    handler.addFilter(OwnLinesOnly())
