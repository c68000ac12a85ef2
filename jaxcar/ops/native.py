"""Builds and loads the oneDNN convolution library (`onednn_conv.cc`) and registers it with XLA.

The library is compiled on first use with the system C++ compiler against the oneDNN wheel
(`onednn-cpu-gomp`, a dependency on Linux x86-64) and cached in `$JAXCAR_CACHE/ops-<key>` (default
`~/.cache/jaxcar/ops-<key>`), the key hashing the source, jaxlib and oneDNN versions. Compiling at
first use rather than at install keeps jaxcar a pure-Python package that installs anywhere; where
there is no compiler or no oneDNN the convolutions fall back to XLA's own, with one logged line
saying why.

Loading a shared library runs its code, so the cache is not trusted blindly: the build folder is
private (created 0700; a pre-existing one owned by someone else or group/world-writable is refused,
naming the folder and the fix), the SHA-256 of each library is recorded beside it
(`libjaxcar_onednn.so.sha256`) right after it is compiled, and the library is loaded only when it is
ours, not group/world-writable and matches that digest. Anything else in our own private folder is
rebuilt; a folder we cannot trust is never built into or loaded from (XLA's convolutions instead).
"""

import ctypes
import errno
import fcntl
import functools
import hashlib
import importlib.metadata
import os
import pathlib
import shutil
import stat
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
  functions = {}  # every symbol first, so a wrong library registers nothing
  for target, symbol in {**TARGETS, "is_fast": "JaxcarConvIsFast"}.items():
    try:
      functions[target] = getattr(library, symbol)
    except AttributeError:
      raise Unavailable(f"{path} lacks the symbol {symbol}, so it is not this jaxcar's oneDNN library; "
                        f"remove {path.parent} to have it rebuilt") from None
  is_fast = functions.pop("is_fast")
  for target, function in functions.items():
    jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(function), platform="cpu")
  is_fast.argtypes = [ctypes.POINTER(ctypes.c_int64), ctypes.c_int, ctypes.c_int, ctypes.c_float]
  is_fast.restype = ctypes.c_int
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


LIBRARY = "libjaxcar_onednn.so"
DIGEST_SUFFIX = ".sha256"


def _library_path(prefix: pathlib.Path) -> pathlib.Path:
  """Where the library for this source, jaxlib, oneDNN and prefix lives (its folder: ops-<key>)."""
  key = hashlib.sha256(b"|".join([SOURCE.read_bytes(), _version("jaxlib").encode(),
                                  _version("onednn-cpu-gomp").encode(), str(prefix).encode()]))
  return paths.cache_dir(f"ops-{key.hexdigest()[:16]}") / LIBRARY


def _built_library() -> pathlib.Path:
  """The path of a library that is safe to load: in our private folder and matching its recorded
  digest, compiled (again) first when it is missing or anything about it is off; Unavailable when the
  folder itself cannot be trusted or the build fails."""
  prefix = _onednn_prefix()
  library = _library_path(prefix)
  _private_folder(library.parent)
  problem = _untrusted(library)
  if problem is not None:
    _compile(prefix, library, None if problem == "missing" else problem)
    problem = _untrusted(library)
    if problem is not None:
      raise Unavailable(f"refusing to load {library}: {problem}")
  return library


def _private_folder(folder: pathlib.Path) -> None:
  """Creates `folder` 0700, or accepts an existing one only when it is ours and writable by us alone
  (tightened to 0700); otherwise Unavailable naming the folder and the fix."""
  try:
    folder.parent.mkdir(parents=True, exist_ok=True)
    try:
      folder.mkdir(mode=0o700)
      return  # made by us just now: ours, and the umask can only remove permission bits
    except FileExistsError:
      info = os.lstat(folder)
  except OSError as error:
    raise Unavailable(f"cannot write the build cache {folder} ({error.strerror}); "
                      "point $JAXCAR_CACHE at a writable folder") from None
  if not stat.S_ISDIR(info.st_mode):
    raise Unavailable(f"refusing the build folder {folder}: not a plain folder (a link or a file); "
                      "remove it, and jaxcar rebuilds the library in a private one")
  if info.st_uid != os.geteuid():
    raise Unavailable(f"refusing the build folder {folder}: owned by uid {info.st_uid}, not by you; "
                      "remove it (or point $JAXCAR_CACHE at a folder of yours)")
  if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
    raise Unavailable(f"refusing the build folder {folder}: writable by others (mode "
                      f"{stat.S_IMODE(info.st_mode):03o}); `chmod 700 {folder}` or remove it")
  if info.st_mode & 0o077:
    try:
      os.chmod(folder, 0o700)  # ours and writable by us alone: safe to keep, made private
    except OSError:
      pass  # a read-only cache, say: still safe


def _untrusted(library: pathlib.Path) -> str | None:
  """Why `library` must not be loaded ("missing" when there is none), or None when it is ours, not
  writable by others and matches the SHA-256 recorded beside it."""
  try:
    handle = os.open(library, os.O_RDONLY | os.O_NOFOLLOW)
  except FileNotFoundError:
    return "missing"
  except OSError as error:
    return f"cannot open it ({'a link' if error.errno == errno.ELOOP else error.strerror})"
  with os.fdopen(handle, "rb") as file:
    info = os.fstat(file.fileno())
    if not stat.S_ISREG(info.st_mode):
      return "not a plain file"
    if info.st_uid != os.geteuid():
      return f"owned by uid {info.st_uid}, not by you"
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
      return f"writable by others (mode {stat.S_IMODE(info.st_mode):03o})"
    try:
      recorded = _read_digest(library)
    except (OSError, ValueError):
      return "no recorded SHA-256 beside it"
    actual = hashlib.file_digest(file, "sha256").hexdigest()
  if actual != recorded:
    return f"its SHA-256 {actual[:12]}... differs from the one recorded at build time {recorded[:12]}..."
  same = os.stat(library, follow_symlinks=False)  # still the file just hashed (not swapped meanwhile)
  if (same.st_dev, same.st_ino) != (info.st_dev, info.st_ino):
    return "it changed while being checked"
  return None


def _digest_path(library: pathlib.Path) -> pathlib.Path:
  return library.with_name(library.name + DIGEST_SUFFIX)


def _read_digest(library: pathlib.Path) -> str:
  handle = os.open(_digest_path(library), os.O_RDONLY | os.O_NOFOLLOW)
  with os.fdopen(handle) as file:
    if os.fstat(file.fileno()).st_uid != os.geteuid():
      raise ValueError("not ours")
    digest = file.read(200).split()[0].lower()
  if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
    raise ValueError(digest)
  return digest


def _compile(prefix: pathlib.Path, library: pathlib.Path, reason: str | None = None) -> None:
  """Compiles the library into its private folder and records its SHA-256 beside it; `reason` says
  why an existing one is replaced. One builder at a time per folder (a lock file)."""
  compiler = os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++")
  if compiler is None:
    raise Unavailable("no C++ compiler found (set CXX, or install g++)")
  _private_folder(library.parent)
  try:
    lock = os.open(library.parent / "build.lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
  except OSError as error:
    raise Unavailable(f"cannot write the build cache {library.parent} ({error.strerror}); "
                      "point $JAXCAR_CACHE at a writable folder") from None
  try:
    fcntl.flock(lock, fcntl.LOCK_EX)  # another builder may be at it: wait, then use its library
    if _untrusted(library) is None:
      return
    for stale in library.parent.glob(f"{library.stem}.*.tmp*"):  # a killed builder's (we hold the lock)
      stale.unlink(missing_ok=True)
    _run_compiler(compiler, prefix, library, reason)
  finally:
    os.close(lock)


def _run_compiler(compiler: str, prefix: pathlib.Path, library: pathlib.Path, reason: str | None) -> None:
  partial = library.with_suffix(f".{os.getpid()}.tmp")  # concurrent readers never see half a file
  # ~30 s of silence on a first run would look like a hang: say what is happening, and that it is once.
  if reason is None:
    _say(f"jaxcar: compiling its oneDNN convolution library, once (5-30 s; {SOURCE.name})")
  else:
    _say(f"jaxcar: rebuilding {library} (5-30 s): {reason}")
  started = time.monotonic()
  command = [compiler, "-O2", "-std=c++17", "-shared", "-fPIC", "-Wno-return-type",
             f"-I{jax.ffi.include_dir()}", f"-I{prefix / 'include'}", str(SOURCE),
             f"-L{prefix / 'lib'}", "-ldnnl", f"-Wl,-rpath,{prefix / 'lib'}", "-o", str(partial)]
  try:
    try:
      result = subprocess.run(command, capture_output=True, text=True, check=False)
    except OSError as error:
      raise Unavailable(f"cannot run the C++ compiler {compiler}: {error.strerror}") from None
    if result.returncode != 0:
      last_error = next((line for line in reversed(result.stderr.splitlines()) if "error" in line), "")
      raise Unavailable(f"compiling {SOURCE.name} failed: {last_error or result.stderr[-300:]}")
    os.chmod(partial, 0o700)  # whatever the umask: writable by us alone
    with open(partial, "rb") as file:
      digest = hashlib.file_digest(file, "sha256").hexdigest()
    digest_partial = _digest_path(partial)
    digest_partial.write_text(f"{digest}  {LIBRARY}\n")
    os.chmod(digest_partial, 0o600)
    partial.replace(library)
    digest_partial.replace(_digest_path(library))
  finally:
    partial.unlink(missing_ok=True)
    _digest_path(partial).unlink(missing_ok=True)
  _say(f"jaxcar: compiled in {time.monotonic() - started:.0f} s; cached in {library.parent} for later runs")


def _say(line: str) -> None:
  print(line, file=sys.stderr, flush=True)
