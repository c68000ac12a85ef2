"""Every registry network builds, runs and has exactly the seed's parameter count."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxcar.models
from jaxcar import convert
from jaxcar.models import layers

from optional import requires_torch, torch, torch_twins

# The original networks' counts; QCN/QGCN at their published 64 blocks, RGB.
PARAM_COUNTS = {
    ("dacar3", ()): 106_433,
    ("dacar4", ()): 33_761,
    ("dacar5", ()): 80_321,
    ("sacar6", ()): 157_185,
    ("carcnn", ()): 106_561,
    ("restorer", ()): 485_095,
    ("nogan_generator", ()): 593_667,
    ("nogan_generator", (("dense_blocks", 2),)): 1_146_883,
    ("nogan_discriminator", ()): 2_742_913,
    ("arcnn", ()): 117_734,
    ("arcnn", (("color", "grey"),)): 106_564,
    ("qcn", ()): 4_973_312,
    ("qgcn", ()): 12_305_472,
    ("vgg19", ()): 20_024_384,  # torchvision vgg19().features
}


def _abstract_params(model):
  return jax.eval_shape(lambda: jaxcar.models.init(model, jax.random.key(0)))["params"]


@pytest.mark.parametrize("name, options", sorted(PARAM_COUNTS))
def test_parameter_count(name, options):
  params = _abstract_params(jaxcar.models.create(name, **dict(options)))
  assert jaxcar.models.param_count(params) == PARAM_COUNTS[(name, options)]


@requires_torch
@pytest.mark.parametrize("name, twin", [
    ("arcnn", lambda: torch_twins.ARCNN()),
    ("qcn", lambda: torch_twins.QCN()),
    ("qgcn", lambda: torch_twins.QGCN()),
    ("edsr", lambda: torch_twins.EDSR()),
    ("restorer", lambda: torch_twins.Restorer()),
    ("vgg19", lambda: torch_twins.VGG19Features()),
])
def test_parameter_count_matches_the_pytorch_twin(name, twin):
  with torch.device("meta"):  # shapes only, no memory
    expected = sum(p.numel() for p in twin().parameters())
  assert jaxcar.models.param_count(_abstract_params(jaxcar.models.create(name))) == expected


# (name, options, batch, height, width, expected output (height, width, channels))
APPLY_CASES = [
    ("arcnn", {}, 1, 27, 19, (27, 19, 3)),
    ("arcnn", {"color": "grey"}, 3, 27, 19, (27, 19, 1)),
    ("dacar3", {}, 3, 27, 19, (27, 19, 1)),
    ("dacar4", {}, 1, 27, 19, (27, 19, 1)),
    ("dacar5", {}, 1, 27, 19, (27, 19, 1)),
    ("sacar6", {"activation": "relu"}, 3, 27, 19, (27, 19, 1)),
    ("carcnn", {}, 1, 27, 19, (27, 19, 1)),
    ("restorer", {}, 3, 27, 19, (27, 19, 3)),
    ("restorer", {"variant": "readme"}, 1, 27, 19, (27, 19, 3)),
    ("nogan_generator", {}, 3, 27, 19, (27, 19, 3)),
    ("nogan_generator", {"dense_blocks": 2}, 1, 33, 21, (33, 21, 3)),
    ("nogan_discriminator", {}, 3, 67, 45, (3, 2, 1)),  # ceil(H/32), ceil(W/32)
    ("nogan_discriminator", {"design": "readme"}, 1, 67, 45, (2, 1, 1)),  # ceil(H/64), ceil(W/64)
    ("vgg19", {}, 1, 32, 32, (2, 2, 512)),
    ("vgg19", {"last_index": 3}, 3, 27, 19, (27, 19, 64)),
    ("qcn", {"num_blocks": 2}, 3, 16, 12, (16, 12, 3)),
    ("qcn", {"color": "grey", "num_blocks": 2}, 1, 16, 12, (16, 12, 1)),
    ("edsr", {"num_blocks": 2}, 1, 16, 12, (16, 12, 3)),
    ("qgcn", {"num_blocks": 2}, 3, 16, 12, (16, 12, 3)),
    ("qgcn", {"color": "grey", "num_blocks": 2}, 1, 16, 12, (16, 12, 1)),
]


def _random_inputs(model, batch, height, width, seed=0):
  shapes = [x.shape for x in jaxcar.models.dummy_inputs(model, batch, height, width)]
  keys = jax.random.split(jax.random.key(seed), len(shapes))
  return [jax.random.uniform(k, s, jnp.float32) for k, s in zip(keys, shapes)]


def _init(model):
  return jax.jit(lambda rng: jaxcar.models.init(model, rng, 16, 16))(jax.random.key(1))["params"]


def _random_params(model, seed=2):
  """Fan-in scaled random float32 params in the model's tree. Much cheaper than `init` on CPU, where
  drawing QGCN's 6.4 M or VGG19's 20 M initial values takes tens of seconds."""
  rng = np.random.default_rng(seed)
  shapes = convert.expected_shapes(model)
  scale = lambda shape: 1 / np.sqrt(np.prod(shape[:-1])) if len(shape) > 1 else 0.1
  return convert.unflatten({p: (scale(s) * rng.standard_normal(s)).astype(np.float32) for p, s in shapes.items()})


# One network per hand-written initialiser family (PyTorch default + normal, Keras 2.0.5 he_normal,
# TF truncated normal, QCN fan-out); XLA's CPU compile of each init takes seconds, so not all run it.
@pytest.mark.parametrize("name, options", [("arcnn", {}), ("dacar3", {}), ("carcnn", {}), ("qcn", {"num_blocks": 2})])
def test_init_gives_float32_params_in_the_expected_tree(name, options):
  # init is traced for every network by the parameter-count tests; here it also runs
  model = jaxcar.models.create(name, **options)
  params = _init(model)
  assert jax.tree.structure(params) == jax.tree.structure(_abstract_params(model))
  assert all(leaf.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(leaf))) for leaf in jax.tree.leaves(params))


def test_every_registry_name_is_exercised():
  assert {case[0] for case in APPLY_CASES} == set(jaxcar.models.names())


@pytest.mark.parametrize("name, options, batch, height, width, out", APPLY_CASES,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(APPLY_CASES)])
def test_apply(name, options, batch, height, width, out):
  model = jaxcar.models.create(name, **options)
  params = _random_params(model)
  restored = jax.jit(model.apply)({"params": params}, *_random_inputs(model, batch, height, width))
  assert restored.shape == (batch,) + out and restored.dtype == jnp.float32
  assert bool(jnp.all(jnp.isfinite(restored)))
  assert float(jnp.std(restored)) > 0  # the input reaches the output


# One network per family of layers: PReLU, Keras convs with a concat, dense block + sigmoid, QCN family.
BFLOAT16_CASES = [("arcnn", {}), ("sacar6", {}), ("nogan_generator", {}), ("qgcn", {"num_blocks": 2})]


@pytest.mark.parametrize("name, options", BFLOAT16_CASES)
def test_bfloat16_compute_keeps_float32_params(name, options):
  model32 = jaxcar.models.create(name, **options)
  model16 = jaxcar.models.create(name, dtype="bfloat16", **options)
  params = _random_params(model16)
  assert jax.tree.structure(params) == jax.tree.structure(_abstract_params(model32))
  assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(_abstract_params(model16)))
  inputs = _random_inputs(model32, 2, 24, 20)
  full = jax.jit(model32.apply)({"params": params}, *inputs)
  half = jax.jit(model16.apply)({"params": params}, *inputs)
  assert half.dtype == jnp.bfloat16
  relative_error = float(jnp.linalg.norm(half.astype(jnp.float32) - full) / jnp.linalg.norm(full))
  assert relative_error < 3e-2, relative_error


@pytest.mark.parametrize("name", ["qcn", "qgcn", "edsr"])
def test_quantization_family_rejects_odd_sizes(name):
  model = jaxcar.models.create(name, num_blocks=2)
  params = _random_params(model)
  with pytest.raises(ValueError, match="even height and width, got 15x12"):
    model.apply({"params": params}, *_random_inputs(model, 1, 15, 12))


def test_qgcn_rejects_a_wrong_global_size():
  model = jaxcar.models.create("qgcn", num_blocks=2)
  image = jnp.zeros((1, 16, 16, 5))
  with pytest.raises(ValueError, match="112x112"):
    model.init(jax.random.key(0), image, jnp.zeros((1, 64, 64, 3)))


def test_unknown_model_lists_valid_names():
  with pytest.raises(ValueError, match=r"unknown model 'qcnn'.*'qcn'.*'qgcn'"):
    jaxcar.models.create("qcnn")


@pytest.mark.parametrize("name, options, valid", [
    ("qcn", {"num_block": 4}, "num_blocks"),
    ("arcnn", {"color": "yuv"}, "grey"),
    ("dacar3", {"dtype": "float16"}, "bfloat16"),
])
def test_unknown_option_lists_valid_ones(name, options, valid):
  with pytest.raises(ValueError, match=valid):
    jaxcar.models.create(name, **options)


@pytest.mark.parametrize("name, options, valid", [
    ("dacar4", {"activation": "elu"}, "leaky_relu"),
    ("restorer", {"variant": "paper"}, "readme"),
    ("nogan_discriminator", {"design": "paper"}, "as_coded"),
])
def test_unknown_quirk_value_lists_valid_ones(name, options, valid):
  model = jaxcar.models.create(name, **options)  # validated when the network is built
  with pytest.raises(ValueError, match=valid):
    _init(model)


@requires_torch
def test_pixel_shuffle_matches_torch():
  x = np.random.default_rng(0).standard_normal((2, 5, 7, 12)).astype(np.float32)
  expected = torch.nn.functional.pixel_shuffle(torch.from_numpy(x.transpose(0, 3, 1, 2).copy()), 2)
  got = np.asarray(layers.pixel_shuffle(jnp.asarray(x), 2))
  assert np.array_equal(got, expected.numpy().transpose(0, 2, 3, 1))


@requires_torch
def test_channel_first_flatten_matches_torch_view():
  x = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5)  # NHWC
  expected = torch.from_numpy(x.transpose(0, 3, 1, 2).copy()).reshape(2, -1).numpy()
  assert np.array_equal(np.asarray(layers.flatten_channels_first(jnp.asarray(x))), expected)
