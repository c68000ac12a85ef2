"""The oneDNN convolution custom calls against XLA's convolution: values, gradients, dispatch, errors."""

import platform
import sys

import jax
import jax.numpy as jnp
from jax import lax
import numpy as np
import pytest

import flax.linen as nn

from jaxcar import models
from jaxcar.models import layers
from jaxcar.ops import activations, conv, native

ONEDNN_EXPECTED = sys.platform == "linux" and platform.machine() == "x86_64"
DIMENSIONS = ("NHWC", "HWIO", "NHWC")


def _xla(x, kernel, bias, strides, padding):
  y = lax.conv_general_dilated(x, kernel, strides, padding, dimension_numbers=DIMENSIONS)
  return y if bias is None else y + bias


@pytest.fixture(autouse=True)
def _backend_restored():
  """Every test starts from the default choice and leaves the one it found."""
  previous = conv.set_backend("auto")
  yield
  conv.set_backend(previous)


@pytest.fixture
def onednn():
  """Forces the oneDNN path (the 8 simulated test devices would otherwise pick XLA's)."""
  if not native.available():
    if ONEDNN_EXPECTED:
      pytest.fail("oneDNN convolutions should build on Linux x86-64; see the logged reason")
    pytest.skip("oneDNN is a dependency on Linux x86-64 only")
  conv.set_backend("onednn")


def _loss(convolution):
  # A nonlinear loss, so the cotangent reaching the convolution differs from element to element.
  return lambda *operands: jnp.sum(jnp.sin(convolution(*operands).astype(jnp.float32)))


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


@pytest.mark.parametrize("with_bias", [True, False], ids=["bias", "no_bias"])
@pytest.mark.parametrize("dtype,tolerance", [(jnp.float32, 2e-5), (jnp.bfloat16, 2e-2)])
@pytest.mark.parametrize("geometry", GEOMETRIES, ids=str)
def test_values_and_gradients_match_xla(onednn, geometry, dtype, tolerance, with_bias):
  n, h, w, c_in, c_out, k, stride, padding = geometry
  rng = np.random.default_rng(0)
  operands = [jnp.asarray(rng.standard_normal((n, h, w, c_in)), dtype),
              jnp.asarray(rng.standard_normal((k, k, c_in, c_out)) / k, dtype)]
  if with_bias:
    operands.append(jnp.asarray(rng.standard_normal(c_out), dtype))
  strides = (stride, stride)
  # The reference is XLA in float32 on the same (possibly bfloat16-valued) operands: XLA's own bfloat16
  # path rounds the convolution before adding the bias, which puts its bias gradient ~7% off the
  # float32 value, while oneDNN rounds once (0.2% off).
  reference = lambda x, w, b=None: _xla(*[v.astype(jnp.float32) for v in (x, w)],
                                       None if b is None else b.astype(jnp.float32), strides, padding)
  ours = lambda x, w, b=None: conv.conv2d(x, w, b, strides=strides, padding=padding)
  target = "jaxcar_conv_forward_bias" if with_bias else "jaxcar_conv_forward"
  out_h, out_w = jax.eval_shape(reference, *operands).shape[1:3]
  pads = lax.padtype_to_pads((h, w), (k, k), strides, padding) if isinstance(padding, str) else padding
  geometry = (n, h, w, c_in, k, k, c_out, out_h, out_w, *strides, *pads[0], *pads[1], int(with_bias))
  # oneDNN's reference kernels are left to XLA; which shapes have fast kernels depends on the CPU.
  fast = native.has_fast_kernels(geometry, dtype == jnp.bfloat16)
  assert (f"@{target}(" in jax.jit(ours).lower(*operands).as_text()) == fast
  expected, actual = reference(*operands), jax.jit(ours)(*operands)
  assert actual.shape == expected.shape and actual.dtype == dtype
  assert _relative_error(expected, actual) < tolerance
  arguments = tuple(range(len(operands)))
  expected_grads = jax.grad(_loss(reference), arguments)(*operands)
  actual_grads = jax.jit(jax.grad(_loss(ours), arguments))(*operands)
  for e, a in zip(expected_grads, actual_grads):
    assert a.shape == e.shape and a.dtype == dtype
    assert _relative_error(e, a) < tolerance


@pytest.mark.parametrize("negative_slope", [0.0, 0.3], ids=["relu", "leaky"])
@pytest.mark.parametrize("dtype,tolerance", [(jnp.float32, 2e-5), (jnp.bfloat16, 2e-2)])
@pytest.mark.parametrize("geometry", [GEOMETRIES[0], GEOMETRIES[4]], ids=str)
def test_fused_activation_matches_xla_then_activation(onednn, geometry, dtype, tolerance, negative_slope):
  """conv + (leaky) ReLU in one oneDNN pass, gradient from the output: as XLA's conv, then the activation."""
  n, h, w, c_in, c_out, k, stride, padding = geometry
  rng = np.random.default_rng(3)
  operands = [jnp.asarray(rng.standard_normal((n, h, w, c_in)), dtype),
              jnp.asarray(rng.standard_normal((k, k, c_in, c_out)) / k, dtype),
              jnp.asarray(rng.standard_normal(c_out), dtype)]
  strides = (stride, stride)
  reference = lambda x, w, b: activations.apply(
      _xla(x.astype(jnp.float32), w.astype(jnp.float32), b.astype(jnp.float32), strides, padding), negative_slope)
  ours = lambda x, w, b: conv.conv2d(x, w, b, strides=strides, padding=padding, negative_slope=negative_slope)
  assert "@jaxcar_conv_forward_bias(" in jax.jit(ours).lower(*operands).as_text()
  expected, actual = reference(*operands), jax.jit(ours)(*operands)
  assert actual.dtype == dtype and _relative_error(expected, actual) < tolerance
  assert float(jnp.min(actual)) < 0 if negative_slope else float(jnp.min(actual)) == 0
  expected_grads = jax.grad(_loss(reference), (0, 1, 2))(*operands)
  actual_grads = jax.jit(jax.grad(_loss(ours), (0, 1, 2)))(*operands)
  for e, a in zip(expected_grads, actual_grads):
    assert a.dtype == dtype and _relative_error(e, a) < tolerance


@pytest.mark.parametrize("slope", [0.25, 0.0, -0.1], ids=["positive", "zero", "negative"])
@pytest.mark.parametrize("dtype,tolerance", [(jnp.float32, 2e-5), (jnp.bfloat16, 2e-2)])
def test_fused_prelu_matches_xla_then_prelu(onednn, dtype, tolerance, slope):
  """conv + bias + PReLU in one oneDNN pass. A positive slope takes its gradients from the output
  alone; zero and negative slopes recompute the pre-activation. Both give the unfused gradients."""
  rng = np.random.default_rng(4)
  operands = [jnp.asarray(rng.standard_normal((2, 17, 19, 3)), dtype),
              jnp.asarray(rng.standard_normal((3, 3, 3, 8)) / 3, dtype),
              jnp.asarray(rng.standard_normal(8), dtype), jnp.float32(slope)]
  reference = lambda x, w, b, s: activations.prelu(
      _xla(x.astype(jnp.float32), w.astype(jnp.float32), b.astype(jnp.float32), (1, 1), "SAME"), s)
  ours = lambda x, w, b, s: conv.conv2d(x, w, b, prelu_slope=s)
  assert "@jaxcar_conv_forward_bias_prelu(" in jax.jit(ours).lower(*operands).as_text()
  expected, actual = reference(*operands), jax.jit(ours)(*operands)
  assert actual.dtype == dtype and _relative_error(expected, actual) < tolerance
  expected_grads = jax.grad(_loss(reference), (0, 1, 2, 3))(*operands)
  actual_grads = jax.jit(jax.grad(_loss(ours), (0, 1, 2, 3)))(*operands)
  for e, a in zip(expected_grads, actual_grads):
    assert _relative_error(e, a) < tolerance


def test_prelu_without_a_bias_runs_after_the_convolution(onednn):
  rng = np.random.default_rng(5)
  x, w = jnp.asarray(rng.standard_normal((2, 9, 9, 3)), jnp.float32), jnp.asarray(rng.standard_normal((3, 3, 3, 4)))
  ours = lambda x, w, s: conv.conv2d(x, w, prelu_slope=s)
  text = jax.jit(ours).lower(x, w, jnp.float32(0.2)).as_text()
  assert "@jaxcar_conv_forward(" in text and "jaxcar_conv_forward_bias_prelu" not in text
  expected = activations.prelu(_xla(x, w, None, (1, 1), "SAME"), jnp.float32(0.2))
  assert _relative_error(expected, jax.jit(ours)(x, w, jnp.float32(0.2))) < 2e-5


def test_prelu_models_fuse_their_prelus(onednn):
  """ARCNN's three PReLUs ride on the convolutions before them (the shipped restorer's likewise)."""
  model = models.create("arcnn", color="grey")
  variables = models.init(model, jax.random.key(0), 16, 16)
  text = jax.jit(model.apply).lower(variables, jnp.ones((1, 16, 16, 1))).as_text()
  assert text.count("@jaxcar_conv_forward_bias_prelu(") == 3


def test_negative_slope_below_zero_is_rejected_on_both_paths():
  x, kernel = jnp.ones((1, 8, 8, 2)), jnp.ones((3, 3, 2, 2))
  for choice in ("xla", "onednn"):
    conv.set_backend(choice)
    with pytest.raises(ValueError, match="negative_slope must be >= 0"):
      conv.conv2d(x, kernel, negative_slope=-0.1)


@pytest.mark.parametrize("name", ["arcnn", "dacar3", "qcn", "nogan_generator", "restorer"])
def test_model_gradients_match_xla(onednn, name):
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
  conv.set_backend("xla")
  theirs = grads()
  ours = dict(jax.tree_util.tree_leaves_with_path(ours))
  for path, expected in jax.tree_util.tree_leaves_with_path(theirs):
    actual = ours[path]
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-6 * float(jnp.max(jnp.abs(expected))),
                               err_msg=jax.tree_util.keystr(path))


def test_sharded_batch_through_onednn_is_correct(onednn):
  """Forced on 8 devices with a sharded batch, the partitioner gathers operands: slower, still exact."""
  mesh = jax.make_mesh((8,), ("data",))
  sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
  rng = np.random.default_rng(2)
  x = jax.device_put(jnp.asarray(rng.standard_normal((8, 12, 12, 4)), jnp.float32), sharding)
  kernel = jnp.asarray(rng.standard_normal((3, 3, 4, 5)), jnp.float32)
  ours = jax.jit(jax.grad(_loss(conv.conv2d), (0, 1)))(x, kernel)
  theirs = jax.grad(_loss(lambda a, b: _xla(a, b, None, (1, 1), "SAME")), (0, 1))(np.asarray(x), kernel)
  for e, a in zip(theirs, ours):
    assert _relative_error(e, a) < 2e-5


@pytest.mark.parametrize("prelu", [False, True])
def test_batch_split_over_a_mesh_runs_onednn_on_each_device(onednn, prelu):
  """Under batch_split_over (the train step), `auto` runs oneDNN on each device's slice with no
  gathering; the weight, bias and slope gradients are summed over the devices (else they would be
  one slice's, and this fails)."""
  conv.set_backend("auto")
  mesh = jax.make_mesh((8,), ("data",))
  rng = np.random.default_rng(4)
  x = jax.device_put(jnp.asarray(rng.standard_normal((16, 12, 12, 4)), jnp.float32),
                     jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data")))
  kernel = jnp.asarray(rng.standard_normal((3, 3, 4, 5)), jnp.float32)
  bias = jnp.asarray(rng.standard_normal((5,)), jnp.float32)
  slope = jnp.float32(0.25)
  if prelu:
    ours_fn = lambda *a: conv.conv2d(*a[:3], prelu_slope=a[3])
    theirs_fn = lambda x, k, b, s: activations.prelu(_xla(x, k, b, (1, 1), "SAME"), s)
  else:
    ours_fn = lambda *a: conv.conv2d(*a[:3], negative_slope=0.0) * a[3]
    theirs_fn = lambda x, k, b, s: jax.nn.relu(_xla(x, k, b, (1, 1), "SAME")) * s

  def split(*operands):
    with conv.batch_split_over(mesh):
      return jax.grad(_loss(ours_fn), (0, 1, 2, 3))(*operands)

  compiled = jax.jit(split).lower(x, kernel, bias, slope).compile().as_text()
  assert "jaxcar_conv" in compiled and "all-gather" not in compiled
  ours = jax.jit(split)(x, kernel, bias, slope)
  theirs = jax.grad(_loss(theirs_fn), (0, 1, 2, 3))(np.asarray(x), kernel, bias, slope)
  for expected, actual in zip(theirs, ours):
    assert _relative_error(expected, actual) < 2e-5


def test_batch_split_needs_an_even_split(onednn):
  conv.set_backend("auto")
  mesh = jax.make_mesh((8,), ("data",))
  with conv.batch_split_over(mesh):
    text = jax.jit(conv.conv2d).lower(jnp.ones((4, 8, 8, 2)), jnp.ones((3, 3, 2, 2))).as_text()
  assert "jaxcar_conv" not in text and "convolution" in text


def test_auto_uses_xla_on_several_devices_and_elsewhere(monkeypatch):
  conv.set_backend("auto")
  assert jax.local_device_count() == 8 and not conv.use_onednn()
  # One device per process, several processes (a gloo CPU cluster): still several devices.
  monkeypatch.setattr(jax, "local_device_count", lambda: 1)
  monkeypatch.setattr(jax, "device_count", lambda: 2)
  assert not conv.use_onednn()
  monkeypatch.setattr(jax, "device_count", lambda: 1)
  assert conv.use_onednn() == native.available()
  conv.set_backend("xla")
  assert not conv.use_onednn()
  text = jax.jit(conv.conv2d).lower(jnp.ones((1, 8, 8, 2)), jnp.ones((3, 3, 2, 2))).as_text()
  assert "jaxcar_conv" not in text and "convolution" in text


@pytest.mark.parametrize("padding,strides", [("SAME", (2, 2)), (((4, 4), (4, 4)), (1, 1))])
def test_xla_path_is_exactly_flax_conv(padding, strides):
  """Off the oneDNN path, layers.Conv is nn.Conv: same parameters, bit-identical output."""
  conv.set_backend("xla")
  x = jnp.asarray(np.random.default_rng(3).standard_normal((2, 16, 16, 3)), jnp.float32)
  ours = layers.Conv(8, (9, 9), strides=strides, padding=padding, bias_init=nn.initializers.normal(1.0))
  flax_conv = nn.Conv(8, (9, 9), strides=strides, padding=padding, bias_init=nn.initializers.normal(1.0))
  variables = ours.init(jax.random.key(0), x)
  assert jax.tree.map(jnp.shape, variables) == jax.tree.map(jnp.shape, flax_conv.init(jax.random.key(0), x))
  np.testing.assert_array_equal(ours.apply(variables, x), flax_conv.apply(variables, x))
  leaky = layers.Conv(8, (9, 9), strides=strides, padding=padding, negative_slope=0.3)
  np.testing.assert_array_equal(leaky.apply(variables, x), nn.leaky_relu(flax_conv.apply(variables, x), 0.3))


def test_most_geometries_get_fast_kernels(onednn):
  """The guard against reference kernels must not send everything to XLA (AVX-512 here, as in CI)."""
  fast = [native.has_fast_kernels((2, 16, 16, 16, 3, 3, 32, 16, 16, 1, 1, 1, 1, 1, 1, 1), bf16)
          for bf16 in (False, True)]
  assert all(fast)


def test_shapes_without_fast_kernels_stay_with_xla(onednn, monkeypatch):
  monkeypatch.setattr(native, "has_fast_kernels", lambda geometry, bfloat16, negative_slope=None: False)
  x, kernel = jnp.ones((1, 8, 8, 2)), jnp.ones((3, 3, 2, 2))
  assert "jaxcar_conv" not in jax.jit(conv.conv2d).lower(x, kernel).as_text()


def test_bad_choice_is_a_one_line_error():
  with pytest.raises(ValueError, match="^cpu_conv must be one of auto, onednn, xla, got 'mkl'$"):
    conv.set_backend("mkl")
  assert conv.backend() == "auto"  # unchanged


def test_set_backend_returns_the_previous_choice():
  assert conv.set_backend("xla") == "auto" and conv.backend() == "xla"
  assert not conv.use_onednn()
  assert conv.set_backend("auto") == "xla"


def test_missing_compiler_says_why(monkeypatch, tmp_path):
  monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))
  with pytest.raises(native.Unavailable, match=r"cannot run the C\+\+ compiler .*no-such-compiler"):
    native._compile(tmp_path, tmp_path / "lib.so")  # pylint: disable=protected-access


def test_unwritable_cache_says_what_to_do(tmp_path):
  blocker = tmp_path / "file"
  blocker.write_text("")  # a file where the cache folder should go
  with pytest.raises(native.Unavailable, match="JAXCAR_CACHE"):
    native._compile(tmp_path, blocker / "sub" / "lib.so")  # pylint: disable=protected-access



def test_library_is_cached_in_its_own_folder_under_the_one_cache_root(monkeypatch, tmp_path):
  monkeypatch.setenv("JAXCAR_CACHE", str(tmp_path / "root"))
  library = native._library_path(tmp_path)  # pylint: disable=protected-access
  assert library.parent.parent == tmp_path / "root" and library.parent.name.startswith("ops-")


def test_first_build_says_it_compiles_and_where_it_is_cached(monkeypatch, tmp_path, capsys):
  # A stand-in compiler that writes its `-o` output: the build's messages without its ~30 s.
  compiler = tmp_path / "fake-c++"
  compiler.write_text('#!/bin/sh\nwhile [ "$1" != "-o" ]; do shift; done\necho built > "$2"\n')
  compiler.chmod(0o755)
  monkeypatch.setenv("CXX", str(compiler))
  library = tmp_path / "cache" / "ops-key" / "libjaxcar_onednn.so"
  native._compile(tmp_path, library)  # pylint: disable=protected-access
  lines = capsys.readouterr().err.splitlines()
  assert library.read_text() == "built\n"
  assert len(lines) == 2 and "compiling" in lines[0] and "once" in lines[0], lines
  assert f"cached in {library.parent}" in lines[1], lines
