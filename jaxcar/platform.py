"""Process-wide XLA defaults for CPU hosts, applied before JAX creates its backend.

XLA reads `XLA_FLAGS` once, when the first backend is created, so `configure()` must run before any
array is made (jaxcar's entry points call it at import). Flags are added only when the run will be on
CPU (no accelerator plugin installed and `JAX_PLATFORMS` not naming one) and only those the user has
not set: a flag already in `XLA_FLAGS` always wins. Each default is justified by a measurement logged
in BUILD_NOTES.md ("Performance").
"""

import importlib.util
import os

# flag name -> value; see BUILD_NOTES.md "Performance" for the measurement behind each.
CPU_DEFAULTS: dict[str, str] = {}

_ACCELERATOR_PLUGINS = ("jax_cuda12_plugin", "jax_cuda13_plugin", "jax_rocm60_plugin", "jax_rocm7_plugin",
                        "libtpu", "jax_plugins.xla_cuda12", "jax_plugins.xla_cuda13")


def cpu_count() -> int:
  """Cores this process may run on (the affinity mask, not the host's total)."""
  try:
    return len(os.sched_getaffinity(0))
  except AttributeError:
    return os.cpu_count() or 1


def will_run_on_cpu() -> bool:
  platforms = os.environ.get("JAX_PLATFORMS", "").strip().lower()
  if platforms:
    return platforms.split(",")[0] == "cpu"
  return not any(_module_exists(name) for name in _ACCELERATOR_PLUGINS)


def _module_exists(name: str) -> bool:
  try:
    return importlib.util.find_spec(name) is not None
  except (ImportError, ValueError):
    return False


def merged_flags(existing: str, defaults: dict[str, str]) -> str:
  """`existing` plus each default whose flag name it does not already mention."""
  present = {token.split("=", 1)[0] for token in existing.split()}
  added = [f"{name}={value}" for name, value in defaults.items() if name not in present]
  return " ".join([existing.strip()] + added).strip()


def configure() -> None:
  """Adds the CPU defaults to `XLA_FLAGS` (no-op off CPU or once JAX's backend exists)."""
  if not CPU_DEFAULTS or not will_run_on_cpu() or _backend_started():
    return
  os.environ["XLA_FLAGS"] = merged_flags(os.environ.get("XLA_FLAGS", ""), CPU_DEFAULTS)


def _backend_started() -> bool:
  import sys
  xla_bridge = sys.modules.get("jax._src.xla_bridge")
  return bool(xla_bridge and getattr(xla_bridge, "_backends", None))
