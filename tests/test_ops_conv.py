"""The oneDNN convolution custom calls against XLA's convolution: values, gradients, dispatch, errors."""

import platform
import sys

import jax
import jax.numpy as jnp
from jax import lax
import numpy as np
import pytest

from jaxcar import models
from jaxcar.ops import conv, native

ONEDNN_EXPECTED = sys.platform == "linux" and platform.machine() == "x86_64"
DIMENSIONS = ("NHWC", "HWIO", "NHWC")


@pytest.fixture
def onednn(monkeypatch):
  """Forces the oneDNN path (the 8 simulated test devices would otherwise pick XLA's)."""
  if not native.available():
    if ONEDNN_EXPECTED:
      pytest.fail("oneDNN convolutions should build on Linux x86-64; see the logged reason")
    pytest.skip("oneDNN is a dependency on Linux x86-64 only")
  monkeypatch.setenv("JAXCAR_CPU_CONV", "onednn")


def _conv(function, strides, padding):
  return lambda x, w: function(x, w, strides, padding, dimension_numbers=DIMENSIONS)


def _loss(convolution):
  # A nonlinear loss, so the cotangent reaching the convolution differs from element to element.
  return lambda x, w: jnp.sum(jnp.sin(convolution(x, w).astype(jnp.float32)))


def _relative_error(expected, actual) -> float:
  expected, actual = np.asarray(expected, np.float32), np.asarray(actual, np.float32)
  return float(np.max(np.abs(expected - actual)) / np.max(np.abs(expected)))


GEOMETRIES = [  # (batch, height, width, in, out, kernel, stride, padding): every kind the models use
    (2, 17, 19, 3, 8, 3, 1, "SAME"),
    (2, 17, 19, 3, 8, 3, 2, "SAME"),           # NoGAN's strided Keras 'same' (asymmetric padding)
    (2, 16, 16, 1, 16, 9, 1, ((4, 4), (4, 4))),  # ARCNN's first layer
    (2, 16, 16, 16, 8, 1, 1, "VALID"),
    (2, 15, 16, 8, 8, 4, 2, ((1, 1), (1, 1))),   # QCN's strided 4x4, odd height: a row never read
]


@pytest.mark.parametrize("dtype,tolerance", [(jnp.float32, 2e-5), (jnp.bfloat16, 2e-2)])
@pytest.mark.parametrize("geometry", GEOMETRIES, ids=str)
def test_values_and_gradients_match_xla(onednn, geometry, dtype, tolerance):
  n, h, w, c_in, c_out, k, stride, padding = geometry
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.standard_normal((n, h, w, c_in)), dtype)
  kernel = jnp.asarray(rng.standard_normal((k, k, c_in, c_out)) / k, dtype)
  reference = _conv(lax.conv_general_dilated, (stride, stride), padding)
  ours = _conv(conv.conv_general_dilated, (stride, stride), padding)
  assert "jaxcar_conv_forward" in jax.jit(ours).lower(x, kernel).as_text()
  expected, actual = reference(x, kernel), jax.jit(ours)(x, kernel)
  assert actual.shape == expected.shape and actual.dtype == expected.dtype
  assert _relative_error(expected, actual) < tolerance
  expected_grads = jax.grad(_loss(reference), (0, 1))(x, kernel)
  actual_grads = jax.jit(jax.grad(_loss(ours), (0, 1)))(x, kernel)
  for e, a in zip(expected_grads, actual_grads):
    assert a.dtype == e.dtype
    assert _relative_error(e, a) < tolerance


@pytest.mark.parametrize("name", ["arcnn", "dacar3", "qcn", "nogan_generator"])
def test_model_gradients_match_xla(monkeypatch, onednn, name):
  """A whole network's loss gradient is the same through oneDNN as through XLA."""
  options = {k: v for k, v in {"num_blocks": 2, "color": "grey"}.items() if k in models.options(name)}
  model = models.create(name, **options)
  variables = models.init(model, jax.random.key(0), 24, 24)
  inputs = [jnp.asarray(np.random.default_rng(1).random(x.shape), jnp.float32)
            for x in models.dummy_inputs(model, 2, 24, 24)]

  def grads():  # a fresh jit each time: the conv path is chosen when tracing
    loss = lambda params: jnp.mean(jnp.square(model.apply({**variables, "params": params}, *inputs)))
    return jax.jit(jax.grad(loss))(variables["params"])

  ours = grads()
  monkeypatch.setenv("JAXCAR_CPU_CONV", "xla")
  theirs = grads()
  for path, expected in jax.tree_util.tree_leaves_with_path(theirs):
    actual = dict(jax.tree_util.tree_leaves_with_path(ours))[path]
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-6 * float(jnp.max(jnp.abs(expected))),
                               err_msg=jax.tree_util.keystr(path))


def test_sharded_batch_through_onednn_is_correct(onednn):
  """Forced on 8 devices with a sharded batch, the partitioner gathers operands: slower, still exact."""
  mesh = jax.make_mesh((8,), ("data",))
  sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
  rng = np.random.default_rng(2)
  x = jax.device_put(jnp.asarray(rng.standard_normal((8, 12, 12, 4)), jnp.float32), sharding)
  kernel = jnp.asarray(rng.standard_normal((3, 3, 4, 5)), jnp.float32)
  ours = jax.jit(jax.grad(_loss(_conv(conv.conv_general_dilated, (1, 1), "SAME")), (0, 1)))(x, kernel)
  theirs = jax.grad(_loss(_conv(lax.conv_general_dilated, (1, 1), "SAME")), (0, 1))(np.asarray(x), kernel)
  for e, a in zip(theirs, ours):
    assert _relative_error(e, a) < 2e-5


def test_auto_uses_xla_on_several_devices_and_elsewhere(monkeypatch):
  monkeypatch.setenv("JAXCAR_CPU_CONV", "auto")
  assert jax.local_device_count() == 8 and not conv.use_onednn()
  monkeypatch.setenv("JAXCAR_CPU_CONV", "xla")
  assert not conv.use_onednn()
  x, kernel = jnp.ones((1, 8, 8, 2)), jnp.ones((3, 3, 2, 2))
  text = jax.jit(_conv(conv.conv_general_dilated, (1, 1), "SAME")).lower(x, kernel).as_text()
  assert "jaxcar_conv" not in text and "convolution" in text


def test_unsupported_operands_fall_back_to_xla(onednn):
  """Dilation, groups and NCHW are left to XLA, with XLA's result."""
  x, kernel = jnp.ones((1, 4, 8, 8)), jnp.ones((2, 4, 3, 3))
  dilated = jax.jit(lambda a, b: conv.conv_general_dilated(a, b, (1, 1), "SAME", rhs_dilation=(2, 2)))
  assert "jaxcar_conv" not in dilated.lower(x, kernel).as_text()
  np.testing.assert_array_equal(dilated(x, kernel),
                                lax.conv_general_dilated(x, kernel, (1, 1), "SAME", rhs_dilation=(2, 2)))


def test_bad_choice_is_a_one_line_error(monkeypatch):
  monkeypatch.setenv("JAXCAR_CPU_CONV", "mkl")
  with pytest.raises(ValueError, match="JAXCAR_CPU_CONV must be one of"):
    conv.use_onednn()


def test_missing_compiler_says_why(monkeypatch, tmp_path):
  monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))
  with pytest.raises(native.Unavailable, match=r"cannot run the C\+\+ compiler .*no-such-compiler"):
    native._compile(tmp_path, tmp_path / "lib.so")  # pylint: disable=protected-access
