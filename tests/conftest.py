"""Test setup: 8 simulated CPU devices (set before JAX is imported) and the shared-data fixture.

`JAXCAR_TEST_DEVICES=1` runs the tests on the one CPU device most users have instead, where the
convolutions take the oneDNN path that several devices switch off (.ci/run runs the inference tests so).
"""

import os

DEVICES = int(os.environ.get("JAXCAR_TEST_DEVICES", "8"))
os.environ.setdefault("XLA_FLAGS", f"--xla_force_host_platform_device_count={DEVICES}")

import pytest

from jaxcar import paths


@pytest.fixture(scope="session")
def shared():
  """The shared folder (datasets, released weights); tests that need it skip when it is absent."""
  root = paths.shared_dir()
  if not (root / "spec").is_dir():
    pytest.skip(f"shared material not found at {root}; set ${paths.SHARED_ENV} to run this test")
  return root
