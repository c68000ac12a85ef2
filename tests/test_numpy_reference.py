"""The NoGAN discriminator and CNN-CAR against plain NumPy forward passes written from the seeds' code.

These two networks have no PyTorch twin (their seeds are Keras and TF1), so the reference here is
float64 NumPy: TF 'SAME' padding (asymmetric, extra bottom/right, for stride 2), HWIO kernels.
"""

import jax
import numpy as np
import pytest

import jaxcar.models

RTOL = 1e-5  # float32 network vs float64 reference, relative to the output's scale


def tf_same_pads(size: int, kernel: int, stride: int) -> tuple[int, int]:
  """TF 'SAME': output ceil(size/stride); the odd padding pixel goes to the bottom/right."""
  total = max((-(-size // stride) - 1) * stride + kernel - size, 0)
  return total // 2, total - total // 2


def conv2d(x, kernel, bias, stride=1):
  """NHWC x, HWIO kernel, TF 'SAME' padding."""
  kh, kw = kernel.shape[:2]
  (top, bottom), (left, right) = tf_same_pads(x.shape[1], kh, stride), tf_same_pads(x.shape[2], kw, stride)
  padded = np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
  windows = np.lib.stride_tricks.sliding_window_view(padded, (kh, kw), axis=(1, 2))[:, ::stride, ::stride]
  return np.einsum("nhwcij,ijco->nhwo", windows, kernel) + bias  # windows: (N, H', W', C, kh, kw)


def leaky_relu(x, slope=0.2):
  return np.where(x >= 0, x, slope * x)


def discriminator(params, x, design):
  """The NoGAN notebook as coded: LReLU(input) then five stride-2 convs (the first Conv(64) is discarded); the
  README's design keeps that conv (six). Then per-pixel Dense 1024, LReLU, Dense 1, sigmoid."""
  convs = 5 if design == "as_coded" else 6
  if design == "as_coded":
    x = leaky_relu(x)
  for i in range(1, convs + 1):
    x = leaky_relu(conv2d(x, params[f"conv{i}"]["kernel"], params[f"conv{i}"]["bias"], stride=2))
  x = leaky_relu(x @ params["dense1"]["kernel"] + params["dense1"]["bias"])
  return 1.0 / (1.0 + np.exp(-(x @ params["dense2"]["kernel"] + params["dense2"]["bias"])))


def carcnn(params, x, final_relu):
  """modelCAR.py: convs 9-7-1-5 (64-32-16-1), ReLU after each, the output's included as coded."""
  for i in range(1, 5):
    x = conv2d(x, params[f"conv{i}"]["kernel"], params[f"conv{i}"]["bias"])
    if i < 4 or final_relu:
      x = np.maximum(x, 0.0)
  return x


def _random_params(model, shape, key):
  """Every leaf random (biases included, which the seeds' inits leave at constants), in float64 too."""
  abstract = jax.eval_shape(lambda: model.init(jax.random.key(0), np.zeros(shape, np.float32)))["params"]
  leaves, tree = jax.tree_util.tree_flatten(abstract)
  keys = jax.random.split(key, len(leaves))
  drawn = [np.asarray(0.1 * jax.random.normal(k, leaf.shape)) for k, leaf in zip(keys, leaves)]
  return jax.tree_util.tree_unflatten(tree, drawn)


def _compare(model, reference, shape, scale, seed):
  params = _random_params(model, shape, jax.random.key(seed))
  x = np.random.default_rng(seed).uniform(0.0, scale, shape).astype(np.float32)
  ours = np.asarray(model.apply({"params": params}, x), np.float64)
  expected = reference(jax.tree.map(lambda p: np.asarray(p, np.float64), params), x.astype(np.float64))
  assert ours.shape == expected.shape
  assert np.std(expected) > 1e-3 * np.abs(expected).max()  # not a constant map that anything would match
  np.testing.assert_allclose(ours, expected, rtol=0, atol=RTOL * np.abs(expected).max())


@pytest.mark.parametrize("design", ["as_coded", "readme"])
def test_nogan_discriminator_matches_numpy(design):
  # 40 x 72 is not a multiple of 32: the stride-2 convs meet both symmetric and bottom/right-only padding.
  model = jaxcar.models.create("nogan_discriminator", design=design)
  _compare(model, lambda p, x: discriminator(p, x, design), (2, 40, 72, 3), 1.0, seed=1)


@pytest.mark.parametrize("final_relu", [True, False])
def test_carcnn_matches_numpy(final_relu):
  model = jaxcar.models.create("carcnn", final_relu=final_relu)
  _compare(model, lambda p, x: carcnn(p, x, final_relu), (2, 20, 24, 1), 255.0, seed=2)


def test_reference_padding_is_tfs():
  assert tf_same_pads(40, 3, 2) == (0, 1) and tf_same_pads(5, 3, 2) == (1, 1) and tf_same_pads(9, 9, 1) == (4, 4)
