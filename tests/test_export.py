"""Exports load back outside jaxcar and compute the same restoration."""

import json
import os
import stat

import jax
import ml_collections
import numpy as np
import pytest

from jaxcar.configs import base
from jaxcar import export, loading, models, predict
from jaxcar.ops import conv


def _tiny_qcn():
  config = base.get_config()
  config.model.name = "qcn"
  config.model.options = ml_collections.ConfigDict(dict(color="grey", num_blocks=2, features=8))
  config.data.color = "grey"
  config.data.value_range = "minus_one_one"
  config.data.quantization_maps = True
  model = models.from_config(config)
  # Random, non-zero parameters everywhere (QCN initialises some biases to 0).
  params = models.init(model, jax.random.key(0))["params"]
  leaves, tree = jax.tree_util.tree_flatten(params)
  keys = jax.random.split(jax.random.key(1), len(leaves))
  params = jax.tree_util.tree_unflatten(tree, [l + 0.05 * jax.random.normal(k, l.shape) for l, k in zip(leaves, keys)])
  return loading.LoadedModel(config, predict.Predictor(model, params), "test")


@pytest.fixture(scope="module")
def loaded():
  return _tiny_qcn()


def _image(loaded, height=24, width=40, batch=2, seed=0):
  shape = (batch, height, width, loaded.predictor.model.input_channels)
  return np.random.default_rng(seed).uniform(-1, 1, shape).astype(np.float32)


def _reference(loaded, image):
  return np.asarray(loaded.predictor.forward(loaded.predictor.params, image))


def test_safetensors_round_trip_with_manifest(loaded, tmp_path):
  (path,) = export.export(loaded, tmp_path, "tiny", ["safetensors"])
  described = json.loads(loading.manifest_path(path).read_text())
  assert described["input"]["channels"] == 2 and described["input"]["value_range"] == "minus_one_one"
  reloaded = loading.load_model(weights=path)  # the config comes from the manifest
  image = _image(loaded)
  np.testing.assert_array_equal(_reference(reloaded, image), _reference(loaded, image))


def test_safetensors_for_another_network_names_the_mismatch(loaded, tmp_path):
  (path,) = export.export(loaded, tmp_path, "tiny", ["safetensors"])
  other = base.get_config()
  other.model.name = "dacar3"
  with pytest.raises(ValueError, match="missing conv1/kernel"):
    loading.load_model(other, weights=path)


def test_stablehlo_runs_without_jaxcar_at_any_size(loaded, tmp_path):
  (path,) = export.export(loaded, tmp_path, "tiny", ["stablehlo"])
  function = jax.export.deserialize(path.read_bytes())
  for height, width, batch in ((24, 40, 2), (48, 16, 1)):
    image = _image(loaded, height, width, batch, seed=height)
    np.testing.assert_allclose(np.asarray(function.call(image)), _reference(loaded, image), atol=1e-5)


def test_torch_state_dict_loads_into_the_pytorch_twin(loaded, tmp_path):
  torch = pytest.importorskip("torch")
  from benchmarks import torch_twins
  (path,) = export.export(loaded, tmp_path, "tiny", ["torch"])
  twin = torch_twins.QCN(color="grey", num_blocks=2, features=8)
  twin.load_state_dict(torch.load(path, weights_only=True))  # strict: every official key, nothing else
  image = _image(loaded)
  with torch.no_grad():
    output = twin(torch.from_numpy(image.transpose(0, 3, 1, 2))).numpy().transpose(0, 2, 3, 1)
  np.testing.assert_allclose(output, _reference(loaded, image), atol=1e-5)


def test_torch_export_refuses_keras_networks(tmp_path):
  config = base.get_config()
  config.model.name = "dacar3"
  model = models.from_config(config)
  loaded = loading.LoadedModel(config, predict.Predictor(model, models.init(model, jax.random.key(0))["params"]), "t")
  with pytest.raises(ValueError, match="not a PyTorch network"):
    export.export(loaded, tmp_path, "dacar3", ["safetensors", "torch"])
  assert not list(tmp_path.iterdir())  # nothing half-written


# Smaller than the seeds' defaults where the network is deep, so every network runs in seconds.
SMALL_OPTIONS = {"qcn": dict(num_blocks=2, features=8), "qgcn": dict(num_blocks=2, features=8),
                 "edsr": dict(num_blocks=2, features=8)}


def _loaded_network(name):
  config = base.get_config()
  config.model.name = name
  config.model.options = ml_collections.ConfigDict(SMALL_OPTIONS.get(name, {}))
  model = models.from_config(config)
  params = models.init(model, jax.random.key(0))["params"]
  return loading.LoadedModel(config, predict.Predictor(model, params), "test")


def _assert_same_params(actual, expected):
  assert jax.tree_util.tree_structure(actual) == jax.tree_util.tree_structure(expected)
  for got, want in zip(jax.tree_util.tree_leaves(actual), jax.tree_util.tree_leaves(expected)):
    assert np.shape(got) == np.shape(want)
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


@pytest.mark.parametrize("name", models.names())
def test_every_network_round_trips_through_every_format(name, tmp_path):
  loaded = _loaded_network(name)
  formats = ["safetensors", "stablehlo"] + (["torch"] if export.torch_exportable(name) else [])
  if "torch" in formats:
    pytest.importorskip("torch")
  paths = dict(zip(formats, export.export(loaded, tmp_path, name, formats)))
  # safetensors loads back in every CLI (config from its manifest), parameter for parameter
  _assert_same_params(loading.load_model(weights=paths["safetensors"]).predictor.params, loaded.predictor.params)
  if "torch" in paths:  # the official state_dict layout converts back exactly
    _assert_same_params(loading.load_model(loaded.config, weights=paths["torch"]).predictor.params,
                        loaded.predictor.params)
  inputs = [np.asarray(x) + np.random.default_rng(0).uniform(0, 1, x.shape).astype(np.float32)
            for x in models.dummy_inputs(loaded.predictor.model)]
  function = jax.export.deserialize(paths["stablehlo"].read_bytes())
  np.testing.assert_allclose(np.asarray(function.call(*inputs)),
                             np.asarray(loaded.predictor.forward(loaded.predictor.params, *inputs)),
                             rtol=1e-4, atol=1e-5)


def test_stablehlo_export_on_the_onednn_path(loaded, tmp_path, monkeypatch):
  # One CPU device (most users) takes oneDNN; 8 simulated devices do not, unless asked, as here. Its
  # kernel check cannot size symbolic shapes, and the file must not call jaxcar's library anyway.
  monkeypatch.setattr(conv, "_backend", conv.backend())  # restored after the test
  conv.set_backend("onednn")
  (path,) = export.export(loaded, tmp_path, "tiny", ["stablehlo"])
  function = jax.export.deserialize(path.read_bytes())
  assert "jaxcar_conv" not in function.mlir_module()
  image = _image(loaded, 16, 24, 1)
  np.testing.assert_allclose(np.asarray(function.call(image)), _reference(loaded, image), atol=1e-5)


def test_manifest_output_channels_and_file_modes(loaded, tmp_path):
  written = export.export(loaded, tmp_path, "tiny", ["safetensors", "stablehlo"])
  umask = os.umask(0)
  os.umask(umask)
  for path in written:
    described = json.loads(loading.manifest_path(path).read_text())
    assert described["output"]["channels"] == 1  # a grey network
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask, path  # shareable like any file written
