"""Test setup: 8 simulated CPU devices (set before JAX is imported) and the shared-data fixture."""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")

import pytest

from jaxcar import paths


@pytest.fixture(scope="session")
def shared():
  """The shared folder (datasets, released weights); tests that need it skip when it is absent."""
  root = paths.shared_dir()
  if not (root / "spec").is_dir():
    pytest.skip(f"shared material not found at {root}; set ${paths.SHARED_ENV} to run this test")
  return root
