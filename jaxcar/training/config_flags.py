"""`--config=NAME[:variants]` and `--config.field=value`, with one-line errors for every mistake.

A bare name resolves to `NAME.py` of the `jaxcar.configs` package (the repository's `configs/`, installed
with jaxcar); a path to a `.py` file works as is. ml_collections' config flag does the loading and the
typed overrides; this module resolves names first, and turns its deep tracebacks (unknown field, bad
type, missing file) into a message saying what to do.
"""

import difflib
import importlib
import importlib.util
from pathlib import Path
import sys
import warnings

from absl import flags
import ml_collections
from ml_collections import config_flags

from jaxcar import configs

CONFIG_DIR = Path(configs.__file__).resolve().parent
HELPER_MODULES = ("base", "common")  # files in configs/ that are not configs
HELP_FLAGS = ("--help", "-h", "-?", "--helpshort", "--helpfull")
PROBE_VARIANT = "?"  # no config has it, so its error lists the valid ones


class ConfigError(ValueError):
  """A config name, variant or override that cannot be used; the message says how to fix it."""


def available() -> list[str]:
  return sorted(p.stem for p in CONFIG_DIR.glob("*.py") if p.stem not in HELPER_MODULES and p.stem[0] != "_")


def variants(name: str) -> list[str]:
  """The `:variant` names config `name` accepts (`common.start` lists them in its error)."""
  from jaxcar.configs import common  # pylint: disable=import-outside-toplevel
  try:
    importlib.import_module(f"{configs.__name__}.{name}").get_config(PROBE_VARIANT)
  except common.UnknownVariant as error:
    return list(error.valid)
  return []


def usage() -> str:
  """What `--help` prints before the flags: every config with its variants, and how to see its fields."""
  width = max(map(len, available()))
  rows = [f"  {name:<{width}}  :{', :'.join(variants(name))}" for name in available()]
  return "\n".join([
      "Configs (NAME = a file in configs/ or a path to your own .py) and their variants:", *rows,
      "Print a config's fields and values (after overrides) without training:",
      "  python -m jaxcar.train --config=qcn:small --print_config"])


def print_help(flag_values: flags.FlagValues) -> None:
  """The running CLI's docstring, the configs and the CLI's own flags."""
  main_doc = (sys.modules["__main__"].__doc__ or "").strip()
  print(f"{main_doc}\n\n{usage()}\n\nFlags ({HELP_FLAGS[-1]} for absl's own):\n"
        f"{flag_values.main_module_help().strip()}")


def resolve(spec: str) -> str:
  """`qcn:small` -> `/.../configs/qcn.py:small`; a path (with optional `:variants`) is checked and kept."""
  name, sep, variants = spec.partition(":")
  path = Path(name) if name.endswith(".py") else CONFIG_DIR / f"{name}.py"
  if not path.is_file():
    close = difflib.get_close_matches(name, available(), n=3)
    hint = f"; did you mean {close}?" if close else ""
    raise ConfigError(f"config {name!r} not found{hint} Use one of {available()} or a path to a .py file")
  return str(path.resolve()) + sep + variants


def load(spec: str, overrides: list[str] = ()) -> ml_collections.ConfigDict:
  """The config `spec` with `field=value` overrides applied, as the CLI would build it."""
  argv = ["load", f"--config={spec}"] + [f"--config.{o}" for o in overrides]
  flag_values = flags.FlagValues()
  holder = config_flags.DEFINE_config_file("config", flag_values=flag_values, sys_argv=argv)
  parse(argv, flag_values)
  return holder.value


def parse(argv: list[str], flag_values: flags.FlagValues = flags.FLAGS) -> list[str]:
  """Parse `argv` into `flag_values` after resolving `--config` and checking every override's field."""
  argv = list(argv)
  spec_index = next((i for i, a in enumerate(argv) if a.startswith("--config=")), None)
  if spec_index is None and any(arg in HELP_FLAGS for arg in argv[1:]):
    print_help(flag_values)  # absl's own help needs a parsed --config first
    raise SystemExit(0)
  if spec_index is None:
    raise ConfigError(f"--config is required: one of {available()} (add ':small' for a quick CPU run)")
  argv[spec_index] = "--config=" + resolve(argv[spec_index].split("=", 1)[1])
  config = _load_file(argv[spec_index].split("=", 1)[1])
  for arg in argv:
    if arg.startswith("--config."):
      _check_field(config, arg[len("--config."):].split("=", 1)[0])
  try:
    with warnings.catch_warnings():
      # ml_collections loads config files with the deprecated `load_module()` (one warning per load).
      warnings.filterwarnings("ignore", r"the load_module\(\) method is deprecated", DeprecationWarning)
      return flag_values(argv)
  except flags.Error as e:
    raise ConfigError(f"{e}") from None


def _load_file(spec: str) -> ml_collections.ConfigDict:
  path, _, variants = spec.partition(":")
  module_spec = importlib.util.spec_from_file_location(f"_jaxcar_config_{Path(path).stem}", path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  try:
    return module.get_config(variants) if variants else module.get_config()
  except (ValueError, TypeError) as e:
    raise ConfigError(f"config {spec}: {e}") from None


def _check_field(config: ml_collections.ConfigDict, dotted: str):
  node, walked = config, []
  for part in dotted.split("."):
    fields = list(node.keys()) if isinstance(node, ml_collections.ConfigDict) else []
    if part not in fields:
      where = ".".join(walked) or "config"
      close = difflib.get_close_matches(part, fields, n=3)
      hint = f" Did you mean {close}?" if close else ""
      raise ConfigError(f"unknown config field {dotted!r}: {where} has no {part!r}.{hint} "
                        f"Fields there: {sorted(fields)}")
    node, walked = node[part], walked + [part]
