"""The hand-written activation gradients against autodiff of the plain formulas and a float64 sum."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcar.ops import activations


def _operands(dtype, shape=(4, 16, 16, 64)):
  x_key, dy_key = jax.random.split(jax.random.key(0))
  x = jax.random.normal(x_key, shape, dtype).at[0, 0, 0, :3].set(0)  # x == 0 takes the x >= 0 branch
  return x, jax.random.normal(dy_key, shape, dtype)


def _plain_prelu(x, slope):
  return jnp.where(x >= 0, x, slope.astype(x.dtype) * x)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_prelu_value_and_input_gradient_equal_autodiff_bit_for_bit(dtype):
  x, dy = _operands(dtype)
  slope = jnp.float32(0.3)
  y, vjp = jax.vjp(activations.prelu, x, slope)
  y_plain, vjp_plain = jax.vjp(_plain_prelu, x, slope)
  np.testing.assert_array_equal(np.asarray(y, np.float32), np.asarray(y_plain, np.float32))
  assert y.dtype == dtype
  np.testing.assert_array_equal(np.asarray(vjp(dy)[0], np.float32), np.asarray(vjp_plain(dy)[0], np.float32))


@pytest.mark.parametrize("dtype, rtol", [(jnp.float32, 1e-5), (jnp.bfloat16, 1e-4)])
def test_prelu_slope_gradient_is_summed_in_float32(dtype, rtol):
  x, dy = _operands(dtype)
  _, vjp = jax.vjp(activations.prelu, x, jnp.float32(0.25))
  dslope = vjp(dy)[1]
  x64, dy64 = (np.asarray(a.astype(jnp.float32), np.float64) for a in (x, dy))
  exact = np.sum(np.where(x64 >= 0, 0.0, x64 * dy64))
  assert dslope.dtype == jnp.float32
  np.testing.assert_allclose(float(dslope), exact, rtol=rtol)


def test_prelu_gradients_flow_through_jit_and_a_loss():
  x, _ = _operands(jnp.float32, (2, 8, 8, 4))
  loss = lambda x, s: jnp.sum(jnp.sin(activations.prelu(x, s)))
  plain = lambda x, s: jnp.sum(jnp.sin(_plain_prelu(x, s)))
  ours = jax.jit(jax.grad(loss, argnums=(0, 1)))(x, jnp.float32(0.1))
  reference = jax.grad(plain, argnums=(0, 1))(x, jnp.float32(0.1))
  np.testing.assert_allclose(ours[0], reference[0], rtol=1e-6, atol=1e-7)
  np.testing.assert_allclose(ours[1], reference[1], rtol=1e-5)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize("negative_slope", [0.2, 0.3])
def test_leaky_relu_equals_flax_value_and_gradient(dtype, negative_slope):
  x, dy = _operands(dtype)
  y, vjp = jax.vjp(lambda x: activations.leaky_relu(x, negative_slope), x)
  y_flax, vjp_flax = jax.vjp(lambda x: nn.leaky_relu(x, negative_slope), x)
  assert y.dtype == y_flax.dtype == dtype
  np.testing.assert_array_equal(np.asarray(y, np.float32), np.asarray(y_flax, np.float32))
  np.testing.assert_array_equal(np.asarray(vjp(dy)[0], np.float32), np.asarray(vjp_flax(dy)[0], np.float32))
