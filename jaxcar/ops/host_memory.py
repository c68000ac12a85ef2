"""Make glibc keep freed host memory for reuse instead of handing it back to the OS at once.

XLA's CPU runtime allocates each step's temporaries afresh (one ~200 MB block for a QCN-16 step at
batch 16 of 64x64) and frees them after it. glibc serves a block that large with mmap and unmaps it on
free, so every step faults 200 MB back in and the kernel zeroes it again: 48k page faults and 0.12
CPU-seconds of kernel time per QCN step on a 2-core Xeon (BUILD_NOTES.md, Performance, attempt 15).
One malloc arena, no mmap, and no trimming make freed blocks stay in the heap for the next step, as
PyTorch's and every caching allocator's blocks do.

The same holds for the loader's workers, whose batches are ~8 MB of fresh arrays each.

`for_jax_on_cpu()` must run before JAX starts its CPU backend: XLA's threads keep the arena they first
allocated from, and on any thread but the main one glibc maps large blocks whatever the settings. The
entry points (`jaxcar.train`, `.evaluate`, `.restore`, the step benchmark) call it first thing.
Nothing changes on an accelerator (device memory has its own allocator) or off glibc.
"""

import ctypes
import functools
import importlib.metadata
import importlib.util
import os

from absl import logging

# mallopt parameters (glibc's malloc.h).
M_TRIM_THRESHOLD, M_MMAP_MAX, M_ARENA_MAX = -1, -4, -8
SETTINGS = ((M_ARENA_MAX, 1),  # every thread allocates from the main heap, which can grow without mmap
            (M_MMAP_MAX, 0),  # large blocks come from the heap too, so freeing them keeps them
            (M_TRIM_THRESHOLD, 2**31 - 1))  # and the heap's free top is not handed back (int max)


def for_jax_on_cpu() -> bool:
  """`keep_freed_memory()` if this process will run JAX on the CPU; True if applied."""
  return _cpu_backend_expected() and keep_freed_memory()


@functools.cache
def keep_freed_memory() -> bool:
  """Applies the settings above under glibc; True if applied."""
  try:
    mallopt = ctypes.CDLL(None).mallopt
  except (OSError, AttributeError):  # not glibc (macOS, Windows)
    return False
  applied = all(mallopt(parameter, value) == 1 for parameter, value in SETTINGS)
  logging.debug("glibc malloc keeps freed memory: %s", applied)
  return applied


def _cpu_backend_expected() -> bool:
  """Whether JAX will pick the CPU, decided without starting a backend (which would be too late)."""
  platforms = os.environ.get("JAX_PLATFORMS", "") or os.environ.get("JAX_PLATFORM_NAME", "")
  if platforms:
    return platforms.split(",")[0].strip() == "cpu"
  # Accelerator support comes as plugins (jax_plugins entry points or namespace, libtpu).
  if importlib.metadata.entry_points(group="jax_plugins"):
    return False
  return not any(importlib.util.find_spec(name) for name in ("jax_plugins", "libtpu"))
