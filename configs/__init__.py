"""jaxcar's training recipes, one file per network; installed as the `jaxcar.configs` package.

    config = jaxcar.configs.load("qcn:small")     # configs/qcn.py's get_config("small")
    config = jaxcar.configs.load("my_recipe.py")  # a config file of your own, anywhere

`NAME[:variants]` loads `NAME.py` here and calls its `get_config(variants)`. The files import each
other as `from jaxcar.configs import common`, which works from this repository and from an installed
jaxcar alike, and so does a config file of your own. Command-line overrides (`--config.field=value`)
are absl's business: `jaxcar.cli`.
"""

import difflib
import importlib
import importlib.util
from pathlib import Path

import ml_collections

CONFIG_DIR = Path(__file__).resolve().parent
HELPER_MODULES = ("base", "common")  # files here that are not configs
PROBE_VARIANT = "?"  # no config has it, so its error lists the valid ones


class ConfigError(ValueError):
  """A config name, variant or field that cannot be used; the message says how to fix it."""


def available() -> list[str]:
  return sorted(p.stem for p in CONFIG_DIR.glob("*.py") if p.stem not in HELPER_MODULES and p.stem[0] != "_")


def variants(name: str) -> list[str]:
  """The `:variant` names config `name` accepts (`common.start` lists them in its error)."""
  from jaxcar.configs import common  # pylint: disable=import-outside-toplevel  (common imports this package)
  try:
    importlib.import_module(f"{__name__}.{name}").get_config(PROBE_VARIANT)
  except common.UnknownVariant as error:
    return list(error.valid)
  return []


def resolve(spec: str) -> str:
  """`qcn:small` -> `/.../configs/qcn.py:small`; a path (with optional `:variants`) is checked and kept."""
  name, sep, variant_names = spec.partition(":")
  path = Path(name) if name.endswith(".py") else CONFIG_DIR / f"{name}.py"
  if not path.is_file():
    close = difflib.get_close_matches(name, available(), n=3)
    hint = f"; did you mean {close}?" if close else ""
    raise ConfigError(f"config {name!r} not found{hint} Use one of {available()} or a path to a .py file")
  return str(path.resolve()) + sep + variant_names


def load(spec: str) -> ml_collections.ConfigDict:
  """The config `spec` names (`NAME[:variants]` or `path.py[:variants]`), without overrides."""
  path, _, variant_names = resolve(spec).partition(":")
  module_spec = importlib.util.spec_from_file_location(f"_jaxcar_config_{Path(path).stem}", path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  try:
    return module.get_config(variant_names) if variant_names else module.get_config()
  except (ValueError, TypeError) as e:
    raise ConfigError(f"config {spec}: {e}") from None


def check_field(config: ml_collections.ConfigDict, dotted: str) -> None:
  """ConfigError naming the closest fields when `dotted` (e.g. `optimizer.learning_rate`) is not one."""
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
