"""QCN (Li et al., IEEE TIP 2020; official VDIGPKU/QGCN code), colour by default.

Recipe reproduced (main.py/params.py and the README command): RGB, JPEG q uniform in [1, 60] per patch,
64x64 random crops with one of the 8 dihedral transforms, image + quantization-map channels in
[-1, 1], L1 loss, Adam (0.9, 0.999, 1e-8) lr 1e-4, x0.1 every 20 epochs, 50 epochs, batch 256,
64 residual blocks of 64 features. The seed's epoch is one crop per DIV2K patch file, whose count
is unknown [GUESS: 1,000 steps per epoch]; override num_steps/decay_steps for your data.
Data: DIV2K's 800 training photos (`data.source=div2k`), as the paper.
Variants: `:grey` (Y channel, q in [1, 100] as the README's grey command), `:small`.
"""

from jaxcar.configs import common

STEPS_PER_EPOCH = 1000  # [GUESS] see the docstring


def get_config(arg=None, name="qcn"):
  config, variants = common.start(arg, known=("small", "grey", "rgb"))
  color = "grey" if "grey" in variants else "rgb"
  common.set_model(config, name, color=color, num_blocks=64, features=64)
  config.data.source = "div2k"  # the paper's DIV2K train HR (python -m jaxcar.data.fetch div2k)
  config.data.color = color
  config.data.patch_size = 64
  config.data.quality_range = (1, 100) if color == "grey" else (1, 60)
  config.data.dihedral = True
  config.data.validation_quality = 10
  config.batch_size = 256
  config.num_steps = 50 * STEPS_PER_EPOCH
  config.loss = "l1"
  config.optimizer.name = "adam"
  config.optimizer.learning_rate = 1e-4
  config.optimizer.schedule = "step"   # PyTorch StepLR(step_size=20 epochs, gamma=0.1)
  config.optimizer.decay_steps = 20 * STEPS_PER_EPOCH
  config.optimizer.decay_factor = 0.1
  config.eval_every = STEPS_PER_EPOCH
  config.checkpoint_every = STEPS_PER_EPOCH
  config.log_every = 100
  if "small" in variants:
    common.shrink(config)
    config.model.options.num_blocks = 4
    config.model.options.features = 32
  return config
