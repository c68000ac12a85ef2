"""End-to-end training: every config runs, loss falls, resume is exact, bad input is a one-line error."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
import jax

from jaxcar import cli
from jaxcar.training import checkpoint, loop, validation

ROOT = Path(__file__).resolve().parents[1]

# Tiny networks and patches: each config's real code path, in seconds on a shared 2-core CPU.
TINY = {
    # Options beyond each recipe ride along here: EMA, gradient clipping, bf16 compute.
    "arcnn": [], "dacar3": [], "dacar4": [], "dacar5": ["ema_decay=0.9"], "sacar6": ["optimizer.grad_clip_norm=1.0"],
    "carcnn": ["batch_size=8"],
    "restorer": ["data.patch_size=32"],
    "nogan": ["data.patch_size=32", "nogan.generator_steps=1", "nogan.discriminator_steps=1",
              "nogan.adversarial_steps=1", "nogan.perceptual_weight=1.0", "nogan.vgg19_weights=random",
              "nogan.vgg19_last_index=3"],
    "qcn": ["model.options.num_blocks=1", "model.options.features=8", "model.options.dtype=bfloat16"],
    "qgcn": ["model.options.num_blocks=2", "model.options.features=8"],
}


def tiny_config(name, images, extra=()):
  overrides = [f"data.source={images}", f"data.validation={images}", "data.num_workers=0", "batch_size=8",
               "data.patch_size=16", "num_steps=1", "log_every=1", "eval_every=1", "checkpoint_every=1"]
  return cli.load_config(f"{name}:small", overrides + TINY[name] + list(extra))


@pytest.mark.parametrize("name", sorted(TINY))
def test_one_step_of_every_config(name, images, tmp_path):
  metrics = loop.train_and_evaluate(tiny_config(name, images), tmp_path)
  assert np.isfinite(metrics["validation_psnr"])
  lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  assert any("validation/psnr" in line for line in lines)
  assert list((tmp_path / "samples").glob("validation_*.png"))
  params = checkpoint.load_params(tmp_path)
  assert jax.tree_util.tree_leaves(params)


def test_loss_decreases_on_the_embedded_photos(tmp_path):
  config = cli.load_config("dacar4:small", ["num_steps=60", "log_every=10", "eval_every=60",
                                              "checkpoint_every=60", "batch_size=8", "data.patch_size=32"])
  loop.train_and_evaluate(config, tmp_path)
  losses = [r["loss"] for r in map(json.loads, (tmp_path / "metrics.jsonl").read_text().splitlines())
            if "loss" in r]
  assert losses[-1] < 0.5 * losses[0], losses


def test_input_wait_is_the_share_of_time_blocked_on_data(images, tmp_path, monkeypatch):
  # A pipeline that takes 0.2 s per batch, around steps of a few ms: the loop must report mostly waiting.
  fetch = loop.steps.global_batch
  monkeypatch.setattr(loop.steps, "global_batch", lambda batch, mesh: (time.sleep(0.2), fetch(batch, mesh))[1])
  config = tiny_config("dacar4", images, ["num_steps=8", "log_every=4", "eval_every=100", "checkpoint_every=100"])
  loop.train_and_evaluate(config, tmp_path)
  waits = [r["input_wait_fraction"] for r in map(json.loads, (tmp_path / "metrics.jsonl").read_text().splitlines())
           if "input_wait_fraction" in r]
  assert len(waits) == 2 and waits[-1] > 0.5, waits


def _train_cli(workdir, overrides, images):
  args = [f"--config.{o}" for o in [f"data.source={images}", f"data.validation={images}", "data.num_workers=0",
                                     "batch_size=8", "data.patch_size=16", "log_every=1", "eval_every=1000",
                                     *overrides]]
  return [sys.executable, "-m", "jaxcar.train", "--config=dacar4:small", f"--workdir={workdir}", *args]


def _wait_for(predicate, process, timeout=240):
  start = time.time()
  while not predicate():
    assert process.poll() is None, process.communicate()
    assert time.time() - start < timeout, "timed out"
    time.sleep(0.2)


RESUME_STEPS = 24  # well past the first checkpoint (4), so the kill lands before the end
RESUME_OVERRIDES = [f"num_steps={RESUME_STEPS}", "checkpoint_every=4"]


@pytest.fixture(scope="module")
def uninterrupted(images, tmp_path_factory):
  """Params after RESUME_STEPS steps in one go: the reference both kill tests must match."""
  workdir = tmp_path_factory.mktemp("uninterrupted")
  loop.train_and_evaluate(cli.load_config("dacar4:small", _overrides(images, RESUME_OVERRIDES)), workdir)
  return checkpoint.load_params(workdir)


@pytest.mark.parametrize("kill", [signal.SIGTERM, signal.SIGKILL])
def test_killed_then_resumed_equals_uninterrupted_bit_for_bit(kill, images, uninterrupted, tmp_path):
  killed = tmp_path / "killed"
  # A huge run so the kill lands mid-run; the resume below finishes at RESUME_STEPS steps.
  process = subprocess.Popen(_train_cli(killed, ["num_steps=100000", "checkpoint_every=4"], images),
                             cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  _wait_for(lambda: (killed / "checkpoints" / "4" / "state").is_dir(), process)
  process.send_signal(kill)
  _, stderr = process.communicate(timeout=120)
  if kill == signal.SIGTERM:
    assert process.returncode == 0, stderr
  saved = sorted(int(p.name) for p in (killed / "checkpoints").iterdir() if p.name.isdigit())
  assert saved and saved[-1] < RESUME_STEPS, saved

  loop.train_and_evaluate(cli.load_config("dacar4:small", _overrides(images, RESUME_OVERRIDES)), killed)
  for a, b in zip(jax.tree_util.tree_leaves(uninterrupted), jax.tree_util.tree_leaves(checkpoint.load_params(killed))):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def _overrides(images, extra):
  return [f"data.source={images}", f"data.validation={images}", "data.num_workers=0", "batch_size=8",
          "data.patch_size=16", "log_every=1", "eval_every=1000", *extra]


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(images, tmp_path):
  good = _overrides(images, ["num_steps=2", "checkpoint_every=1"])
  loop.train_and_evaluate(cli.load_config("dacar4:small", good), tmp_path)
  exploding = _overrides(images, ["num_steps=6", "checkpoint_every=1",
                                  "optimizer.learning_rate=1e30"])
  with pytest.raises(loop.NonFiniteLoss, match="last good checkpoint"):
    loop.train_and_evaluate(cli.load_config("dacar4:small", exploding), tmp_path)
  saved = sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit())
  assert saved[-1] == 2
  assert all(np.isfinite(leaf).all() for leaf in jax.tree_util.tree_leaves(checkpoint.load_params(tmp_path)))


def test_checkpoint_of_another_config_is_a_clear_error(images, tmp_path):
  loop.train_and_evaluate(tiny_config("dacar4", images), tmp_path)
  with pytest.raises(checkpoint.CheckpointMismatch, match="fresh --workdir"):
    loop.train_and_evaluate(tiny_config("dacar3", images), tmp_path)


def test_unwritable_workdir_and_missing_data_are_clear_errors(images, tmp_path):
  blocker = tmp_path / "file"
  blocker.write_text("")
  with pytest.raises(loop.WorkdirError, match="not writable"):
    loop.train_and_evaluate(tiny_config("dacar4", images), blocker / "run")
  with pytest.raises(FileNotFoundError, match="not found"):
    loop.train_and_evaluate(tiny_config("dacar4", images, ["data.source=/no/such/folder"]), tmp_path / "run")


def test_nogan_perceptual_loss_without_weights_is_a_clear_error(images, tmp_path):
  config = tiny_config("nogan", images, ["nogan.vgg19_weights="])
  with pytest.raises(ValueError, match="vgg19_weights"):
    loop.train_and_evaluate(config, tmp_path)


def test_cli_errors_are_one_line(tmp_path):
  result = subprocess.run([sys.executable, "-m", "jaxcar.train", "--config=qcnn", f"--workdir={tmp_path}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert result.returncode != 0
  assert result.stderr.strip().splitlines() == [result.stderr.strip()] and "did you mean" in result.stderr


def test_sample_grid_panels_are_captioned():
  rng = np.random.default_rng(0)
  clean = rng.integers(0, 256, (40, 60, 1), dtype=np.uint8)
  compressed = np.clip(clean.astype(int) + rng.integers(-20, 20, clean.shape), 0, 255).astype(np.uint8)
  example = validation.Example("x", clean, compressed, {})
  grid = validation.sample_grid(example, compressed)
  strip, panels = grid[:validation.CAPTION_HEIGHT], grid[validation.CAPTION_HEIGHT:]
  np.testing.assert_array_equal(panels, np.repeat(np.concatenate([compressed, compressed, clean], 1), 3, -1))
  for panel in range(3):  # each panel's caption (name and PSNR) is drawn above it
    assert strip[:, panel * 60:(panel + 1) * 60].min() < 100, panel
