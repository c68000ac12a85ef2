"""Evaluation: the released DACAR3 reproduces its reference number; buckets, ensemble, reports, bad input."""

import csv
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from PIL import Image

from jaxcar.configs import base
from jaxcar import convert, evaluate, loading, metrics, models, predict
from jaxcar.data import jpeg


def _dacar3():
  config = base.get_config()
  config.model.name = "dacar3"
  config.data.color = "grey"
  model = models.from_config(config)
  return loading.LoadedModel(config, predict.Predictor(model, models.init(model, jax.random.key(0))["params"]), "t")


@pytest.mark.shared
def test_released_dacar3_reproduces_classic5_reference(shared, tmp_path):
  # BUILD_NOTES.md, Released weights: Classic5, q10: JPEG 27.821, DACAR3 29.171.
  command = [sys.executable, "-m", "jaxcar.evaluate", "--config=dacar3",
             f"--weights={shared / 'pretrained' / 'dacar3_q10_keras.h5'}", "--dataset=classic5", "--qualities=10",
             f"--output_dir={tmp_path}", f"--shared={shared}"]
  subprocess.run(command, check=True, capture_output=True, env={**os.environ, "JAX_PLATFORMS": "cpu"})
  report = json.loads((tmp_path / "summary.json").read_text())
  assert report["protocol"] == "reference"  # --protocol=auto: DACAR3 was published on unpadded JPEGs
  summary = report["qualities"]["10"]
  assert summary["images"] == 5
  assert summary["jpeg"]["psnr"] == pytest.approx(27.821, abs=5e-4)
  assert summary["model"]["psnr"] == pytest.approx(29.171, abs=5e-4)
  assert summary["model"]["ssim"] > summary["jpeg"]["ssim"] and summary["model"]["psnr_b"] > summary["jpeg"]["psnr_b"]
  with open(tmp_path / "per_image.csv") as file:
    assert len(list(csv.DictReader(file))) == 5
  assert "| 10 | 5 | 27.821 |" in (tmp_path / "summary.md").read_text()
  assert (tmp_path / "psnr_vs_quality.png").stat().st_size > 1000


@pytest.mark.shared
def test_weights_of_another_network_name_the_mismatch(shared):
  config = base.get_config()
  config.model.name = "dacar3"
  with pytest.raises(convert.ConversionError, match="7 weighted layers.*network has 3"):
    loading.load_model(config, weights=shared / "pretrained" / "sacar6_q10_keras.h5")


def test_bucket_padding_only_touches_the_border():
  loaded = _dacar3()
  image = np.random.default_rng(0).random((50, 70, 1)).astype(np.float32)
  exact = predict.predict(loaded.predictor, image, bucket=0)
  bucketed = predict.predict(loaded.predictor, image, bucket=64)
  assert bucketed.shape == exact.shape == (50, 70, 1)
  radius = 9  # 9x9, 7x7, 5x5 convolutions: 4 + 3 + 2
  np.testing.assert_allclose(bucketed[:-radius, :-radius], exact[:-radius, :-radius], atol=1e-6)
  assert np.abs(bucketed - exact).max() > 1e-4  # the border does see the padding


def test_dihedral_transforms_invert_and_ensemble_averages():
  image = np.random.default_rng(1).random((6, 10, 2))
  views = [predict.dihedral(image, i) for i in range(8)]
  assert len({v.tobytes() for v in views}) == 8
  for i, view in enumerate(views):
    np.testing.assert_array_equal(predict.undo_dihedral(view, i), image)
  equivariant = lambda x, _: 2 * x
  np.testing.assert_allclose(predict.predict_ensemble(equivariant, image), 2 * image)
  position_dependent = lambda x, _: x + np.arange(x.shape[0])[:, None, None]
  averaged = predict.predict_ensemble(position_dependent, image)
  assert not np.allclose(averaged, position_dependent(image, None))


def test_folder_dataset_scores_jpeg_and_skips_unreadable_files(tmp_path):
  pixels = np.asarray(Image.fromarray(np.random.default_rng(2).integers(0, 256, (6, 7), np.uint8)).resize((56, 48)))
  Image.fromarray(pixels).save(tmp_path / "a.png")
  (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
  loaded = _dacar3()
  paths = [str(tmp_path / "a.png"), str(tmp_path / "broken.png")]
  rows = evaluate.evaluate(loaded, paths, evaluate.Settings(qualities=(10, 30)), image_dir=tmp_path / "images")
  assert [(r["image"], r["quality"]) for r in rows] == [("a.png", 10), ("a.png", 30)]
  decoded = jpeg.decode(jpeg.compress(pixels[..., None], 10), "grey")
  assert rows[0]["jpeg_psnr"] == pytest.approx(metrics.psnr(pixels[..., None], decoded), abs=1e-12)
  assert rows[1]["jpeg_psnr"] > rows[0]["jpeg_psnr"]
  restored = np.asarray(Image.open(tmp_path / "images" / "q10" / "a.png"))
  assert rows[0]["psnr"] == pytest.approx(metrics.psnr(pixels, restored), abs=1e-12)
  summary = evaluate.summarize(rows)
  assert summary[30]["jpeg"]["psnr"] == pytest.approx(rows[1]["jpeg_psnr"])


def test_unknown_dataset_is_one_line_error():
  with pytest.raises(FileNotFoundError, match="neither a folder"):
    evaluate.resolve_dataset("live2")


def test_model_from_a_training_workdir(tmp_path):
  import orbax.checkpoint as ocp
  from jaxcar.training import checkpoint
  trained = _dacar3()
  params = jax.tree_util.tree_map(lambda x: x + 1.0, trained.predictor.params)
  checkpoint.write_config(tmp_path, trained.config)
  with ocp.CheckpointManager(tmp_path / checkpoint.CHECKPOINT_DIR) as manager:
    manager.save(7, args=ocp.args.Composite(state=ocp.args.StandardSave({"step": 7, "params": params})))
    manager.wait_until_finished()
  loaded = loading.load_model(workdir=tmp_path)  # config from the run's config.json
  assert loaded.config.model.name == "dacar3" and loaded.color == "grey"
  for restored, expected in zip(jax.tree_util.tree_leaves(loaded.predictor.params), jax.tree_util.tree_leaves(params)):
    np.testing.assert_array_equal(np.asarray(restored), np.asarray(expected))


def _tiny_qcn(name="qcn"):
  """A random 1-block QCN/QGCN with the QCN family's data settings (maps, [-1, 1], global image)."""
  config = base.get_config()
  config.model.name = name
  config.model.options = {"num_blocks": 2 if name == "qgcn" else 1, "features": 8}
  config.data.update(quantization_maps=True, value_range="minus_one_one", global_size=112 if name == "qgcn" else 0)
  model = models.from_config(config)
  return loading.LoadedModel(config, predict.Predictor(model, models.init(model, jax.random.key(1))["params"]), "t")


def test_auto_protocol_is_qgcns_for_the_qcn_family_only():
  assert evaluate.protocol_for("qcn") == evaluate.protocol_for("qgcn") == "qgcn"
  assert evaluate.protocol_for("dacar3") == evaluate.protocol_for("edsr") == "reference"
  assert evaluate.protocol_for("qcn", "reference") == "reference"
  with pytest.raises(ValueError, match="unknown evaluation protocol"):
    evaluate.protocol_for("qcn", "matlab")


def test_qgcn_protocol_pads_the_ground_truth_to_the_jpeg_grid_before_compressing(monkeypatch):
  image = np.random.default_rng(3).integers(0, 256, (50, 70, 3), np.uint8)
  source = evaluate.jpeg_source(image, "qgcn")
  assert source.shape == (56, 72, 3)
  np.testing.assert_array_equal(source[:50, :70], image)
  np.testing.assert_array_equal(source[50:, :70], np.broadcast_to(image[-1:], (6, 70, 3)))  # edge rows
  np.testing.assert_array_equal(source[:, 70:], np.repeat(source[:, 69:70], 2, axis=1))
  assert evaluate.jpeg_source(image, "reference") is image
  assert evaluate.jpeg_source(image[:48, :64], "qgcn").shape == (48, 64, 3)
  # The network, and so QGCN's global image, sees the padded JPEG; scores are on the original size.
  seen = []
  loaded = _tiny_qcn("qgcn")
  real_restore = loaded.restore
  monkeypatch.setattr(loaded, "restore", lambda decoded, *rest, **named: seen.append(decoded.shape) or
                      real_restore(decoded, *rest, **named))
  row, restored = evaluate.evaluate_image(loaded, image, 10, evaluate.Settings(bucket=0))
  assert seen == [(56, 72, 3)] and restored.shape == image.shape
  official = jpeg.decode(jpeg.compress(source, 10), "rgb")[:50, :70]
  assert row["jpeg_psnr"] == pytest.approx(metrics.psnr(image, official), abs=1e-12)
  assert row["psnr"] == pytest.approx(metrics.psnr(image, restored), abs=1e-12)


def test_the_two_protocols_differ_only_off_the_jpeg_grid():
  rng = np.random.default_rng(4)
  loaded = _tiny_qcn()
  ragged, aligned = rng.integers(0, 256, (50, 70, 3), np.uint8), rng.integers(0, 256, (48, 64, 3), np.uint8)
  scores = {protocol: [evaluate.evaluate_image(loaded, image, 10, evaluate.Settings(bucket=0, protocol=protocol))[0]
                       for image in (ragged, aligned)] for protocol in evaluate.PROTOCOLS}
  assert scores["qgcn"][1] == scores["reference"][1]
  assert scores["qgcn"][0]["jpeg_psnr"] != scores["reference"][0]["jpeg_psnr"]
  assert scores["qgcn"][0]["psnr"] != scores["reference"][0]["psnr"]
