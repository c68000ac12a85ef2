"""`check(config)`: every field of a training config checked before anything expensive or written.

One place, walked in the order of configs/base.py (then the NoGAN fields): a bad value is one
`ValueError` line naming the field, the value and what is allowed, raised before the workdir is
created, the data decoded or a step compiled. Fields a config does not have are not checked (a run
saved before the field existed); fields this module does not know are left to the code that uses them.
"""

import numbers

import ml_collections

from jaxcar import models
from jaxcar.data import jpeg, prepare, sources
from jaxcar.ops import conv
from jaxcar.training import losses

SCHEDULES = ("constant", "step", "cosine", "restorer_halving")
JPEG_QUALITIES = (1, 100)
PATCH_GRID = 8  # JPEG block: the smallest patch


class ConfigValueError(ValueError):
  """A config field with a value training cannot use (the message names the field)."""


def check(config: ml_collections.ConfigDict) -> None:
  """Raises ConfigValueError for the first field whose value is not allowed."""
  _model(config)
  _data(config.data)
  _optimisation(config)
  _loop(config)
  if "nogan" in config:
    _nogan(config.nogan)


def _fail(field: str, value, allowed: str):
  raise ConfigValueError(f"config.{field}={value!r} is not allowed: it must be {allowed}")


def _is_int(value) -> bool:
  return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_number(value) -> bool:
  return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _int(config, name: str, prefix: str, minimum: int = 1):
  if name not in config:
    return
  value = config[name]
  if not _is_int(value) or value < minimum:
    _fail(prefix + name, value, "a positive integer" if minimum == 1 else f"an integer >= {minimum}")


def _number(config, name: str, prefix: str, low=None, high=None, low_open=False, high_open=False):
  """A real number within [low, high] (an open end excludes its bound; None: unbounded)."""
  if name not in config:
    return
  value = config[name]
  ok = _is_number(value) and value == value  # NaN is no number here
  if ok and low is not None:
    ok = value > low if low_open else value >= low
  if ok and high is not None:
    ok = value < high if high_open else value <= high
  if not ok:
    left = "(" if low_open else "["
    right = ")" if high_open else "]"
    span = f"{left}{'-inf' if low is None else low}, {'inf' if high is None else high}{right}"
    span = span.replace("inf]", "inf)")
    _fail(prefix + name, value, f"a number in {span}")


def _choice(config, name: str, prefix: str, allowed):
  if name in config and config[name] not in allowed:
    _fail(prefix + name, config[name], f"one of {', '.join(map(str, allowed))}")


def _bool(config, name: str, prefix: str):
  if name in config and not isinstance(config[name], bool):
    _fail(prefix + name, config[name], "True or False")


def _string(config, name: str, prefix: str, empty_ok: bool = True):
  if name not in config:
    return
  value = config[name]
  if not isinstance(value, str) or (not empty_ok and not value.strip()):
    _fail(prefix + name, value, "a string" if empty_ok else "a non-empty string")


def _qualities(config, name: str, prefix: str, empty_ok: bool = False):
  if name not in config:
    return
  value = tuple(config[name]) if isinstance(config[name], (tuple, list)) else config[name]
  if empty_ok and value == ():
    return
  low, high = JPEG_QUALITIES
  if (not isinstance(value, tuple) or len(value) != 2 or not all(_is_int(q) for q in value)
      or not low <= value[0] <= value[1] <= high):
    _fail(prefix + name, value, f"(lo, hi), integers with {low} <= lo <= hi <= {high}"
          + (", or () for none" if empty_ok else ""))


def _model(config):
  if "model" not in config:
    return
  _choice(config.model, "name", "model.", models.names())


def _data(data):
  p = "data."
  _string(data, "source", p, empty_ok=False)
  _sources(data, "source", p)
  _choice(data, "color", p, sources.COLORS)
  _int(data, "patch_size", p, minimum=PATCH_GRID)
  _qualities(data, "quality_range", p)
  _choice(data, "subsampling", p, jpeg.SUBSAMPLINGS)
  _number(data, "other_subsampling_fraction", p, 0, 1)
  _qualities(data, "double_quality_range", p, empty_ok=True)
  _number(data, "double_fraction", p, 0, 1)
  _bool(data, "dihedral", p)
  if "rescale_choices" in data:
    choices = data.rescale_choices
    if not isinstance(choices, (tuple, list)) or not all(_is_number(s) and 0 < s <= 1 for s in choices):
      _fail(p + "rescale_choices", choices, "a tuple of scales in (0, 1], or () for none")
  _choice(data, "value_range", p, prepare.VALUE_RANGES)
  _bool(data, "quantization_maps", p)
  _int(data, "global_size", p, minimum=0)
  _int(data, "num_workers", p, minimum=0)
  # Grain's worker buffers need a slot each; in the main process 0 means no read-ahead.
  _int(data, "prefetch_buffer_size", p, minimum=1 if data.get("num_workers", 0) > 0 else 0)
  _string(data, "cache_dir", p)
  _string(data, "validation", p)
  _sources(data, "validation", p)
  validation = data.get("validation", "")
  if isinstance(validation, str) and validation.startswith(sources.SPLIT_PREFIX):
    count = validation[len(sources.SPLIT_PREFIX):]
    if not count.isdigit() or int(count) < 1:
      _fail(p + "validation", validation, f"{sources.SPLIT_PREFIX}N with a whole N >= 1, a source, or '' for none")
  if "validation_quality" in data:
    low, high = JPEG_QUALITIES
    value = data.validation_quality
    if not _is_int(value) or not low <= value <= high:
      _fail(p + "validation_quality", value, f"an integer in [{low}, {high}]")
  _bool(data, "jpeg_consistency", p)


def _sources(data, name: str, prefix: str):
  """Each comma-joined part of a source that says `pairs:` names a folder after it."""
  value = data.get(name, "")
  if not isinstance(value, str):
    return
  for part in (part.strip() for part in value.split(",")):
    if part.startswith(sources.PAIRS_PREFIX) and not part[len(sources.PAIRS_PREFIX):].strip():
      _fail(prefix + name, value, f"{sources.PAIRS_PREFIX}DIR, a folder of X.jpg + X.png/X.bmp pairs")


def _optimisation(config):
  _int(config, "batch_size", "")
  _int(config, "num_steps", "")
  _choice(config, "loss", "", sorted(losses.PIXEL_LOSSES))
  if "optimizer" in config:
    opt, p = config.optimizer, "optimizer."
    if "name" in opt:
      import optax  # pylint: disable=import-outside-toplevel  (the optimizers' names are optax's)
      if not isinstance(opt.name, str) or not callable(getattr(optax, opt.name, None)) or opt.name.startswith("_"):
        _fail(p + "name", opt.name, "the name of an optax optimizer such as adam, adamax, adamw, sgd")
    _number(opt, "learning_rate", p, 0, None, low_open=True)
    _number(opt, "b1", p, 0, 1, high_open=True)
    _number(opt, "b2", p, 0, 1, high_open=True)
    _number(opt, "eps", p, 0, None)
    _choice(opt, "schedule", p, SCHEDULES)
    _int(opt, "decay_steps", p, minimum=0)
    if opt.get("schedule") in ("step", "restorer_halving") and opt.get("decay_steps", 0) == 0:
      _fail(p + "decay_steps", opt.decay_steps, f"a positive integer with optimizer.schedule={opt.schedule!r}")
    _number(opt, "decay_factor", p, 0, None, low_open=True)
    _int(opt, "decay_start", p, minimum=0)
    _int(opt, "warmup_steps", p, minimum=0)
    _number(opt, "final_fraction", p, 0, 1)
    _int(opt, "halving_period", p)
    _bool(opt, "reset_at_decay", p)
    _number(opt, "grad_clip_norm", p, 0, None)
  _number(config, "ema_decay", "", 0, 1, high_open=True)
  _string(config, "init_from", "")


def _loop(config):
  _int(config, "seed", "", minimum=0)
  for name in ("log_every", "eval_every", "checkpoint_every", "keep_checkpoints"):
    _int(config, name, "")
  _bool(config, "keep_best", "")
  _int(config, "num_devices", "", minimum=0)
  _choice(config, "cpu_conv", "", conv.CHOICES)


def _nogan(nogan):
  from jaxcar.models import nogan as nogan_models  # pylint: disable=import-outside-toplevel
  from jaxcar.training import nogan as nogan_training  # pylint: disable=import-outside-toplevel
  p = "nogan."
  for name in ("generator_steps", "discriminator_steps", "adversarial_steps"):
    _int(nogan, name, p, minimum=0)
  for name in ("generator_learning_rate", "discriminator_learning_rate", "adversarial_learning_rate"):
    _number(nogan, name, p, 0, None, low_open=True)
  _choice(nogan, "fakes", p, nogan_training.FAKES)
  for name in ("pixel_weight", "perceptual_weight", "adversarial_weight"):
    _number(nogan, name, p, 0, None)
  _string(nogan, "vgg19_weights", p)
  _int(nogan, "vgg19_last_index", p, minimum=0)
  _choice(nogan, "vgg19_preprocess", p, sorted(nogan_training.PREPROCESS))
  if "discriminator" in nogan:
    _choice(nogan.discriminator, "design", p + "discriminator.", sorted(nogan_models.DISCRIMINATOR_DESIGNS))
