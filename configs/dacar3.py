"""DACAR3 (Albluwi et al. 2018; Fatma-ALbluwi/DACAR-SACAR-models), as the released Keras training script trains it.

Recipe reproduced: grey (BT.601 luma), JPEG q10, MSE, Adamax lr 2e-3 (the code and saved
training_config say Adamax; the README says Adam), batch 64, 60 epochs of 8,156 steps with
lr x0.1 at epochs 19, 39 and 59, no augmentation, images in [0, 1]. The seed cut 33x33 patches at
stride 10 from whole-image JPEGs of 400 BSDS500 images; here patches are drawn at random and 32x32
so the crop stays on the 8x8 JPEG grid. Variants: `:small` (a CPU run of minutes).
DACAR4/5 and SACAR6 share this recipe (configs/dacar4.py, dacar5.py, sacar6.py).
"""

from jaxcar.configs import common

STEPS_PER_EPOCH = 8156  # 521,984 patches / batch 64 (the shipped optimizer's iteration counter agrees)


def get_config(arg=None, name="dacar3", epochs=60):
  config, variants = common.start(arg)
  common.set_model(config, name, activation="leaky_relu")  # Keras training used LeakyReLU(0.3)
  config.data.source = "bsds500"  # the seed's 400 BSDS500 images (python -m jaxcar.data.fetch bsds500)
  config.data.color = "grey"
  config.data.patch_size = 32
  config.data.quality_range = (10, 10)
  config.data.dihedral = False
  config.data.validation_quality = 10
  config.batch_size = 64
  config.num_steps = common.steps_from_epochs(epochs, STEPS_PER_EPOCH)
  config.loss = "mse"
  config.optimizer.name = "adamax"
  config.optimizer.learning_rate = 2e-3
  config.optimizer.schedule = "step"       # lr = 2e-3 * 0.1 ** floor((epoch + 1) / 20)
  config.optimizer.decay_start = 19 * STEPS_PER_EPOCH
  config.optimizer.decay_steps = 20 * STEPS_PER_EPOCH
  config.optimizer.decay_factor = 0.1
  config.log_every = 500
  config.eval_every = STEPS_PER_EPOCH
  config.checkpoint_every = STEPS_PER_EPOCH
  if "small" in variants:
    common.shrink(config)
    config.optimizer.learning_rate = 1e-3
  return config
