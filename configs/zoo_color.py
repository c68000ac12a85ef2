"""jaxcar's own colour model (`jaxcar.models.pretrained("color")`): one network for every JPEG quality.

Not a paper's recipe: the choices that let a CPU-sized network beat the JPEG at every quality.
- QCN's design (Li et al. 2020): the image plus its quantization maps, so the network knows how hard
  each file was compressed; residual blocks at half resolution, PixelShuffle back up.
- `residual_output`: the network adds a correction to the JPEG and starts as the identity (its last
  convolution is zero), so training never has to learn to copy the image and a high-quality JPEG,
  which needs almost no correction, is not harmed.
- Degradations a user's files have: quality uniform in [5, 95], 4:2:0 with a quarter of the patches
  4:4:4, and a fifth of the patches compressed twice with shifted 8x8 grids (a re-saved crop).
- Data: BSDS500 train + test (400 photos, `$JAXCAR_SHARED/data/train`); 16 of them are held out for
  validation (`split:16`). LIVE1 and Classic5 are for reporting only.
- L1 loss, Adam with a cosine schedule, an EMA of the weights for evaluation, bfloat16 compute.
Variants: `:small` (minutes on a CPU, the embedded photographs). Later stages, each starting from the
shipped weights of the one before (the learning curves were still rising at the end of each):
- `:v2`: from v1, a fresh and lower cosine (grey validation q10: 28.282 -> 28.328 dB);
- `:v3` (grey): from grey-v2, the mean per-patch log squared error (the mean PSNR evaluation reports)
  instead of L1, at a lower rate still. Plain MSE here raised q10 but lost 0.14 dB at q95 on Classic5:
  its largest errors, the low qualities', drown the rest.
- `:v4` (grey): from grey-v3, four more residual blocks that start as the identity.
- `:v3` (colour): from color-v2, grey's v3 and v4 at once: four more blocks and the log squared error.
"""

from jaxcar.configs import common


def get_config(arg=None, color="rgb"):
  config, variants = common.start(arg, known=("small", "v2", "v3") + (("v4",) if color == "grey" else ()))
  common.set_model(config, "qcn", color=color, num_blocks=8, features=48, dtype="bfloat16",
                   residual_output=True)
  data = config.data
  data.source = "bsds500" if color == "rgb" else "bsds500,train400"
  data.validation = "split:16"
  data.color = color
  data.patch_size = 64
  data.quality_range = (5, 95)
  data.subsampling = "4:2:0"
  data.other_subsampling_fraction = 0.25
  data.double_quality_range = (5, 95)
  data.double_fraction = 0.2
  data.dihedral = True
  data.num_workers = 1
  data.validation_quality = 10
  # Inference only: outputs are projected onto the JPEG's quantization intervals, which can only bring
  # them closer to the original and undoes needless changes to high-quality files (validation split,
  # q95: grey 45.99 -> 46.41 dB; colour, on photos that were never JPEGs, 39.13 -> 39.48).
  data.jpeg_consistency = True
  config.batch_size = 16
  config.num_steps = 7_000
  config.loss = "l1"
  config.optimizer.name = "adam"
  config.optimizer.learning_rate = 5e-4
  config.optimizer.schedule = "cosine"
  config.optimizer.warmup_steps = 200
  config.optimizer.final_fraction = 0.02
  config.ema_decay = 0.999
  config.log_every = 100
  config.eval_every = 1000
  config.checkpoint_every = 500
  if "v2" in variants:
    config.init_from = "color-v1" if color == "rgb" else "grey-v1"
    config.num_steps = 6_000
    config.optimizer.learning_rate = 2e-4
    config.optimizer.warmup_steps = 100
  if "v3" in variants and color == "grey":
    config.init_from = "grey-v2"
    config.num_steps = 6_000
    config.loss = "log_mse"
    config.optimizer.learning_rate = 1e-4
    config.optimizer.warmup_steps = 100
  if "v4" in variants or ("v3" in variants and color == "rgb"):
    # Deeper, not longer: 12 residual blocks, the 4 new ones starting as the identity (their second
    # convolution at zero), so the network starts as its parent and learns what the extra depth adds.
    # Colour's third stage does what grey's third and fourth did, at once.
    config.init_from = "color-v2" if color == "rgb" else "grey-v3"
    config.model.options.num_blocks = 12
    config.num_steps = 8_000
    config.loss = "log_mse"
    config.optimizer.learning_rate = 1e-4
    config.optimizer.warmup_steps = 100
  if "small" in variants:
    # The README's quickstart: about +0.7 dB over the JPEG at q10 on embedded:validation after a few
    # minutes of a 2-core CPU (BUILD_NOTES.md, "Quickstart", has the runs that chose these values).
    common.shrink(config)
    data.validation = "embedded:validation"
    # Where JPEG artifacts are worst, validation's q10 included: +0.60 dB at 250 steps, against +0.44 for 5-95.
    data.quality_range = (5, 50)
    config.num_steps = 500
    config.optimizer.schedule = "cosine"  # shrink's constant rate, but decayed over the short run
    config.optimizer.learning_rate = 2e-3
    config.optimizer.warmup_steps = 50
    config.ema_decay = 0.0  # a 0.999 average of 500 steps is still mostly the initial identity (+0.04 dB at 300)
    config.log_every = 50
    config.eval_every = 250
    config.checkpoint_every = 250
  return config
