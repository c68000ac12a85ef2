"""Optional test dependencies: PyTorch runs the independent reference implementations only.

    from optional import torch, torch_twins, requires_torch

Without PyTorch the tests marked `requires_torch` skip with a reason; every other test still runs.
"""

import pytest

try:
  import torch
  from benchmarks import torch_twins
except ImportError:
  torch = torch_twins = None

requires_torch = pytest.mark.skipif(
    torch is None, reason="needs PyTorch for the reference implementations: pip install torch==2.13.0")
