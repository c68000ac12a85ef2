"""The command lines as a user types them: every path relative to the current folder, jaxcar's own lines only."""

import json
import os
from pathlib import Path
import subprocess
import sys

import numpy as np
from PIL import Image
import pytest

ROOT = Path(__file__).resolve().parents[1]
# What other libraries printed by default before: Orbax's checkpoint chatter and its type-handler
# override notice, JAX's missing-TPU line, matplotlib's font cache.
FOREIGN = ("orbax", "overriding", "checkpoint_manager", "Unable to initialize backend", "fontManager")
TINY_RUN = ["--config.data.source=photos", "--config.data.validation=photos", "--config.data.num_workers=0",
            "--config.batch_size=8", "--config.data.patch_size=16", "--config.num_steps=2", "--config.log_every=1",
            "--config.eval_every=2", "--config.checkpoint_every=2"]


@pytest.fixture(scope="module")
def user_folder(tmp_path_factory):
  """A user's folder: photos/ (clean PNGs) and jpegs/ (files to restore); nothing else."""
  folder = tmp_path_factory.mktemp("user")
  rng = np.random.default_rng(0)
  for name in ("photos", "jpegs"):
    (folder / name).mkdir()
  for i in range(2):
    y, x = np.mgrid[0:48, 0:64]
    grey = 128 + 60 * np.sin(x / (4 + i)) * np.cos(y / 6) + rng.normal(0, 8, (48, 64))
    image = Image.fromarray(np.clip(np.stack([grey, grey[::-1], grey[:, ::-1]], -1), 0, 255).astype(np.uint8))
    image.save(folder / "photos" / f"{i}.png")
    image.save(folder / "jpegs" / f"{i}.jpg", quality=20)
  return folder


def _run(arguments, cwd, devices=8) -> subprocess.CompletedProcess:
  # `python` of this environment first on PATH, as for a user with the venv activated (launch/local.sh).
  env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
         "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}
  result = subprocess.run(arguments, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  foreign = [line for line in result.stderr.splitlines() if any(word in line for word in FOREIGN)]
  assert not foreign, foreign[:3]
  return result


@pytest.mark.slow
def test_relative_paths_through_train_evaluate_restore_and_export(user_folder):
  _run([str(ROOT / "launch" / "local.sh"), "dacar4:small", "runs/tiny", *TINY_RUN], user_folder)
  assert (user_folder / "runs" / "tiny" / "checkpoints" / "2" / "state").is_dir()

  # The rest on one device, as on most users' machines (oneDNN convolutions), from an 8-device checkpoint.
  python = [sys.executable, "-m"]
  _run(python + ["jaxcar.evaluate", "--workdir=runs/tiny", "--dataset=photos", "--qualities=10",
                 "--output_dir=eval/tiny"], user_folder, devices=1)
  assert json.loads((user_folder / "eval" / "tiny" / "summary.json").read_text())["qualities"]["10"]["images"] == 2

  restored = _run(python + ["jaxcar.restore", "jpegs", "--output", "restored", "--workdir=runs/tiny"], user_folder,
                  devices=1)
  assert sorted(p.name for p in (user_folder / "restored").iterdir()) == ["0.png", "1.png"]
  assert (restored.stdout + restored.stderr).count("restored 2 file(s)") == 1

  _run(python + ["jaxcar.export", "--workdir=runs/tiny", "--output_dir=exported", "--formats=safetensors,stablehlo"],
       user_folder, devices=1)
  _run(python + ["jaxcar.restore", "jpegs/0.jpg", "--output", "from_export", "--weights=exported/dacar4.safetensors"],
       user_folder, devices=1)
  assert (user_folder / "from_export" / "0.png").is_file()
