"""Test setup: 8 simulated CPU devices (set before JAX is imported) and the shared-data fixture.

`JAXCAR_TEST_DEVICES=1` runs the tests on the one CPU device most users have instead, where the
convolutions take the oneDNN path that several devices switch off (.ci/run runs the inference tests so).
"""

import os

DEVICES = int(os.environ.get("JAXCAR_TEST_DEVICES", "8"))
os.environ.setdefault("XLA_FLAGS", f"--xla_force_host_platform_device_count={DEVICES}")

import numpy as np
from PIL import Image
import pytest

from jaxcar import paths


@pytest.fixture(scope="session")
def shared():
  """The shared folder (datasets, released weights); tests that need it skip when it is absent."""
  root = paths.shared_dir()
  if not (root / "spec").is_dir():
    pytest.skip(f"shared material not found at {root}; set ${paths.SHARED_ENV} to run this test")
  return root


@pytest.fixture(scope="module")
def images(tmp_path_factory):
  """A folder of four small smooth-plus-texture photo-like images (fast to cache and validate on), the
  training tests' data."""
  folder = tmp_path_factory.mktemp("images")
  rng = np.random.default_rng(0)
  for i in range(4):
    y, x = np.mgrid[0:64, 0:64]
    base = 128 + 60 * np.sin(x / (5 + i)) * np.cos(y / 7) + rng.normal(0, 10, (64, 64))
    rgb = np.stack([base, base[::-1], base.T], -1)
    Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8)).save(folder / f"{i}.png")
  return folder
