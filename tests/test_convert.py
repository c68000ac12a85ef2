"""Weight conversion: PyTorch twins -> Flax give the same outputs, names round-trip exactly, Keras
HDF5 files in the released layout load in network order, and bad weights fail with one-line errors."""

import h5py
import jax
import numpy as np
import pytest
import safetensors.numpy

import jaxcar.models
from jaxcar import convert
from jaxcar.convert import ConversionError, pytorch

from optional import requires_torch, torch, torch_twins

QGCN_GLOBAL = 112

# (registry name, options, twin factory, image channels of the main input, height, width)
TORCH_NETWORKS = {
    "arcnn_rgb": ("arcnn", {"color": "rgb"}, lambda: torch_twins.ARCNN("rgb"), 3, 20, 14),
    "arcnn_grey": ("arcnn", {"color": "grey"}, lambda: torch_twins.ARCNN("grey"), 1, 20, 14),
    "qcn_rgb": ("qcn", {"num_blocks": 4}, lambda: torch_twins.QCN(num_blocks=4), 5, 16, 12),
    "qcn_grey": ("qcn", {"color": "grey", "num_blocks": 4}, lambda: torch_twins.QCN("grey", num_blocks=4), 2, 16, 12),
    "edsr": ("edsr", {"num_blocks": 4}, lambda: torch_twins.EDSR(num_blocks=4), 3, 16, 12),
    "qgcn_rgb": ("qgcn", {"num_blocks": 4}, lambda: torch_twins.QGCN(num_blocks=4), 5, 16, 12),
    "qgcn_grey": ("qgcn", {"color": "grey", "num_blocks": 4}, lambda: torch_twins.QGCN("grey", num_blocks=4), 2, 16, 12),
    "restorer_shipped": ("restorer", {}, lambda: torch_twins.Restorer("shipped"), 3, 20, 14),
    "restorer_readme": ("restorer", {"variant": "readme"}, lambda: torch_twins.Restorer("readme"), 3, 20, 14),
    "vgg19": ("vgg19", {}, lambda: torch_twins.VGG19Features(), 3, 32, 32),
}


def _twin(key, seed=0):
  """A twin with PyTorch's default init, plus random PReLU slopes so a slope mix-up cannot hide."""
  torch.manual_seed(seed)
  twin = TORCH_NETWORKS[key][2]().eval()
  with torch.no_grad():
    for name, value in twin.named_parameters():
      if value.numel() == 1:
        value.uniform_(0.0, 0.5)
  return twin


def _inputs(key, seed=1):
  _, options, _, channels, height, width = TORCH_NETWORKS[key]
  rng = np.random.default_rng(seed)
  images = [rng.uniform(-1, 1, (2, height, width, channels)).astype(np.float32)]
  if TORCH_NETWORKS[key][0] == "qgcn":
    global_channels = channels - (2 if channels == 5 else 1)
    images.append(rng.uniform(-1, 1, (2, QGCN_GLOBAL, QGCN_GLOBAL, global_channels)).astype(np.float32))
  return images


def _flax_model(key):
  name, options, *_ = TORCH_NETWORKS[key]
  return jaxcar.models.create(name, **options)


def _torch_forward(twin, images):
  with torch.no_grad():
    out = twin(*[torch.from_numpy(x.transpose(0, 3, 1, 2).copy()) for x in images])
  return out.numpy().transpose(0, 2, 3, 1)


@requires_torch
@pytest.mark.parametrize("key", sorted(TORCH_NETWORKS))
def test_torch_weights_give_the_same_output(key):
  twin, model = _twin(key), _flax_model(key)
  params = pytorch.state_dict_to_flax(twin.state_dict(), model)
  images = _inputs(key)
  expected = _torch_forward(twin, images)
  got = np.asarray(model.apply({"params": params}, *images))
  assert got.shape == expected.shape
  relative_error = np.linalg.norm(got - expected) / np.linalg.norm(expected)
  assert relative_error < 1e-5, f"{key}: relative error {relative_error:.2e}"


@requires_torch
@pytest.mark.parametrize("key", sorted(TORCH_NETWORKS))
def test_flax_torch_flax_round_trip_is_exact(key):
  model = _flax_model(key)
  params = _random_params(model)
  twin = TORCH_NETWORKS[key][2]()
  # strict load_state_dict proves every key and shape is the official one
  twin.load_state_dict({k: torch.from_numpy(v) for k, v in pytorch.flax_to_state_dict(params).items()}, strict=True)
  back = pytorch.state_dict_to_flax(twin.state_dict(), model)
  assert jax.tree.structure(back) == jax.tree.structure(params)
  for a, b in zip(jax.tree.leaves(back), jax.tree.leaves(params)):
    assert a.dtype == np.float32 and np.array_equal(a, np.asarray(b))


def _random_params(model, seed=3):
  """Random float32 params in the model's tree and network order (cheaper than a real init)."""
  rng = np.random.default_rng(seed)
  shapes = convert.expected_shapes(model)
  return convert.unflatten({p: rng.standard_normal(s).astype(np.float32) for p, s in shapes.items()})


def test_torch_key_names():
  assert pytorch.torch_key(("residual_3", "conv1", "kernel")) == "residual.3.conv1.weight"
  assert pytorch.torch_key(("conv_global_l_0", "kernel")) == "conv_global_l.0.weight"
  assert pytorch.torch_key(("base_1", "slope")) == "base.1.weight"
  assert pytorch.torch_key(("convUnit1", "prelu", "slope")) == "convUnit1.prelu.weight"


def _assert_one_line(error, *fragments):
  message = str(error.value)
  assert "\n" not in message
  for fragment in fragments:
    assert fragment in message, message


@requires_torch
def test_dataparallel_prefix_is_accepted():
  twin, model = _twin("arcnn_rgb"), _flax_model("arcnn_rgb")
  plain = pytorch.state_dict_to_flax(twin.state_dict(), model)
  prefixed = pytorch.state_dict_to_flax({"module." + k: v for k, v in twin.state_dict().items()}, model)
  for a, b in zip(jax.tree.leaves(plain), jax.tree.leaves(prefixed)):
    assert np.array_equal(a, b)


@requires_torch
def test_weights_of_another_network_are_rejected():
  with pytest.raises(ConversionError) as error:
    pytorch.state_dict_to_flax(_twin("arcnn_rgb").state_dict(), _flax_model("restorer_shipped"))
  _assert_one_line(error, "base.0.weight", "unexpected")


@requires_torch
def test_wrong_shape_names_layer_and_both_shapes():
  with pytest.raises(ConversionError) as error:
    pytorch.state_dict_to_flax(_twin("arcnn_grey").state_dict(), _flax_model("arcnn_rgb"))
  _assert_one_line(error, "base.0.weight", "(64, 1, 9, 9)", "(64, 3, 9, 9)")


@requires_torch
def test_missing_key_is_named():
  state_dict = _twin("qcn_rgb").state_dict()
  del state_dict["upscale.0.bias"]
  with pytest.raises(ConversionError) as error:
    pytorch.state_dict_to_flax(state_dict, _flax_model("qcn_rgb"))
  _assert_one_line(error, "missing", "upscale.0.bias")


def test_missing_file_is_named(tmp_path):
  for name in ("absent.pth", "absent.h5", "absent.safetensors", "absent.npz"):
    with pytest.raises(FileNotFoundError, match=name):
      convert.load_params(tmp_path / name, "arcnn")


def test_unknown_suffix_lists_valid_ones(tmp_path):
  path = tmp_path / "weights.bin"
  path.write_bytes(b"0")
  with pytest.raises(ValueError, match=r"\.safetensors"):
    convert.load_params(path, "arcnn")


@requires_torch
def test_every_file_format_loads_the_same_params(tmp_path):
  twin, model = _twin("restorer_shipped"), _flax_model("restorer_shipped")
  expected = pytorch.state_dict_to_flax(twin.state_dict(), model)
  torch.save({"state_dict": twin.state_dict()}, tmp_path / "w.pth")
  safetensors.numpy.save_file(pytorch.flax_to_state_dict(expected), str(tmp_path / "w.safetensors"))
  np.savez(tmp_path / "w.npz", **{"/".join(p): v for p, v in convert.flatten(expected).items()})
  for name in ("w.pth", "w.safetensors", "w.npz"):
    params = convert.load_params(tmp_path / name, "restorer", model)
    assert jax.tree.structure(params) == jax.tree.structure(expected)
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(expected)):
      assert np.array_equal(a, b), name


@requires_torch
def test_pickled_module_is_refused(tmp_path):
  torch.save(torch_twins.ARCNN("rgb"), tmp_path / "whole_module.pth")  # needs code to unpickle
  with pytest.raises(ConversionError) as error:
    convert.load_params(tmp_path / "whole_module.pth", "arcnn")
  _assert_one_line(error, "weights_only", "state_dict()")


def test_unreadable_safetensors_is_one_line(tmp_path):
  (tmp_path / "w.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{broken}")
  with pytest.raises(ConversionError) as error:
    convert.load_params(tmp_path / "w.safetensors", "arcnn")
  _assert_one_line(error, "w.safetensors")


@requires_torch
def test_torchvision_vgg19_file_with_classifier_loads(tmp_path):
  twin = torch_twins.VGG19Features()
  state_dict = dict(twin.state_dict())
  state_dict["classifier.0.weight"] = torch.zeros(4, 8)  # torchvision's full file also has the head
  torch.save(state_dict, tmp_path / "vgg19.pth")
  params = convert.load_params(tmp_path / "vgg19.pth", "vgg19")
  assert np.array_equal(params["features_34"]["kernel"], twin.features[34].weight.detach().numpy().transpose(2, 3, 1, 0))


# --- Keras HDF5 -------------------------------------------------------------------------------------

def _write_keras_h5(path, layers, keras_version):
  """A file in the layout of the released ones: `model_weights` with `layer_names`, one group per layer
  holding `<layer>/kernel:0` and `<layer>/bias:0`; 2.0.5 writes names as bytes, 2.12 as str."""
  encode = (lambda s: s.encode()) if keras_version == "2.0.5" else (lambda s: s)
  string_dtype = "S" if keras_version == "2.0.5" else h5py.string_dtype()
  with h5py.File(path, "w") as file:
    group = file.create_group("model_weights")
    group.attrs["keras_version"] = keras_version
    group.attrs["layer_names"] = np.array([encode(name) for name, _ in layers], dtype=string_dtype)
    for name, weights in layers:
      layer = group.create_group(name)
      names = [f"{name}/{w}:0" for w in weights]
      layer.attrs["weight_names"] = np.array([encode(n) for n in names], dtype=string_dtype) if names else np.array([])
      for weight_name, value in zip(names, weights.values()):
        layer.create_dataset(weight_name, data=value)


def _keras_layers(params, first_index):
  """Weighted layers conv2d_<first_index>... in network order, with activations in between."""
  layers = [("input_1", {})]
  modules = list(dict.fromkeys(path[:-1] for path in convert.flatten(params)))
  for i, module in enumerate(modules):
    node = params
    for key in module:
      node = node[key]
    layers += [(f"conv2d_{first_index + i}", {"kernel": np.asarray(node["kernel"]), "bias": np.asarray(node["bias"])}),
               (f"leaky_re_lu_{i}", {})]
  return layers




@pytest.mark.parametrize("name, options, keras_version, first_index", [
    ("dacar4", {}, "2.0.5", 5),
    ("sacar6", {}, "2.0.5", 7),  # conv2d_7..conv2d_13: alphabetical order would put conv2d_10 first
    ("nogan_generator", {"dense_blocks": 2}, "2.12.0", 7),
])
def test_keras_h5_round_trip(tmp_path, name, options, keras_version, first_index):
  model = jaxcar.models.create(name, **options)
  params = _random_params(model)
  _write_keras_h5(tmp_path / "w.h5", _keras_layers(params, first_index), keras_version)
  loaded = convert.load_params(tmp_path / "w.h5", name, model)
  assert jax.tree.structure(loaded) == jax.tree.structure(jax.tree.map(np.asarray, params))
  for path, value in convert.flatten(params).items():
    got = convert.flatten(loaded)[path]
    assert got.dtype == np.float32 and np.array_equal(got, np.asarray(value)), path


def test_keras_wrong_layer_count(tmp_path):
  params = _random_params(jaxcar.models.create("dacar3"))
  _write_keras_h5(tmp_path / "w.h5", _keras_layers(params, 4), "2.0.5")
  with pytest.raises(ConversionError) as error:
    convert.load_params(tmp_path / "w.h5", "dacar4")
  _assert_one_line(error, "3 weighted layers", "has 4")


def test_keras_wrong_shape(tmp_path):
  params = _random_params(jaxcar.models.create("dacar5"))
  _write_keras_h5(tmp_path / "w.h5", _keras_layers(params, 1)[:-2], "2.0.5")  # 4 of its 5 layers
  with pytest.raises(ConversionError) as error:
    convert.load_params(tmp_path / "w.h5", "dacar4")  # as many layers, but 32 features where 64 belong
  _assert_one_line(error, "conv2d_1/kernel -> conv1/kernel", "(9, 9, 1, 32)", "(9, 9, 1, 64)")


def test_keras_incomplete_file(tmp_path):
  params = _random_params(jaxcar.models.create("dacar3"))
  _write_keras_h5(tmp_path / "w.h5", _keras_layers(params, 4), "2.0.5")
  with h5py.File(tmp_path / "w.h5", "a") as file:
    del file["model_weights/conv2d_5/conv2d_5/bias:0"]
  with pytest.raises(ConversionError) as error:
    convert.load_params(tmp_path / "w.h5", "dacar3")
  _assert_one_line(error, "w.h5", "incomplete")


def test_keras_not_hdf5(tmp_path):
  (tmp_path / "w.h5").write_bytes(b"not hdf5")
  with pytest.raises(ConversionError) as error:
    convert.load_params(tmp_path / "w.h5", "dacar3")
  _assert_one_line(error, "w.h5")


@pytest.mark.parametrize("suffix", [".safetensors", ".npz"])
def test_non_finite_weights_are_refused(tmp_path, suffix):
  model = jaxcar.models.create("dacar3")
  params = convert.flatten(jax.tree_util.tree_map(np.asarray, jaxcar.models.init(model, jax.random.key(0))["params"]))
  arrays = {"/".join(path): np.array(value, np.float32) for path, value in params.items()}
  arrays["conv2/kernel"][0, 0, 0, 0] = np.nan
  path = tmp_path / f"w{suffix}"
  if suffix == ".npz":
    np.savez(path, **arrays)
  else:
    safetensors.numpy.save_file(arrays, str(path))
  with pytest.raises(ConversionError, match=r"non-finite .* \['conv2/kernel'\]"):
    convert.load_params(path, "dacar3", model)
