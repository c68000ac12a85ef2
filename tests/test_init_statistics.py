"""Each network's fresh parameters follow its seed's initialiser (each seed's official code), layer by layer.

The expected distribution of every leaf is written here from the seeds' code, independently of
jaxcar/models/layers.py. A sample is accepted when its bounds hold exactly (uniform, 2-sigma
truncation) and its mean and standard deviation are within 5 standard errors of the expected ones;
`test_the_check_rejects_near_misses` shows these tolerances reject the plausible wrong initialisers.
"""

import math

import jax
import numpy as np
import pytest
from flax.traverse_util import flatten_dict

import jaxcar.models

# std of N(0, 1) truncated to [-2, 2] and not rescaled (TF/Keras-2.0 truncated_normal)
TRUNCATED_STD = math.sqrt(1.0 - 4.0 * math.exp(-2.0) / math.sqrt(2.0 * math.pi) / math.erf(2.0 / math.sqrt(2.0)))
SIGMAS = 5.0


def _fans(shape):
  """(fan_in, fan_out) as Keras and PyTorch count them for HWIO conv and IO dense kernels."""
  receptive = math.prod(shape[:-2])
  return shape[-2] * receptive, shape[-1] * receptive


def _torch_uniform(fan_in):  # PyTorch's default Conv/Linear weight and bias: U(+-1/sqrt(fan_in))
  return ("uniform", 1.0 / math.sqrt(fan_in))


def _kernel_of(path, params):
  return params[path[:-1] + ("kernel",)]


# Per network: (path, shape, all params) -> expected distribution of that leaf.
def _pytorch_normal_001(path, shape, params):
  """ARCNN (QGCN nets) and the Image Restorer (Src/Model.py): conv weights N(0, 0.001), biases torch default, PReLU 0.25."""
  if path[-1] == "kernel":
    return ("normal", 0.001)
  if path[-1] == "bias":
    return _torch_uniform(_fans(_kernel_of(path, params))[0])
  return ("constant", 0.25)


def _keras205_he_normal(path, shape, params):
  """DACAR/SACAR (DACAR_train.py): Keras 2.0.5 he_normal = truncated normal with std sqrt(2/fan_in); biases 0."""
  return ("truncated", math.sqrt(2.0 / _fans(shape)[0])) if path[-1] == "kernel" else ("constant", 0.0)


def _carcnn(path, shape, params):
  """CNN-CAR (modelCAR.py at 339d977): truncated_normal(std=0.1), biases constant 0.1."""
  return ("truncated", 0.1) if path[-1] == "kernel" else ("constant", 0.1)


def _keras_glorot(path, shape, params):
  """NoGAN (its notebook): Keras GlorotUniform kernels U(+-sqrt(6/(fan_in+fan_out))), zero biases."""
  return ("uniform", math.sqrt(6.0 / sum(_fans(shape)))) if path[-1] == "kernel" else ("constant", 0.0)


def _qcn(path, shape, params):
  """QCN/QGCN/EDSR (VDIGPKU/QGCN nets): conv weights N(0, sqrt(2/(kh*kw*out))), conv biases 0; Linear layers
  (QGCN's conv_global_l) keep PyTorch's default."""
  if path[0].startswith("conv_global_l"):
    return _torch_uniform(_fans(_kernel_of(path, params))[0])
  return ("normal", math.sqrt(2.0 / _fans(shape)[1])) if path[-1] == "kernel" else ("constant", 0.0)


NETWORKS = {
    "arcnn": ({}, _pytorch_normal_001),
    "restorer": ({}, _pytorch_normal_001),
    "restorer_readme": ({"variant": "readme"}, _pytorch_normal_001),
    "dacar3": ({}, _keras205_he_normal),
    "dacar4": ({}, _keras205_he_normal),
    "dacar5": ({}, _keras205_he_normal),
    "sacar6": ({}, _keras205_he_normal),
    "carcnn": ({}, _carcnn),
    "nogan_generator": ({}, _keras_glorot),
    "nogan_discriminator": ({}, _keras_glorot),
    "qcn": ({"num_blocks": 1}, _qcn),  # every block is initialised alike; one keeps init fast
    "qgcn": ({"num_blocks": 2}, _qcn),
    "edsr": ({"num_blocks": 1}, _qcn),
}
# vgg19 is never trained from scratch: the perceptual loss always loads torchvision's ImageNet weights.


def check(sample: np.ndarray, expected) -> list[str]:
  """What is wrong with `sample` as a draw from `expected` (empty: nothing)."""
  kind, scale = expected
  x = np.asarray(sample, np.float64).ravel()
  if kind == "constant":
    return [] if np.all(x == np.float32(scale)) else [f"not all {scale}: {x.min()}..{x.max()}"]
  problems = []
  bound = {"uniform": scale, "truncated": 2.0 * scale}.get(kind)
  if bound is not None and np.abs(x).max() > bound * (1 + 1e-6):
    problems.append(f"|x| reaches {np.abs(x).max():.4g} > bound {bound:.4g}")
  if bound is not None and x.size >= 64 and np.abs(x).max() < 0.8 * bound:
    problems.append(f"|x| stays below {np.abs(x).max():.4g}, far inside the bound {bound:.4g}")
  std = {"normal": scale, "truncated": TRUNCATED_STD * scale, "uniform": scale / math.sqrt(3.0)}[kind]
  if abs(x.mean()) > SIGMAS * std / math.sqrt(x.size):
    problems.append(f"mean {x.mean():.4g} for std {std:.4g}, n={x.size}")
  # standard error of a sample std for kurtosis <= 3 (normal; truncated and uniform are lower)
  if x.size >= 50 and abs(x.std() / std - 1.0) > SIGMAS * math.sqrt(0.5 / x.size):
    problems.append(f"std {x.std():.4g}, expected {std:.4g} (n={x.size})")
  return problems


@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_init_follows_the_seeds_initialiser(name):
  options, rule = NETWORKS[name]
  model = jaxcar.models.create(name.removesuffix("_readme"), **options)
  params = flatten_dict(jax.device_get(jaxcar.models.init(model, jax.random.key(7), 16, 16)["params"]))
  shapes = {path: np.shape(leaf) for path, leaf in params.items()}
  problems = {"/".join(path): check(leaf, rule(path, np.shape(leaf), shapes)) for path, leaf in params.items()}
  assert not {path: p for path, p in problems.items() if p}


def test_the_check_rejects_near_misses():
  rng = np.random.default_rng(0)
  n = 7 * 7 * 64 * 32  # CNN-CAR's conv2, one of the seeds' typical layer sizes
  truncated = np.clip(rng.standard_normal(4 * n), -2, 2)
  truncated = 0.1 * truncated[np.abs(truncated) < 2][:n]
  assert not check(truncated, ("truncated", 0.1))
  assert check(0.1 * rng.standard_normal(n), ("truncated", 0.1))  # untruncated
  assert check(truncated / TRUNCATED_STD, ("truncated", 0.1))  # truncated, std rescaled to 0.1
  assert check(truncated, ("normal", 0.1))  # truncation where none is expected
  limit = math.sqrt(6.0 / (9 * 128 + 9 * 256))
  assert not check(rng.uniform(-limit, limit, 3 * 3 * 128 * 256), ("uniform", limit))
  assert check(rng.uniform(-limit, limit, 3 * 3 * 128 * 256), ("uniform", limit * 1.05))  # fan counted otherwise
  fan_out_std, fan_in_std = math.sqrt(2.0 / (9 * 256)), math.sqrt(2.0 / (9 * 64))
  assert check(fan_in_std * rng.standard_normal(3 * 3 * 64 * 256), ("normal", fan_out_std))
  assert check(np.full(64, 0.0), ("constant", 0.1)) and check(rng.uniform(-0.1, 0.1, 64), ("uniform", 0.2))
