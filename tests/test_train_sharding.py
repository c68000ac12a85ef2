"""The sharded step gives the same result on 1 device, 8 devices and 2 processes over gloo.

Tolerance: rtol 1e-5 / atol 1e-7 on float32 - splitting the batch only changes the order of the
gradient reduction, so results agree to a few ulps, not bit for bit.
"""

import socket
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np

from tests import sharding_case

ROOT = Path(__file__).resolve().parents[1]
RTOL, ATOL = 1e-5, 1e-7


def test_eight_devices_match_one_device():
  batch = sharding_case.global_batch_numpy()
  one_losses, one_params = sharding_case.train(jax.devices()[:1], batch)
  eight_losses, eight_params = sharding_case.train(jax.devices()[:8], batch)
  np.testing.assert_allclose(eight_losses, one_losses, rtol=RTOL, atol=ATOL)
  assert one_losses[-1] < one_losses[0]  # the steps really trained
  for a, b in zip(eight_params, one_params):
    np.testing.assert_allclose(a, b, rtol=RTOL, atol=ATOL)


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def test_two_processes_over_gloo_match_one_process(tmp_path):
  output, port = tmp_path / "result.npz", _free_port()
  env = {"PYTHONPATH": str(ROOT), "XLA_FLAGS": "", "JAX_PLATFORMS": "cpu",
         **{k: v for k, v in __import__("os").environ.items() if k not in ("XLA_FLAGS", "PYTHONPATH")}}
  workers = [subprocess.Popen([sys.executable, str(ROOT / "tests" / "multiprocess_worker.py"), str(port), str(i),
                               str(output)], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True) for i in range(2)]
  for worker in workers:
    out, _ = worker.communicate(timeout=300)
    assert worker.returncode == 0, out[-3000:]
  result = np.load(output)
  losses, params = sharding_case.train(jax.devices()[:4], sharding_case.global_batch_numpy())
  np.testing.assert_allclose(result["losses"], losses, rtol=RTOL, atol=ATOL)
  for i, expected in enumerate(params):
    np.testing.assert_allclose(result[str(i)], expected, rtol=RTOL, atol=ATOL)
