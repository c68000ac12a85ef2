"""Builds and loads the oneDNN convolution library (`onednn_conv.cc`) and registers it with XLA.

The library is compiled on first use with the system C++ compiler against the oneDNN wheel
(`onednn-cpu-gomp`, a dependency on Linux x86-64) and cached in `$JAXCAR_CACHE/ops-<key>` (default
`~/.cache/jaxcar/ops-<key>`), the key hashing the source, jaxlib and oneDNN versions. Compiling at
first use rather than at install keeps jaxcar a pure-Python package that installs anywhere; where
there is no compiler or no oneDNN the convolutions fall back to XLA's own, with one logged line
saying why.
"""

import ctypes
import functools
import hashlib
import importlib.metadata
import os
import pathlib
import shutil
import subprocess
import sys
import sysconfig
import time

from absl import logging
import jax

from jaxcar import paths

SOURCE = pathlib.Path(__file__).with_name("onednn_conv.cc")
TARGETS = {"jaxcar_conv_forward": "JaxcarConvForward",
           "jaxcar_conv_forward_bias": "JaxcarConvForwardBias",
           "jaxcar_conv_forward_bias_prelu": "JaxcarConvForwardBiasPrelu",
           "jaxcar_conv_backward_data": "JaxcarConvBackwardData",
           "jaxcar_conv_backward_weights": "JaxcarConvBackwardWeights",
           "jaxcar_conv_backward_weights_bias": "JaxcarConvBackwardWeightsBias"}


class Unavailable(RuntimeError):
  """The native library cannot be built or loaded here; the message says why."""


@functools.cache
def load() -> ctypes.CDLL:
  """Builds (once per version), loads and registers the library; raises Unavailable with the reason."""
  path = _built_library()
  try:
    library = ctypes.CDLL(str(path))
  except OSError as error:
    raise Unavailable(f"cannot load {path}: {error}") from None
  for target, symbol in TARGETS.items():
    jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(getattr(library, symbol)), platform="cpu")
  library.JaxcarConvIsFast.argtypes = [ctypes.POINTER(ctypes.c_int64), ctypes.c_int, ctypes.c_int, ctypes.c_float]
  library.JaxcarConvIsFast.restype = ctypes.c_int
  return library


@functools.cache
def has_fast_kernels(geometry: tuple[int, ...], bfloat16: bool, negative_slope: float | None = None,
                     prelu: bool = False) -> bool:
  """Whether oneDNN has optimised (not reference) kernels for this convolution and its gradients.

  geometry: (N, H, W, C_in, KH, KW, C_out, OH, OW, stride_h, stride_w, top, bottom, left, right, bias);
  negative_slope: the forward's fused activation, as `conv.conv2d` takes it; prelu: a fused PReLU.
  """
  values = (ctypes.c_int64 * len(geometry))(*geometry)
  activation = 2 if prelu else int(negative_slope is not None)
  verdict = load().JaxcarConvIsFast(values, int(bfloat16), activation, negative_slope or 0.0)
  if verdict != 1:
    logging.info("oneDNN has no fast kernel for convolution %s (%s); using XLA's", geometry,
                 "bfloat16" if bfloat16 else "float32")
  return verdict == 1


@functools.cache
def available() -> bool:
  """True when the library is loaded; otherwise logs the reason once and returns False."""
  try:
    load()
  except Unavailable as error:
    logging.warning("oneDNN convolutions unavailable, using XLA's: %s", error)
    return False
  return True


def _onednn_prefix() -> pathlib.Path:
  """The install prefix holding oneDNN's include/ and lib/ (the wheels install into sys.prefix)."""
  for prefix in (sys.prefix, sysconfig.get_paths()["data"]):
    path = pathlib.Path(prefix)
    if (path / "include/oneapi/dnnl/dnnl.hpp").exists() and (path / "lib/libdnnl.so").exists():
      return path
  raise Unavailable("oneDNN headers or library not found; `pip install onednn-cpu-gomp "
                    "onednn-devel-cpu-gomp` (installed with jaxcar on Linux x86-64)")


def _version(package: str) -> str:
  try:
    return importlib.metadata.version(package)
  except importlib.metadata.PackageNotFoundError:
    return "none"


def _built_library() -> pathlib.Path:
  prefix = _onednn_prefix()
  key = hashlib.sha256(b"|".join([SOURCE.read_bytes(), _version("jaxlib").encode(),
                                  _version("onednn-cpu-gomp").encode(), str(prefix).encode()]))
  library = paths.cache_dir(f"ops-{key.hexdigest()[:16]}") / "libjaxcar_onednn.so"
  if not library.exists():
    _compile(prefix, library)
  return library


def _compile(prefix: pathlib.Path, library: pathlib.Path) -> None:
  compiler = os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++")
  if compiler is None:
    raise Unavailable("no C++ compiler found (set CXX, or install g++)")
  try:
    library.parent.mkdir(parents=True, exist_ok=True)
  except OSError as error:
    raise Unavailable(f"cannot write the build cache {library.parent} ({error.strerror}); "
                      "point $JAXCAR_CACHE at a writable folder") from None
  partial = library.with_suffix(f".{os.getpid()}.tmp")  # concurrent builders never see half a file
  # ~30 s of silence on a first run would look like a hang: say what is happening, and that it is once.
  _say(f"jaxcar: compiling its oneDNN convolution library, once (5-30 s; {SOURCE.name})")
  started = time.monotonic()
  command = [compiler, "-O2", "-std=c++17", "-shared", "-fPIC", "-Wno-return-type",
             f"-I{jax.ffi.include_dir()}", f"-I{prefix / 'include'}", str(SOURCE),
             f"-L{prefix / 'lib'}", "-ldnnl", f"-Wl,-rpath,{prefix / 'lib'}", "-o", str(partial)]
  try:
    result = subprocess.run(command, capture_output=True, text=True, check=False)
  except OSError as error:
    raise Unavailable(f"cannot run the C++ compiler {compiler}: {error.strerror}") from None
  if result.returncode != 0:
    last_error = next((line for line in reversed(result.stderr.splitlines()) if "error" in line), "")
    raise Unavailable(f"compiling {SOURCE.name} failed: {last_error or result.stderr[-300:]}")
  partial.replace(library)
  _say(f"jaxcar: compiled in {time.monotonic() - started:.0f} s; cached in {library.parent} for later runs")


def _say(line: str) -> None:
  print(line, file=sys.stderr, flush=True)
