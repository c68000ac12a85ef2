"""host_memory: with it, XLA's per-step temporaries stop being page-faulted in afresh every step."""

import os
import subprocess
import sys

import numpy as np
import pytest

from jaxcar.ops import host_memory

# Minor page faults of each of 8 dacar3 train steps (batch 16 of 64x64, ~40 MB of temporaries a step)
# after 3 warm-up steps. The previous step's temporaries are freed asynchronously, sometimes after
# the next step has allocated its own, so a few steps may still fault until the heap holds enough
# blocks; the median step must not.
PROBE = """
import resource, sys
from jaxcar.ops import host_memory
if sys.argv[1] == "keep":
  assert host_memory.for_jax_on_cpu(), "settings not applied"
import jax, numpy as np, optax
from jaxcar import models
from jaxcar.training import losses, steps
model = models.create("dacar3")
mesh = steps.make_mesh()
tx = optax.adam(1e-4)
state = steps.init_state(models.init(model, jax.random.key(0), 64, 64)["params"], tx, 0, 0.0)
rng = np.random.default_rng(0)
batch = steps.global_batch({k: rng.random((16, 64, 64, 1), np.float32) for k in ("inputs", "targets")}, mesh)
step = steps.make_train_step(model, tx, losses.mse, mesh)
faults = []
for _ in range(11):
  before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
  state, metrics = step(state, batch)
  metrics["loss"].block_until_ready()
  faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(*faults[3:])
"""


def faults_per_step(mode: str) -> np.ndarray:
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": ""}
  done = subprocess.run([sys.executable, "-c", PROBE, mode], env=env, capture_output=True, text=True,
                        timeout=300, check=False)
  assert done.returncode == 0, done.stderr[-2000:]
  return np.array(done.stdout.split()[-8:], int)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc settings: Linux only")
def test_train_step_temporaries_are_reused_instead_of_faulted_in_again():
  default = faults_per_step("default")
  assert default.min() > 5_000, default  # glibc's default: every step maps its temporaries afresh
  kept = faults_per_step("keep")
  assert np.median(kept) < 0.05 * default.min(), (kept, default)


@pytest.mark.parametrize("platforms, expected", [("cpu", True), ("cpu,cuda", True), ("cuda", False), ("tpu", False)])
def test_applies_only_when_jax_will_run_on_the_cpu(monkeypatch, platforms, expected):
  monkeypatch.setenv("JAX_PLATFORMS", platforms)
  assert host_memory._cpu_backend_expected() is expected  # pylint: disable=protected-access
