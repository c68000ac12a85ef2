"""Pixel, perceptual and adversarial losses, each a pure function of arrays."""

import jax.numpy as jnp
import optax


def mse(prediction, target):
  return jnp.mean(jnp.square(prediction - target))


def l1(prediction, target):
  return jnp.mean(jnp.abs(prediction - target))


def sum_squared(prediction, target):
  # The Image Restorer's MSELoss(reduction='sum'): the scale grows with batch and patch size.
  return jnp.sum(jnp.square(prediction - target))


LOG_MSE_FLOOR = 1e-5  # in model units: an RMS error of ~0.4 grey levels in [-1, 1], ~0.8 in [0, 1]


def log_mse(prediction, target):
  """The mean over patches of log(MSE): minimising it maximises the mean per-patch PSNR, so a q95 patch
  counts as much as a q5 one (with plain MSE the worst-compressed patches, whose errors are largest,
  dominate and the network drifts where the JPEG was already good). The floor keeps near-perfect
  patches from dominating instead."""
  per_patch = jnp.mean(jnp.square(prediction - target), axis=tuple(range(1, prediction.ndim)))
  return jnp.mean(jnp.log(per_patch + LOG_MSE_FLOOR))


PIXEL_LOSSES = {"mse": mse, "l1": l1, "sum_squared": sum_squared, "log_mse": log_mse}


def pixel_loss(name: str):
  if name not in PIXEL_LOSSES:
    raise ValueError(f"unknown loss {name!r}; valid: {sorted(PIXEL_LOSSES)}")
  return PIXEL_LOSSES[name]


def binary_cross_entropy(logits, label: float):
  """Mean BCE against a constant label, from logits (stable where Keras clips probabilities at 1e-7)."""
  return jnp.mean(optax.sigmoid_binary_cross_entropy(logits, jnp.full_like(logits, label)))
