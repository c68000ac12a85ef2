"""NoGAN artifact remover (mathanprasannakumar/JPEG-ARTIFACT-REMOVER notebook): three phases in sequence.

Recipe reproduced (config.yaml + notebook): RGB in [0, 1], JPEG q10 (Pillow, 4:2:0), batch 1 of whole
648x648 crops, no other augmentation (the seed flipped and colour-jittered once, offline), the
recovered one-dense-block generator and the as-coded discriminator, Adam (0.9, 0.999, eps 1e-7 as
Keras) at 1e-4: phase 1 generator-only for 1000 epochs of 700 steps, phase 2 discriminator-only for
250 epochs, phase 3 adversarial for 100 epochs, losses weighted 1:1(:1). Perceptual loss: MSE of VGG19
conv5_4 features after ReLU (index 35); the weights are torchvision's vgg19 file, by default
$JAXCAR_SHARED/models/vgg19-dcbb9e9d.pth (`python -m jaxcar.data.fetch vgg19` puts it there), or any
other with --config.nogan.vgg19_weights (normalised the torchvision way; the seed used Keras weights
with caffe preprocessing, selectable as vgg19_preprocess="keras_caffe"). Data: DIV2K (`div2k`).
Not default, but available: the seed's quirks `nogan.fakes="jpeg_inputs"` (its phase-2 loop used the
JPEG inputs as fakes) and `nogan.adversarial_learning_rate=1e-10` (its phase-3 Adam).
The batch of 1 runs on one device however many the host has (`num_devices`; a batch cannot be split).
Variants: `:small` (a CPU run of minutes, perceptual loss off so no VGG file is needed).
"""

import ml_collections

from jaxcar import paths
from jaxcar.configs import common

STEPS_PER_EPOCH = 700  # 700 training pairs at batch 1
VGG19_FILE = "models/vgg19-dcbb9e9d.pth"  # under the shared folder, where jaxcar.data.fetch vgg19 puts it


def get_config(arg=None):
  config, variants = common.start(arg)
  common.set_model(config, "nogan_generator", dense_blocks=1)
  config.data.source = "div2k"  # the seed's 700 DIV2K training photos came from DIV2K (fetch div2k)
  config.data.color = "rgb"
  config.data.patch_size = 648
  config.data.quality_range = (10, 10)
  config.data.dihedral = False
  config.batch_size = 1
  config.num_devices = 1  # the seed's batch of 1, on the first device
  config.loss = "mse"
  config.optimizer.name = "adam"
  config.optimizer.eps = 1e-7
  config.nogan = ml_collections.ConfigDict()
  config.nogan.generator_steps = 1000 * STEPS_PER_EPOCH
  config.nogan.discriminator_steps = 250 * STEPS_PER_EPOCH
  config.nogan.adversarial_steps = 100 * STEPS_PER_EPOCH
  config.nogan.generator_learning_rate = 1e-4
  config.nogan.discriminator_learning_rate = 1e-4
  config.nogan.adversarial_learning_rate = 1e-4  # the seed's quirk: 1e-10
  config.nogan.fakes = "generator"               # the seed's quirk: "jpeg_inputs"
  config.nogan.pixel_weight = 1.0
  config.nogan.perceptual_weight = 1.0
  config.nogan.adversarial_weight = 1.0
  # A torchvision vgg19 .pth/.safetensors ("random": tests only; "": none, an error unless perceptual_weight=0).
  # The shared folder is looked up when the config is built (run time), not when this file is imported.
  config.nogan.vgg19_weights = str(paths.shared_dir() / VGG19_FILE)
  config.nogan.vgg19_last_index = 35            # ReLU after conv5_4 (Keras block5_conv4)
  config.nogan.vgg19_preprocess = "torchvision"  # or "keras_caffe" for Keras-converted weights
  config.nogan.discriminator = ml_collections.ConfigDict({"design": "as_coded"})
  config.log_every = STEPS_PER_EPOCH
  config.eval_every = 10 * STEPS_PER_EPOCH
  config.checkpoint_every = 10 * STEPS_PER_EPOCH  # the seed saved every 10 epochs
  if "small" in variants:
    common.shrink(config)
    config.data.patch_size = 64
    config.batch_size = 8
    config.num_devices = 0  # all devices: 8 patches split
    config.nogan.generator_steps, config.nogan.discriminator_steps, config.nogan.adversarial_steps = 200, 50, 50
    config.nogan.perceptual_weight = 0.0
  _sync_num_steps(config)
  return config


def _sync_num_steps(config):
  # The run is the three phases; a lazy reference keeps the sum right when the CLI overrides a phase.
  phases = config.nogan
  config.num_steps = (phases.get_ref("generator_steps") + phases.get_ref("discriminator_steps")
                      + phases.get_ref("adversarial_steps"))
