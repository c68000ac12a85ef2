"""Everything absl, shared by the entry points (train, evaluate, restore, export, zoo.publish).

Each entry point defines its own flags in a `define_flags()` with the helpers here and hands it to
`run(main, define_flags)`, which parses (resolving `--config=NAME` and checking every override),
prepares the process (quiet logs, host memory, the CPU convolution backend) and turns every error a
user can fix into one line instead of a traceback.
"""

import sys
from typing import Callable
import warnings

from absl import app, flags, logging
import ml_collections
from ml_collections import config_flags

from jaxcar import configs, logs
from jaxcar.ops import conv, host_memory

FLAGS = flags.FLAGS
HELP_FLAGS = ("--help", "-h", "-?", "--helpshort", "--helpfull")
# Errors a user can fix from the command line: shown as one line, not a traceback (ConfigError is a
# ValueError; FloatingPointError is training's non-finite loss).
USER_ERRORS = (ValueError, OSError, FloatingPointError)


class UsageError(ValueError):
  """A missing or contradictory flag: printed as `error: MESSAGE`, without an exception name."""


def define_config_flag(help_text: str = "configs/NAME.py or a path, then `:variants`",
                       flag_values: flags.FlagValues = FLAGS, argv: list[str] | None = None) -> None:
  """--config, with one `--config.field=value` override flag per such argument in `argv` (default sys.argv)."""
  config_flags.DEFINE_config_file("config", None, help_text, flag_values=flag_values, sys_argv=argv)


def define_model_flags() -> None:
  """Where a network comes from (--model, --weights, --workdir, with --config), and how it runs."""
  define_config_flag("configs/NAME.py or a path, then `:variants`; optional with an exported file's manifest "
                     "or a workdir")
  flags.DEFINE_string("model", None, "a pretrained model shipped with jaxcar, e.g. color or grey "
                      "(python -m jaxcar.zoo lists them)")
  flags.DEFINE_string("weights", None, "weights file: Keras .h5, PyTorch .pth/.pt/.safetensors, jaxcar "
                      ".safetensors/.npz export")
  flags.DEFINE_string("workdir", None, "training run folder: its latest checkpoint")
  flags.DEFINE_enum("cpu_conv", "auto", list(conv.CHOICES), "CPU convolution backend: auto (oneDNN where it "
                    "is faster), onednn or xla; ignored on GPU/TPU")


def load_model_from_flags():
  from jaxcar import loading  # pylint: disable=import-outside-toplevel  (JAX only once flags are parsed)
  return loading.load_model(FLAGS.config, FLAGS.weights, FLAGS.workdir, FLAGS.model)


def load_config(spec: str, overrides: list[str] = ()) -> ml_collections.ConfigDict:
  """The config `spec` with `field=value` overrides applied, exactly as `--config.field=value` would."""
  argv = ["load", f"--config={spec}"] + [f"--config.{o}" for o in overrides]
  flag_values = flags.FlagValues()
  define_config_flag(flag_values=flag_values, argv=argv)
  parse(argv, flag_values)
  return flag_values.config


def usage() -> str:
  """What `--help` prints before the flags: every config with its variants, and how to see its fields."""
  width = max(map(len, configs.available()))
  rows = [f"  {name:<{width}}  :{', :'.join(configs.variants(name))}" for name in configs.available()]
  return "\n".join([
      "Configs (NAME = a file in configs/ or a path to your own .py) and their variants:", *rows,
      "Print a config's fields and values (after overrides) without training:",
      "  python -m jaxcar.train --config=qcn:small --print_config"])


def print_help(flag_values: flags.FlagValues) -> None:
  """The running CLI's docstring, the configs and the CLI's own flags."""
  main_doc = (sys.modules["__main__"].__doc__ or "").strip()
  print(f"{main_doc}\n\n{usage()}\n\nFlags ({HELP_FLAGS[-1]} for absl's own):\n"
        f"{flag_values.main_module_help().strip()}")


def parse(argv: list[str], flag_values: flags.FlagValues = FLAGS) -> list[str]:
  """Parse `argv` after resolving `--config=NAME` and checking every `--config.field` override."""
  argv = list(argv)
  spec_index = next((i for i, a in enumerate(argv) if a.startswith("--config=")), None)
  if spec_index is None and any(arg in HELP_FLAGS for arg in argv[1:]):
    print_help(flag_values)  # absl's own help needs a parsed --config first
    raise SystemExit(0)
  if spec_index is not None:
    spec = configs.resolve(argv[spec_index].split("=", 1)[1])
    argv[spec_index] = "--config=" + spec
    config = configs.load(spec)
    for arg in argv:
      if arg.startswith("--config."):
        configs.check_field(config, arg[len("--config."):].split("=", 1)[0])
  with warnings.catch_warnings():
    # ml_collections loads config files with the deprecated `load_module()` (one warning per load).
    warnings.filterwarnings("ignore", r"the load_module\(\) method is deprecated", DeprecationWarning)
    try:
      return flag_values(argv)
    except flags.Error as e:
      raise configs.ConfigError(f"{e}") from None


def _parse_or_exit(argv: list[str]) -> list[str]:
  try:
    return parse(argv)
  except configs.ConfigError as error:
    raise SystemExit(f"error: {error}") from None


def run(main: Callable[[list[str]], None], define_flags: Callable[[], None]) -> None:
  """Defines the flags, parses them and runs `main` with one-line errors for everything a user can fix."""
  define_flags()

  def guarded(argv):
    logs.quiet_unless_verbose()  # jaxcar's own lines; --verbosity shows Orbax's and JAX's too
    host_memory.for_jax_on_cpu()  # before JAX's backend starts
    if "cpu_conv" in FLAGS:
      conv.set_backend(FLAGS.cpu_conv)
    try:
      main(argv)
    except USER_ERRORS as error:
      logging.info("stopped", exc_info=True)  # the traceback, shown with --verbosity=0 or higher
      first_line = str(error).splitlines()[0] if str(error) else ""
      kind = "" if isinstance(error, (configs.ConfigError, UsageError)) else f"{type(error).__name__}: "
      raise SystemExit(f"error: {kind}{first_line}") from None

  app.run(guarded, flags_parser=_parse_or_exit)
