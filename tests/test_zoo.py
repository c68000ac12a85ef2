"""The pretrained models shipped inside the package: manifests, integrity checks, and that each one
restores an embedded photograph better than its JPEG at low, middle and high quality."""

import hashlib
import json
import os
import shutil
import subprocess
import sys

import jax
import ml_collections
import numpy as np
import pytest
from PIL import Image

from jaxcar import evaluate, loading, models, restore, zoo
from jaxcar.data import sources

MAX_BYTES = 10_000_000
MANIFEST_KEYS = ("name", "aliases", "description", "file", "sha256", "bytes", "parameters", "config", "training",
                 "scores")
TRAINING_KEYS = ("command", "steps", "patches", "data", "validation", "cpu_hours", "commit", "host")


def test_color_and_grey_are_shipped():
  assert {"color", "grey"} <= set(zoo.aliases())
  assert zoo.manifest("color")["config"]["data"]["color"] == "rgb"
  assert zoo.manifest("grey")["config"]["data"]["color"] == "grey"


@pytest.mark.parametrize("name", sorted(zoo.manifests()))
def test_manifest_describes_its_file(name):
  manifest = zoo.manifest(name)
  assert set(MANIFEST_KEYS) <= set(manifest) and set(TRAINING_KEYS) <= set(manifest["training"])
  data = zoo.weights_path(name).read_bytes()
  assert len(data) == manifest["bytes"] <= MAX_BYTES
  assert hashlib.sha256(data).hexdigest() == manifest["sha256"]
  loaded = zoo.load(name)
  assert models.param_count(loaded.params) == manifest["parameters"]
  assert manifest["training"]["command"].startswith("python -m jaxcar.train --config=")
  for dataset, by_quality in manifest["scores"].items():
    for quality, entry in by_quality.items():  # the published claim: never worse than the JPEG
      assert entry["model"]["psnr"] > entry["jpeg"]["psnr"], (dataset, quality)


@pytest.mark.parametrize("name", sorted(zoo.aliases()))
def test_restores_an_embedded_photo_better_than_its_jpeg(name):
  loaded = loading.load_model(pretrained=name)
  photo = sources.load_image(sources.list_images("embedded:validation")[0], loaded.color)  # coffee, 400x600
  settings = evaluate.Settings(bucket=0)
  for quality in (10, 50, 90):
    row, _ = evaluate.evaluate_image(loaded, photo, quality, settings)
    assert row["psnr"] > row["jpeg_psnr"] + (0.3 if quality == 10 else 0.0), (name, quality, row)


def test_restore_picks_the_model_by_file_colour(tmp_path):
  photo = sources.load_image(sources.list_images("embedded:validation")[0], "rgb")[:96, :128]
  Image.fromarray(photo).save(tmp_path / "colour.jpg", quality=20)
  Image.fromarray(photo).convert("L").save(tmp_path / "grey.jpg", quality=20)
  chooser = restore.ModelByColor()
  result = restore.restore_files(chooser, [str(tmp_path / "colour.jpg"), str(tmp_path / "grey.jpg")],
                                 tmp_path / "out", restore.Settings())
  assert len(result["restored"]) == 2 and not result["skipped"]
  assert Image.open(tmp_path / "out" / "colour.png").mode == "RGB"
  assert Image.open(tmp_path / "out" / "grey.png").mode == "L"
  assert sorted(loaded.color for loaded in chooser._loaded.values()) == ["grey", "rgb"]


def test_unknown_name_is_one_line():
  with pytest.raises(zoo.ZooError, match="available: .*color"):
    zoo.load("colour-v9")
  with pytest.raises(ValueError, match="drop --config"):
    loading.load_model(zoo.load("grey").config, pretrained="grey")


@pytest.fixture
def zoo_copy(tmp_path, monkeypatch):
  """The shipped zoo copied to a folder the test may damage."""
  folder = tmp_path / "zoo"
  shutil.copytree(zoo.FOLDER, folder, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
  monkeypatch.setattr(zoo, "FOLDER", folder)
  zoo.manifests.cache_clear()
  yield folder
  zoo.manifests.cache_clear()


def test_altered_weights_are_refused(zoo_copy):
  path = zoo_copy / zoo.manifest("grey")["file"]
  data = bytearray(path.read_bytes())
  data[-4:] = b"\x00\x00\xc0\x7f"  # a float32 NaN in place of the last value
  path.write_bytes(bytes(data))
  with pytest.raises(zoo.ZooError, match="SHA-256"):
    zoo.load("grey")
  manifest_path = zoo_copy / f"{zoo.resolve('grey')}.json"
  manifest = json.loads(manifest_path.read_text())
  manifest["sha256"] = hashlib.sha256(bytes(data)).hexdigest()  # digest forged too: the values are checked
  manifest_path.write_text(json.dumps(manifest))
  zoo.manifests.cache_clear()
  with pytest.raises(ValueError, match="non-finite"):
    zoo.load("grey")


def test_training_can_start_from_a_shipped_model():
  from jaxcar.training import steps, supervised  # pylint: disable=import-outside-toplevel
  shipped = zoo.load("grey")
  config = ml_collections.ConfigDict(shipped.config.to_dict())
  config.init_from = "grey"
  state = supervised.SupervisedTrainer(config, steps.make_mesh()).init_state()
  for got, want in zip(jax.tree_util.tree_leaves(state.params), jax.tree_util.tree_leaves(shipped.params)):
    np.testing.assert_array_equal(np.asarray(got), want)
  config.model.options.features = 8  # another network: refused, naming the mismatch
  with pytest.raises(ValueError, match="init_from=grey"):
    supervised.SupervisedTrainer(config, steps.make_mesh()).init_state()


def test_a_deeper_network_starts_as_the_shipped_one():
  from jaxcar.training import steps, supervised  # pylint: disable=import-outside-toplevel
  parent = zoo.load("grey-v3")
  config = ml_collections.ConfigDict(parent.config.to_dict())
  config.init_from = "grey-v3"
  config.model.options.num_blocks += 2  # two residual blocks more, appended as the identity
  trainer = supervised.SupervisedTrainer(config, steps.make_mesh())
  grown = trainer.init_state().params
  assert set(grown) - set(parent.params) == {"residual_8", "residual_9"}
  assert not np.any(np.asarray(grown["residual_9"]["conv2"]["kernel"]))
  assert np.any(np.asarray(grown["residual_9"]["conv1"]["kernel"]))  # learnable once conv2 moves
  inputs = jax.numpy.asarray(np.random.default_rng(0).uniform(-1, 1, (1, 24, 24, 2)), jax.numpy.float32)
  np.testing.assert_array_equal(np.asarray(trainer.model.apply({"params": grown}, inputs)),
                                np.asarray(models.from_config(parent.config).apply({"params": parent.params}, inputs)))
  config.model.options.num_blocks = 6  # shallower: parameters would be dropped, refused
  with pytest.raises(ValueError, match="init_from=grey-v3"):
    supervised.SupervisedTrainer(config, steps.make_mesh()).init_state()


def _cli(*args, cwd):
  """A jaxcar CLI as a user runs it: its own process (one CPU device, no test setup), relative paths."""
  env = {key: value for key, value in os.environ.items() if key != "XLA_FLAGS"}
  done = subprocess.run([sys.executable, "-m", *args], cwd=cwd, env=env, capture_output=True, text=True,
                        timeout=600, check=False)
  assert done.returncode == 0, done.stderr[-2000:]
  return done.stdout


def test_cli_restore_needs_no_model_flags_and_the_others_take_model(tmp_path):
  photo = sources.load_image(sources.list_images("embedded:validation")[1], "rgb")[:120, :160]
  Image.fromarray(photo).save(tmp_path / "photo.jpg", quality=15)
  _cli("jaxcar.restore", "photo.jpg", "--output", "restored", cwd=tmp_path)
  assert Image.open(tmp_path / "restored" / "photo.png").size == (160, 120)
  _cli("jaxcar.export", "--model=grey", "--formats=safetensors", "--output_dir=exported", cwd=tmp_path)
  reloaded = loading.load_model(weights=tmp_path / "exported" / "qcn.safetensors")
  for got, want in zip(jax.tree_util.tree_leaves(reloaded.predictor.params), jax.tree_util.tree_leaves(zoo.load("grey").params)):
    np.testing.assert_array_equal(got, want)
  (tmp_path / "photos").mkdir()
  Image.fromarray(photo).save(tmp_path / "photos" / "clean.png")
  _cli("jaxcar.evaluate", "--model=color", "--dataset=photos", "--qualities=15", "--bucket=0", "--output_dir=scores",
       cwd=tmp_path)
  summary = json.loads((tmp_path / "scores" / "summary.json").read_text())
  assert summary["weights"] == f"jaxcar.zoo:{zoo.resolve('color')}"
  assert summary["qualities"]["15"]["model"]["psnr"] > summary["qualities"]["15"]["jpeg"]["psnr"]


def test_cli_restore_fails_when_nothing_was_restored(tmp_path):
  (tmp_path / "notes.jpg").write_text("not a JPEG")
  env = {key: value for key, value in os.environ.items() if key != "XLA_FLAGS"}
  done = subprocess.run([sys.executable, "-m", "jaxcar.restore", "notes.jpg", "missing.jpg", "--output", "out"],
                        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600, check=False)
  assert done.returncode != 0
  assert done.stderr.strip().splitlines()[-1] == (
      "error: ValueError: nothing restored: all 2 input(s) were skipped (reasons above)")
