"""`conv2d`: a 2-D NHWC convolution (+ bias, + an optional activation), through oneDNN on CPU devices,
XLA elsewhere.

On one CPU device, or on each CPU device's slice of a batch split over a mesh (`batch_split_over`,
which the train step uses), the convolution, its bias, a following ReLU / leaky ReLU / PReLU, and both
gradients run as oneDNN custom calls (`onednn_conv.cc`): the library PyTorch uses on CPU, about 2x
faster to train than XLA's CPU convolutions (docs/performance.md, oneDNN convolutions). Everywhere else (GPU, TPU,
several devices without that split) it is `lax.conv_general_dilated` plus the bias (what `nn.Conv`
computes), then the activation from `activations.py`, so the program there is unchanged.

A convolution for which oneDNN has only its reference kernels (100-1000x slower) stays with XLA,
decided per shape when tracing. `set_backend` chooses (training: `config.cpu_conv`): `auto` (default,
as above), `onednn` (also with several CPU devices, local or in other processes, whose partitioner
then gathers each convolution's operands onto every device: correct, but every device computes the
whole batch) or `xla`. The choice is made when a function is traced.
"""

import contextlib
import contextvars
import functools

import jax
from jax import lax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P
import numpy as np

from jaxcar.ops import activations, native

CHOICES = ("auto", "onednn", "xla")
DIMENSIONS = ("NHWC", "HWIO", "NHWC")

_backend = "auto"  # one of CHOICES: set_backend


def set_backend(choice: str) -> str:
  """Chooses the CPU convolutions traced from now on (see the module docstring); returns the previous
  choice. Training applies `config.cpu_conv`; evaluate, restore and export take `--cpu_conv`."""
  global _backend  # pylint: disable=global-statement
  if choice not in CHOICES:
    raise ValueError(f"cpu_conv must be one of {', '.join(CHOICES)}, got {choice!r}")
  previous, _backend = _backend, choice
  return previous


def backend() -> str:
  """The current choice: `auto`, `onednn` or `xla`."""
  return _backend


def conv2d(x, kernel, bias=None, *, strides=(1, 1), padding="SAME", negative_slope=None, prelu_slope=None):
  """x (N, H, W, C_in) * kernel (KH, KW, C_in, C_out) [+ bias (C_out,)], padding as `lax` takes it,
  then `activations.apply(., negative_slope)`: none (None), ReLU (0) or a leaky ReLU (> 0); or, with
  `prelu_slope` (a float32 scalar, trainable), `activations.prelu(., prelu_slope)`.

  On the oneDNN path the activation is fused into the convolution (one pass over the output instead
  of two or three) and its gradient is taken from the output, which is all the backward pass keeps.
  """
  if prelu_slope is not None and negative_slope is not None:
    raise ValueError("give conv2d a negative_slope or a prelu_slope, not both")
  finish = lambda y: (activations.apply(y, negative_slope) if prelu_slope is None
                      else activations.prelu(y, prelu_slope))
  mesh = _batch_mesh(x)
  if not (use_onednn(split=mesh is not None) and x.dtype in (jnp.float32, jnp.bfloat16) and _concrete(x.shape)):
    return finish(conv2d_xla(x, kernel, bias, strides, padding))
  if isinstance(padding, str):
    padding = lax.padtype_to_pads(x.shape[1:3], kernel.shape[:2], strides, padding)
  (top, bottom), (left, right) = padding
  geometry = (*map(int, strides), int(top), int(bottom), int(left), int(right))
  activations.check_negative_slope(negative_slope)
  negative_slope = None if negative_slope is None else float(negative_slope)
  fused_prelu = prelu_slope is not None and bias is not None  # the PReLU custom call takes a bias
  local_shape = (x.shape[0] // (mesh.size if mesh else 1), *x.shape[1:])
  if not native.has_fast_kernels(_full_geometry(local_shape, kernel.shape, geometry, bias is not None),
                                 x.dtype == jnp.bfloat16, negative_slope, prelu=fused_prelu):
    return finish(conv2d_xla(x, kernel, bias, strides, padding))
  kernel, bias = kernel.astype(x.dtype), None if bias is None else bias.astype(x.dtype)
  slope = jnp.asarray(prelu_slope, jnp.float32) if fused_prelu else None

  def local(x, kernel, bias, slope):
    if fused_prelu:
      return onednn_conv_prelu(x, kernel, bias, slope, geometry)
    return onednn_conv(x, kernel, bias, geometry, negative_slope)  # (leaky) ReLU fused

  y = local(x, kernel, bias, slope) if mesh is None else _per_batch_shard(local, mesh, x, kernel, bias, slope)
  return y if fused_prelu or prelu_slope is None else activations.prelu(y, prelu_slope)


def _concrete(shape) -> bool:
  # Under jax.export's symbolic shapes ("b, 8*h, 8*w") oneDNN's kernel choice cannot be asked for a size.
  return all(isinstance(size, (int, np.integer)) for size in shape)


_XLA_ONLY = contextvars.ContextVar("jaxcar_xla_only", default=False)


@contextlib.contextmanager
def xla_only():
  """Convolutions traced inside this block are XLA's, whatever `set_backend` chose: for programs that
  leave jaxcar (StableHLO exports), which must not call jaxcar's oneDNN library and run on GPUs too."""
  token = _XLA_ONLY.set(True)
  try:
    yield
  finally:
    _XLA_ONLY.reset(token)


_BATCH_MESH = contextvars.ContextVar("jaxcar_batch_mesh", default=None)


@contextlib.contextmanager
def batch_split_over(mesh: jax.sharding.Mesh):
  """Convolutions traced inside this block, on a batch split over all of `mesh`'s axes, run oneDNN on
  each device's slice (`jax.shard_map`). Without it, several devices get XLA's convolutions (`auto`):
  the custom calls alone would make every device compute the whole batch. The train step traces
  its forward and backward pass inside it."""
  token = _BATCH_MESH.set(mesh)
  try:
    yield
  finally:
    _BATCH_MESH.reset(token)


def _batch_mesh(x):
  """The mesh to split x's batch over, or None: no mesh given, one device, or an uneven split."""
  mesh = _BATCH_MESH.get()
  if mesh is None or mesh.size == 1 or x.shape[0] % mesh.size:
    return None
  return mesh


def _per_batch_shard(fn, mesh, x, *replicated):
  """fn(x, *replicated) on each device's slice of the batch; shard_map's transpose sums the gradients
  of the replicated operands (weights) over the devices."""
  batch = P(mesh.axis_names)
  return jax.shard_map(fn, mesh=mesh, in_specs=(batch,) + (P(),) * len(replicated), out_specs=batch,
                       check_vma=False)(x, *replicated)


def conv2d_xla(x, kernel, bias, strides, padding):
  """XLA's convolution plus the bias: exactly what `nn.Conv` computes."""
  y = lax.conv_general_dilated(x, kernel, strides, padding, dimension_numbers=DIMENSIONS)
  return y if bias is None else y + bias.reshape(1, 1, 1, -1)


def use_onednn(split: bool = False) -> bool:
  """Whether convolutions traced now go through oneDNN (see the module docstring); `split`: per
  device, on a batch split over a mesh (`batch_split_over`)."""
  choice = _backend
  if choice == "xla" or _XLA_ONLY.get() or jax.default_backend() != "cpu":
    return False
  if choice == "auto" and jax.device_count() > 1 and not split:  # processes count too (docstring)
    return False
  return native.available()


def _output_hw(x_shape, w_shape, geometry) -> tuple[int, int]:
  stride_h, stride_w, top, bottom, left, right = geometry
  return ((x_shape[1] + top + bottom - w_shape[0]) // stride_h + 1,
          (x_shape[2] + left + right - w_shape[1]) // stride_w + 1)


def _full_geometry(x_shape, w_shape, geometry, bias: bool) -> tuple[int, ...]:
  """What the library's JaxcarConvIsFast takes: every shape, stride and padding of the call."""
  return (*x_shape, *w_shape[:2], w_shape[3], *_output_hw(x_shape, w_shape, geometry), *geometry, int(bias))


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def onednn_conv(x, w, b, geometry, negative_slope=None):
  """The convolution (+ activation) as a custom call; geometry = (stride_h, stride_w, top, bottom,
  left, right); negative_slope as in `conv2d`."""
  height, width = _output_hw(x.shape, w.shape, geometry)
  out = jax.ShapeDtypeStruct((x.shape[0], height, width, w.shape[3]), x.dtype)
  fused = {"activation": int(negative_slope is not None), "negative_slope": np.float32(negative_slope or 0.0)}
  if b is None:
    return _call("jaxcar_conv_forward", out, geometry, x, w, **fused)
  return _call("jaxcar_conv_forward_bias", out, geometry, x, w, b, **fused)


def _forward(x, w, b, geometry, negative_slope):
  y = onednn_conv(x, w, b, geometry, negative_slope)
  return y, (x, w, b is not None, None if negative_slope is None else y)


def _backward(geometry, negative_slope, residuals, dy):
  x, w, has_bias, y = residuals
  if negative_slope is not None:
    dy = activations.output_gradient(y, dy, negative_slope)
  dx = _call("jaxcar_conv_backward_data", _like(x), geometry, dy, w)
  if not has_bias:
    return dx, _call("jaxcar_conv_backward_weights", _like(w), geometry, x, dy), None
  bias = jax.ShapeDtypeStruct((w.shape[3],), jnp.float32)  # summed in float32 (onednn_conv.cc)
  dw, db = _call("jaxcar_conv_backward_weights_bias", (_like(w), bias), geometry, x, dy)
  return dx, dw, db.astype(w.dtype)


onednn_conv.defvjp(_forward, _backward)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def onednn_conv_prelu(x, w, b, slope, geometry):
  """The convolution, its bias and a PReLU with the float32 scalar `slope`, as one custom call."""
  height, width = _output_hw(x.shape, w.shape, geometry)
  out = jax.ShapeDtypeStruct((x.shape[0], height, width, w.shape[3]), x.dtype)
  return _call("jaxcar_conv_forward_bias_prelu", out, geometry, x, w, b, slope)


def _prelu_forward(x, w, b, slope, geometry):
  y = onednn_conv_prelu(x, w, b, slope, geometry)
  return y, (x, w, b, slope, y)


def _prelu_backward(geometry, residuals, dy):
  x, w, b, slope, y = residuals

  def from_output(_):
    # A positive slope keeps the pre-activation's sign, and it is y / slope where negative.
    dz, dslope = activations.prelu_gradients(y, dy, slope)
    return dz, dslope / slope

  def recomputed(_):
    # Otherwise the output cannot tell: compute the pre-activation again (rare: slopes start at 0.25).
    return activations.prelu_gradients(onednn_conv(x, w, b, geometry, None), dy, slope)

  dz, dslope = lax.cond(slope > 0, from_output, recomputed, None)
  dx, dw, db = _backward(geometry, None, (x, w, True, None), dz)
  return dx, dw, db, dslope


onednn_conv_prelu.defvjp(_prelu_forward, _prelu_backward)


def _like(array):
  return jax.ShapeDtypeStruct(array.shape, array.dtype)


def _call(target, out, geometry, *operands, **attributes):
  stride_h, stride_w, top, bottom, left, right = geometry
  call = jax.ffi.ffi_call(target, out, vmap_method="sequential")
  return call(*operands, stride_h=stride_h, stride_w=stride_w, pad_top=top, pad_bottom=bottom,
              pad_left=left, pad_right=right, **attributes)
