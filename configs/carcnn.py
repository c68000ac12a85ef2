"""CNN-CAR (shimrite/CompressionArtifactReductionCNN at 339d977).

Recipe reproduced: single-channel grey, raw 0-255 values in and out (no normalisation), 32x32 patches,
no augmentation, MSE on the 0-255 scale, TF1 Adam (0.9, 0.999, 1e-8) lr 1e-3, batch 1000, ~800
steps (the README's run), keeping the parameters of the best validation score (`keep_best`; the
seed kept its best-validation-loss checkpoint; here the score is the validation PSNR). The seed's data
(pre-made X.jpg/X.bmp pairs, probably medical slices) and its JPEG quality are unknown: here JPEG q10
[GUESS] from any grey folder. Variants: `:small`.
"""

from jaxcar.configs import common


def get_config(arg=None):
  config, variants = common.start(arg)
  common.set_model(config, "carcnn", final_relu=True)  # the seed's ReLU on the output too
  # The seed's 1,000 512x512 JPG/BMP pairs were never published and no named dataset matches them, so
  # the source stays the embedded photos: point data.source at your own grey folder (or e.g. train400),
  # or at pairs like the seed's with data.source=pairs:DIR (X.jpg beside X.bmp; validation=split:N).
  config.data.source = "embedded"
  config.data.color = "grey"
  config.data.patch_size = 32
  config.data.quality_range = (10, 10)
  config.data.dihedral = False
  config.batch_size = 1000
  config.num_steps = 800
  config.loss = "mse"
  config.optimizer.name = "adam"
  config.optimizer.learning_rate = 1e-3
  config.log_every = 10  # the seed validated every 10 steps
  config.eval_every = 100
  config.checkpoint_every = 100
  config.keep_best = True  # the seed saved a checkpoint whenever the validation loss improved
  if "small" in variants:
    common.shrink(config)
  return config
