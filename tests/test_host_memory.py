"""host_memory: with it, a repeated XLA computation stops page-faulting its fresh buffers back in."""

import os
import subprocess
import sys

import pytest

from jaxcar import host_memory

# One jitted call per round; its 64 MB result is freed before the next round allocates another.
PROBE = """
import resource, sys
from jaxcar import host_memory
if sys.argv[1] == "keep":
  assert host_memory.for_jax_on_cpu(), "settings not applied"
import jax, jax.numpy as jnp
double = jax.jit(lambda x: x * 2)
x = jnp.ones((16 * 2**20,), jnp.float32)
double(x).block_until_ready()
faults = []
for _ in range(4):
  before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
  double(x).block_until_ready()
  faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(min(faults))
"""
PAGES_PER_RESULT = 64 * 2**20 // os.sysconf("SC_PAGE_SIZE")


def fewest_faults_per_call(mode: str) -> int:
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": ""}
  done = subprocess.run([sys.executable, "-c", PROBE, mode], env=env, capture_output=True, text=True,
                        timeout=120, check=False)
  assert done.returncode == 0, done.stderr[-2000:]
  return int(done.stdout.split()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc settings: Linux only")
def test_freed_buffers_are_reused_instead_of_faulted_in_again():
  assert fewest_faults_per_call("default") > 0.9 * PAGES_PER_RESULT  # the cost being removed
  assert fewest_faults_per_call("keep") < 0.05 * PAGES_PER_RESULT


@pytest.mark.parametrize("platforms, expected", [("cpu", True), ("cpu,cuda", True), ("cuda", False), ("tpu", False)])
def test_applies_only_when_jax_will_run_on_the_cpu(monkeypatch, platforms, expected):
  monkeypatch.setenv("JAX_PLATFORMS", platforms)
  assert host_memory._cpu_backend_expected() is expected  # pylint: disable=protected-access
