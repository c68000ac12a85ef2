"""Fields shared by every jaxcar config. Model configs import `get_config()` and override.

Each field says what it controls; the per-model files say which seed value they reproduce and why.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()

  # --- network: jaxcar.models.create(model.name, **model.options) ---
  config.model = ml_collections.ConfigDict()
  config.model.name = "arcnn"
  config.model.options = ml_collections.ConfigDict()  # e.g. color, num_blocks, activation, dtype

  # --- data: see jaxcar/data; every model-specific input is switched on here, not by model name ---
  config.data = ml_collections.ConfigDict()
  config.data.source = "embedded"      # "embedded" (scikit-image photos), a named dataset (bsds500, train400,
                                       # live1_color, ... under $JAXCAR_SHARED), a folder or a .txt list of
                                       # files; several joined by commas
  config.data.color = "rgb"            # "rgb" or "grey" (BT.601 luma as MATLAB rgb2ycbcr)
  config.data.patch_size = 64          # square crop side; a multiple of 8 keeps the JPEG grid aligned
  config.data.quality_range = (10, 10) # JPEG quality drawn uniformly from [lo, hi] (inclusive) per patch
  config.data.subsampling = "4:2:0"    # chroma subsampling of the degradation: "4:2:0" or "4:4:4"
  config.data.other_subsampling_fraction = 0.0  # share of colour patches compressed with the other one
  config.data.double_quality_range = ()  # (lo, hi): recompress at a second quality with a shifted grid
  config.data.double_fraction = 1.0    # share of patches recompressed when double_quality_range is set
  config.data.dihedral = True          # random one of the 8 flips/rotations
  config.data.rescale_choices = ()     # e.g. (0.9, 0.8, 0.7, 0.6): rescale with p=0.5 before cropping
  # What the network takes, set by `common.set_model` from the network's declaration (jaxcar.models):
  config.data.value_range = "zero_one" # "zero_one", "minus_one_one" (QCN family) or "zero_255" (CNN-CAR)
  config.data.quantization_maps = False  # append normalised quantization maps to the input (QCN/QGCN)
  config.data.global_size = 0          # >0: also feed the whole patch resized to this size (QGCN: 112)
  config.data.num_workers = 2          # Grain worker processes (0 = in the main process)
  config.data.prefetch_buffer_size = 2
  config.data.cache_dir = ""           # decoded-image cache; "" = $JAXCAR_CACHE/decoded (~/.cache/jaxcar/decoded)
  config.data.validation = "embedded:validation"  # held-out images for periodic PSNR: the two embedded
                                                 # photos "embedded" leaves out, a source as above, or
                                                 # "split:N": N images of data.source, left out of training
  config.data.validation_quality = 10
  config.data.jpeg_consistency = False  # evaluate/restore: project the output onto the JPEG's
                                        # quantization intervals (jaxcar.data.consistency)

  # --- optimisation ---
  config.batch_size = 16               # global batch, split over processes and devices
  config.num_steps = 1000
  config.loss = "mse"                  # "mse", "l1", "sum_squared" (Image Restorer's reduction='sum')
  config.optimizer = ml_collections.ConfigDict()
  config.optimizer.name = "adam"       # any optax optimizer by name: adam, adamax, ...
  config.optimizer.learning_rate = 1e-4
  config.optimizer.b1 = 0.9
  config.optimizer.b2 = 0.999
  config.optimizer.eps = 1e-8
  config.optimizer.schedule = "constant"  # "constant" or "step" (multiply by `decay_factor` every `decay_steps`)
  config.optimizer.decay_steps = 0
  config.optimizer.decay_factor = 0.1
  config.optimizer.decay_start = 0        # "step": step of the first decay (0 = decay_steps); DACAR decays at epoch 19
  config.optimizer.warmup_steps = 0       # "cosine": linear warm-up steps
  config.optimizer.final_fraction = 0.01  # "cosine": the last step's lr as a fraction of learning_rate
  config.optimizer.halving_period = 20    # "restorer_halving": epochs (of decay_steps steps) without halving
  config.optimizer.reset_at_decay = False # restart the optimizer (moments, step count) at each lr change of a
                                          # "step"/"restorer_halving" schedule: the Image Restorer made a new Adam
  config.optimizer.grad_clip_norm = 0.0   # >0: clip by global norm
  config.ema_decay = 0.0                  # >0: keep an exponential moving average of the parameters
  config.init_from = ""                   # start from these parameters instead of a random init (fine-tuning;
                                          # the optimizer starts fresh): a jaxcar.zoo name or a weights file

  # --- loop, logging, checkpoints ---
  config.seed = 0
  config.log_every = 50
  config.eval_every = 500
  config.checkpoint_every = 500
  config.keep_checkpoints = 3
  config.keep_best = False             # also keep the parameters of the best validation PSNR (WORKDIR/best);
                                       # evaluate/restore/export --workdir then use them (CNN-CAR kept its best)
  config.num_devices = 0               # devices the batch is split over: 0 = all (batch_size must divide among
                                       # them); N = the first N, N / process count on each process (NoGAN: 1)
  config.cpu_conv = "auto"             # CPU convolutions (jaxcar.ops.conv): "auto" (oneDNN on one CPU device or on
                                       # each device's slice of the batch, else XLA's), "onednn" or "xla"
  return config
