"""Helpers every network config shares: the base fields and the `:variant` suffixes.

`--config=qcn:small,grey` calls `configs/qcn.py:get_config("small,grey")`; each name after the colon is
one variant. `small` shrinks any config to a run that finishes in minutes on a laptop CPU.
"""

import ml_collections

from jaxcar.configs import base

class UnknownVariant(ValueError):
  """A `:variant` this config does not have; `valid` lists the ones it has (`--help` shows them)."""

  def __init__(self, unknown, valid):
    super().__init__(f"unknown config variant(s) {unknown}; valid: {valid}")
    self.valid = valid


def start(arg: str | None, known=("small",)) -> tuple[ml_collections.ConfigDict, set]:
  """The base config and the variant names requested, or an error listing the valid ones."""
  requested = {v.strip() for v in (arg or "").split(",") if v.strip()}
  unknown = sorted(requested - set(known))
  if unknown:
    raise UnknownVariant(unknown, sorted(known))
  return base.get_config(), requested


def shrink(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The `small` variant: a few hundred steps on the embedded photographs, sized for a CPU."""
  config.data.source = "embedded"
  config.data.num_workers = 0
  config.batch_size = 16
  config.num_steps = 300
  config.log_every = 25
  config.eval_every = 100
  config.checkpoint_every = 100
  # Step schedules are written in recipe steps; stretch them over the short run instead.
  config.optimizer.schedule = "constant"
  return config


def steps_from_epochs(epochs: float, steps_per_epoch: int) -> int:
  return int(round(epochs * steps_per_epoch))


def set_model(config: ml_collections.ConfigDict, name: str, **options) -> ml_collections.ConfigDict:
  """Select the network and list *every* option it takes, so each can be overridden from the CLI."""
  from jaxcar import models  # configs stay importable without JAX until a model is chosen
  config.model.name = name
  config.model.options = ml_collections.ConfigDict({**models.options(name), **options})
  network = models.network(name)  # the inputs it takes, as its seed feeds them
  config.data.value_range = network.value_range
  config.data.quantization_maps = network.quantization_maps
  config.data.global_size = network.global_size
  return config
