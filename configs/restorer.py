"""Image Restorer (TsengMJ/Image_Compressor, Src/Training.py defaults), the shipped network.

Recipe reproduced: RGB in [0, 1], JPEG q10 (Pillow 4:2:0), 128x128 random crops after a p=0.5 rescale
by one of 0.9/0.8/0.7/0.6, MSELoss(reduction='sum'), Adam lr 5e-4, batch 8, 100 epochs, and the
coded schedule quirk: the lr is halved after every epoch whose index + 1 is not a multiple of 20
(`optimizer.schedule="restorer_halving"`; use "step" for the evident intent, halving every 20 epochs),
each halving with a new Adam, its moments reset (`optimizer.reset_at_decay`; kept: a choice, not a bug).
The seed also rotated by 90/180/270 with p=0.5; the 8 dihedral transforms stand in for that. One
epoch is one crop per training image; for the README's ~100k images at batch 8 that is 12,500 steps
[GUESS: the image count]. Variants: `:small`.
"""

from jaxcar.configs import common

STEPS_PER_EPOCH = 12500  # [GUESS] ~100,000 images / batch 8


def get_config(arg=None):
  config, variants = common.start(arg)
  common.set_model(config, "restorer", variant="shipped")
  # The seed trained on Open Images 2019 + BSR (BSDS500) + DIV2K: the two that are named datasets here
  # (python -m jaxcar.data.fetch div2k bsds500); Open Images (~100k photos, Kaggle) has no fetch: add
  # your copy as a folder, e.g. data.source="div2k,bsds500,path/to/open_images". BSDS500's val (bsd100)
  # stays out, a test set.
  config.data.source = "div2k,bsds500"
  config.data.color = "rgb"
  config.data.patch_size = 128
  config.data.quality_range = (10, 10)
  config.data.dihedral = True
  config.data.rescale_choices = (0.9, 0.8, 0.7, 0.6)
  config.batch_size = 8
  config.num_steps = 100 * STEPS_PER_EPOCH
  config.loss = "sum_squared"
  config.optimizer.name = "adam"
  config.optimizer.learning_rate = 5e-4
  config.optimizer.schedule = "restorer_halving"
  config.optimizer.decay_steps = STEPS_PER_EPOCH
  config.optimizer.halving_period = 20
  config.optimizer.reset_at_decay = True  # Training.py created a fresh Adam at each halving
  config.eval_every = STEPS_PER_EPOCH
  config.checkpoint_every = STEPS_PER_EPOCH
  config.log_every = 500
  if "small" in variants:
    common.shrink(config)
    config.data.patch_size = 64
    config.batch_size = 8
  return config
