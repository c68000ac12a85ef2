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


PIXEL_LOSSES = {"mse": mse, "l1": l1, "sum_squared": sum_squared}


def pixel_loss(name: str):
  if name not in PIXEL_LOSSES:
    raise ValueError(f"unknown loss {name!r}; valid: {sorted(PIXEL_LOSSES)}")
  return PIXEL_LOSSES[name]


def binary_cross_entropy(logits, label: float):
  """Mean BCE against a constant label, from logits (stable where Keras clips probabilities at 1e-7)."""
  return jnp.mean(optax.sigmoid_binary_cross_entropy(logits, jnp.full_like(logits, label)))
