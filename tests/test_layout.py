"""The package's imports run one way (BUILD_NOTES.md, Layout): each module imports only from its own
layer or the layers below, lazy imports inside functions included, and no submodule reaches back into
its own package's `__init__` (which imports the submodules: a cycle)."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Lowest first. A module belongs to the longest prefix listed; entry points sit on top.
LAYERS = (
    ("jaxcar.paths", "jaxcar.logs", "jaxcar.metrics"),
    ("jaxcar.ops",),
    ("jaxcar.models", "jaxcar.data"),
    ("jaxcar.configs", "jaxcar.convert", "jaxcar.predict"),
    ("jaxcar.zoo",),
    ("jaxcar.training",),
    ("jaxcar.loading",),
    ("jaxcar.cli",),
    ("jaxcar.train", "jaxcar.evaluate", "jaxcar.restore", "jaxcar.export", "jaxcar.zoo.publish",
     "jaxcar.zoo.figures", "jaxcar.zoo.__main__", "jaxcar.training.plot", "jaxcar.data.fetch"),
)


def _modules() -> dict[str, Path]:
  """{dotted name: file} for jaxcar/ and configs/ (installed as jaxcar.configs)."""
  found = {}
  for folder, package in ((ROOT / "jaxcar", "jaxcar"), (ROOT / "configs", "jaxcar.configs")):
    for path in folder.rglob("*.py"):
      parts = list(path.relative_to(folder).with_suffix("").parts)
      if parts[-1] == "__init__":
        parts = parts[:-1]
      found[".".join([package, *parts])] = path
  return found


def layer(module: str) -> int | None:
  if module == "jaxcar":
    return 0  # the package's __init__: its version only
  best, rank = "", None
  for index, prefixes in enumerate(LAYERS):
    for prefix in prefixes:
      if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > len(best):
        best, rank = prefix, index
  return rank


def imports(path: Path) -> list[tuple[str, list[str], int]]:
  """(module, names imported from it, line) for every import in the file, nested ones included."""
  found = []
  for node in ast.walk(ast.parse(path.read_text(), str(path))):
    if isinstance(node, ast.Import):
      found += [(alias.name, [], node.lineno) for alias in node.names]
    elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
      found.append((node.module, [alias.name for alias in node.names], node.lineno))
  return found


def _targets(module: str, names: list[str], known: dict[str, Path]) -> list[str]:
  """`from jaxcar import models, cli` imports the modules jaxcar.models and jaxcar.cli."""
  submodules = [f"{module}.{name}" for name in names if f"{module}.{name}" in known]
  return submodules or [module]


def test_every_module_has_a_layer():
  assert [name for name in _modules() if layer(name) is None] == []


@pytest.mark.parametrize("name", sorted(_modules()))
def test_imports_go_down_the_layers(name):
  known = _modules()
  wrong = []
  for module, names, line in imports(known[name]):
    for target in _targets(module, names, known):
      if target.startswith("jaxcar") and layer(target) > layer(name):
        wrong.append(f"line {line}: {target} (layer {layer(target)}) from layer {layer(name)}")
  assert wrong == []


@pytest.mark.parametrize("name", sorted(_modules()))
def test_no_submodule_imports_its_own_package(name):
  known = _modules()
  package = name.rsplit(".", 1)[0]
  if known[name].name == "__init__.py" or package not in known:
    return
  back = [f"line {line}: from {module} import {', '.join(names)}" for module, names, line in imports(known[name])
          if module == package and any(f"{package}.{n}" not in known for n in names)]
  assert back == []


def test_the_check_catches_an_upward_import(tmp_path):
  upward = tmp_path / "upward.py"
  upward.write_text("def f():\n  from jaxcar import cli\n")
  known = _modules()
  targets = [t for module, names, _ in imports(upward) for t in _targets(module, names, known)]
  assert targets == ["jaxcar.cli"] and layer("jaxcar.cli") > layer("jaxcar.models")
