"""`conv_general_dilated`: XLA's convolution, or oneDNN's on a single CPU device.

A drop-in for `lax.conv_general_dilated` that Flax's `nn.Conv` takes as its `conv_general_dilated`
field. On one CPU device it runs the convolution and both of its gradients as oneDNN custom calls
(`onednn_conv.cc`), which train ~2x faster than XLA's CPU convolutions (BUILD_NOTES.md, Performance);
everywhere else (GPU, TPU, several devices, shapes it does not cover) it is `lax.conv_general_dilated`
itself, so the compiled program there is unchanged.

`JAXCAR_CPU_CONV` chooses: `auto` (default, as above), `onednn` (also with several CPU devices, whose
partitioner then gathers each convolution's operands onto every device: correct, not fast) or `xla`.
The choice is made when a function is traced.
"""

import functools
import os

import jax
from jax import lax
import jax.numpy as jnp

from jaxcar.ops import native

CHOICES = ("auto", "onednn", "xla")
NHWC = lax.ConvDimensionNumbers(lhs_spec=(0, 3, 1, 2), rhs_spec=(3, 2, 0, 1), out_spec=(0, 3, 1, 2))


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                         dimension_numbers=None, feature_group_count=1, batch_group_count=1,
                         precision=None, preferred_element_type=None):
  """`lax.conv_general_dilated`, through oneDNN when `use_onednn` says so for these operands."""
  plain = (lhs.ndim == 4 and _is_nhwc(lhs.ndim, dimension_numbers) and feature_group_count == 1
           and batch_group_count == 1 and _ones(lhs_dilation) and _ones(rhs_dilation)
           and preferred_element_type is None and lhs.dtype == rhs.dtype
           and lhs.dtype in (jnp.float32, jnp.bfloat16))
  if not (plain and use_onednn()):
    return lax.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation,
                                    dimension_numbers, feature_group_count, batch_group_count,
                                    precision, preferred_element_type)
  if isinstance(padding, str):
    padding = lax.padtype_to_pads(lhs.shape[1:3], rhs.shape[:2], window_strides, padding)
  (pad_top, pad_bottom), (pad_left, pad_right) = padding
  geometry = (*map(int, window_strides), int(pad_top), int(pad_bottom), int(pad_left), int(pad_right))
  return onednn_conv(lhs, rhs, geometry)


def use_onednn() -> bool:
  """Whether convolutions traced now go through oneDNN (see the module docstring)."""
  choice = os.environ.get("JAXCAR_CPU_CONV", "auto")
  if choice not in CHOICES:
    raise ValueError(f"JAXCAR_CPU_CONV must be one of {CHOICES}, got {choice!r}")
  if choice == "xla" or jax.default_backend() != "cpu":
    return False
  if choice == "auto" and jax.local_device_count() > 1:
    return False
  return native.available()


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def onednn_conv(x, w, geometry):
  """NHWC x HWIO -> NHWC convolution; geometry = (stride_h, stride_w, top, bottom, left, right) padding."""
  stride_h, stride_w, top, bottom, left, right = geometry
  height = (x.shape[1] + top + bottom - w.shape[0]) // stride_h + 1
  width = (x.shape[2] + left + right - w.shape[1]) // stride_w + 1
  out = jax.ShapeDtypeStruct((x.shape[0], height, width, w.shape[3]), x.dtype)
  return _call("jaxcar_conv_forward", out, x, w, geometry)


def _forward(x, w, geometry):
  return onednn_conv(x, w, geometry), (x, w)


def _backward(geometry, residuals, dy):
  x, w = residuals
  dx = _call("jaxcar_conv_backward_data", jax.ShapeDtypeStruct(x.shape, x.dtype), dy, w, geometry)
  dw = _call("jaxcar_conv_backward_weights", jax.ShapeDtypeStruct(w.shape, w.dtype), x, dy, geometry)
  return dx, dw


onednn_conv.defvjp(_forward, _backward)


def _call(target, out, a, b, geometry):
  stride_h, stride_w, top, bottom, left, right = geometry
  call = jax.ffi.ffi_call(target, out, vmap_method="sequential")
  return call(a, b.astype(a.dtype), stride_h=stride_h, stride_w=stride_w, pad_top=top,
              pad_bottom=bottom, pad_left=left, pad_right=right)


def _is_nhwc(ndim, dimension_numbers) -> bool:
  if dimension_numbers is None:
    return False  # lax's default is NCHW
  specs = lax.conv_dimension_numbers((1,) * ndim, (1,) * ndim, dimension_numbers)
  return specs == NHWC


def _ones(dilation) -> bool:
  return dilation is None or all(d == 1 for d in dilation)
