"""The README works as written: its Quickstart block, its install commands, its examples' folders.

The Quickstart test runs the README's own block in a fresh copy of the repository, so the two cannot
drift apart; the wheel test then installs the built wheel into that fresh environment and runs the
CLIs from another folder, as `pip install` users do.
"""

import json
import os
from pathlib import Path
import re
import shlex
import shutil
import subprocess
import sys
import tomllib

import pytest

from jaxcar import evaluate
from jaxcar.data import sources

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
# Appended to the Quickstart's training command: a shorter run of the same config (paths unchanged).
QUICKSTART_SHORTER = ["--config.num_steps=120", "--config.optimizer.warmup_steps=20", "--config.eval_every=120",
                      "--config.checkpoint_every=120", "--config.log_every=40"]


def code_block(section: str) -> str:
  """The first ```bash block under the `## section` heading, continuation lines joined."""
  body = README.split(f"\n## {section}\n", 1)[1].split("\n## ", 1)[0]
  block = re.search(r"```bash\n(.*?)```", body, re.S).group(1)
  return re.sub(r"\\\n\s*", "", block).strip()


def _fresh_copy(destination: Path) -> None:
  """The repository's files as a new clone has them (tracked and not ignored), without .venv or runs/."""
  listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                          capture_output=True, text=True, check=True).stdout
  for name in filter(None, listed.split("\0")):
    if (ROOT / name).is_file():
      (destination / name).parent.mkdir(parents=True, exist_ok=True)
      shutil.copy2(ROOT / name, destination / name)


def _user_env() -> dict:
  """This environment less what the tests set: no active venv, one device, as a user's shell has it."""
  env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "VIRTUAL_ENV", "PYTHONPATH")}
  venv_bin = str(Path(sys.executable).parent)
  env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if p != venv_bin)
  return env


def _check(command, cwd, timeout=600, **kwargs) -> subprocess.CompletedProcess:
  result = subprocess.run(command, cwd=cwd, env=_user_env(), capture_output=True, text=True, timeout=timeout,
                          **kwargs)
  assert result.returncode == 0, f"{command}\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
  return result


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory):
  """A fresh copy of the repository after the README's Quickstart block ran in it (training shortened)."""
  if shutil.which("git") is None or not (ROOT / ".git").exists():
    pytest.skip("needs a git checkout to copy as a new clone")
  clone = tmp_path_factory.mktemp("clone")
  _fresh_copy(clone)
  steps = code_block("Quickstart").split(" && ")
  train = next(i for i, step in enumerate(steps) if "-m jaxcar.train " in step)
  steps[train] += " " + " ".join(QUICKSTART_SHORTER)
  _check(["bash", "-c", " && ".join(steps)], clone, timeout=1500)
  return clone


@pytest.mark.slow
def test_quickstart_block_beats_the_jpeg(quickstart):
  summary = json.loads((quickstart / "runs/quickstart/eval/summary.json").read_text())["qualities"]["10"]
  assert summary["model"]["psnr"] > summary["jpeg"]["psnr"], summary
  assert list((quickstart / "runs/quickstart/samples").glob("validation_*.png"))
  assert list((quickstart / "runs/quickstart/eval/images/q10").glob("*.png"))


@pytest.mark.slow
def test_the_wheel_installs_and_finds_its_configs_from_any_folder(quickstart, tmp_path):
  python = str(quickstart / ".venv" / "bin" / "python")
  _check([python, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(tmp_path / "dist"), "."], quickstart)
  (wheel,) = (tmp_path / "dist").glob("jaxcar-*.whl")
  _check([python, "-m", "pip", "uninstall", "--yes", "--quiet", "jaxcar"], tmp_path)  # the editable install
  _check([python, "-m", "pip", "install", "--no-deps", "--quiet", str(wheel)], tmp_path)
  _check([python, "-m", "pip", "check"], tmp_path)  # the wheel's declared dependencies are all there

  elsewhere = tmp_path / "elsewhere"
  elsewhere.mkdir()
  located = _check([python, "-c", "import jaxcar.configs; print(jaxcar.configs.__file__)"], elsewhere).stdout
  assert located.strip().endswith("site-packages/jaxcar/configs/__init__.py"), located  # not the repository's
  assert "qcn" in _check([python, "-m", "jaxcar.train", "--help"], elsewhere).stdout
  _check([python, "-m", "jaxcar.train", "--config=dacar3:small", "--workdir=runs/from_wheel",
          "--config.num_steps=2", "--config.batch_size=4", "--config.data.patch_size=16", "--config.eval_every=2",
          "--config.checkpoint_every=2", "--config.data.num_workers=0"], elsewhere)
  assert (elsewhere / "runs" / "from_wheel" / "checkpoints" / "2").is_dir()


def test_ci_ends_with_the_readme_test_command():
  ci_lines = [line for line in (ROOT / ".ci" / "run").read_text().splitlines() if line.strip()]
  assert ci_lines[-1] == code_block("Test")


def test_torch_install_is_the_cpu_build():
  # A bare `torch==X` resolves to the multi-GB CUDA build on Linux.
  install = shlex.split(code_block("Test").split(" && ")[0])
  assert any(re.fullmatch(r"torch==[\d.]+\+cpu", arg) for arg in install), install
  assert "https://download.pytorch.org/whl/cpu" in install, install


def test_tensorboard_command_comes_with_its_install():
  extras = PYPROJECT["project"]["optional-dependencies"]
  for match in re.finditer(r"`([^`]*)tensorboard --logdir", README):
    installed = re.search(r"pip install -e '\.\[(\w+)\]' && $", match.group(1))
    assert installed, f"no install command before: {match.group(0)}"
    assert any(req.startswith("tensorboard==") for req in extras[installed.group(1)])


def test_example_output_folders_are_ignored_by_git():
  if shutil.which("git") is None or not (ROOT / ".git").exists():
    pytest.skip("needs a git checkout")
  folders = set(re.findall(r"--output(?:_dir)?[= ]([\w./-]+)", README))
  folders = {folder for folder in folders if not folder.startswith(("path/", "$"))}
  assert {"eval/dacar3", "exported", "restored"} <= folders, folders
  ignored = subprocess.run(["git", "check-ignore", *(f"{folder}/file" for folder in folders)], cwd=ROOT,
                           capture_output=True, text=True).stdout.split()
  assert sorted(ignored) == sorted(f"{folder}/file" for folder in folders)


def test_named_datasets_are_documented_with_their_shared_folder():
  assert "$JAXCAR_SHARED" in README and "--shared" in README
  for folders in sources.DATASETS.values():
    for folder in folders:
      assert folder.rsplit("/", 1)[0] in README and folder.rsplit("/", 1)[1] in README, folder
  for name in evaluate.DATASETS:
    assert f"--dataset={name}" in README or f"`{name}`" in README, name


def test_every_package_is_listed_for_setuptools():
  # configs/ is mapped to jaxcar.configs, which setuptools cannot discover; so the list is explicit.
  found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "jaxcar").rglob("__init__.py")}
  found.add("jaxcar.configs")
  assert set(PYPROJECT["tool"]["setuptools"]["packages"]) == found
  assert PYPROJECT["tool"]["setuptools"]["package-dir"] == {"jaxcar.configs": "configs"}
