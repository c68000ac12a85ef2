"""VGG19 convolutional features for the NoGAN perceptual loss (torchvision `vgg19().features` layout).

Submodules are named by their torchvision index (`features_0`, `features_2`, ...) so a torchvision
state_dict converts by name. `last_index` is inclusive: 35 = ReLU after conv5_4, the layer the NoGAN
seed uses (Keras `block5_conv4`).
"""

import jax.numpy as jnp
import flax.linen as nn

from jaxcar.models import layers, registry

# torchvision cfg "E": channel counts, "M" = 2x2 max-pool.
VGG19_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M")
TORCHVISION_MEAN = (0.485, 0.456, 0.406)
TORCHVISION_STD = (0.229, 0.224, 0.225)
CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)


def torchvision_preprocess(rgb01):
  """Normalisation torchvision's ImageNet VGG19 weights expect: RGB [0,1] -> (x - mean) / std."""
  return (rgb01 - jnp.asarray(TORCHVISION_MEAN)) / jnp.asarray(TORCHVISION_STD)


def keras_caffe_preprocess(rgb01):
  """The NoGAN seed's quirk: Keras caffe-mode `preprocess_input(x*255)` (BGR, mean-subtracted) / 12.75."""
  bgr = rgb01[..., ::-1] * 255.0 - jnp.asarray(CAFFE_BGR_MEAN)
  return bgr / 12.75


class VGG19Features(nn.Module):
  last_index: int = 35
  dtype: layers.Dtype = jnp.float32
  input_channels = 3

  @nn.compact
  def __call__(self, x):
    x = x.astype(self.dtype)
    index, in_features = 0, 3
    for item in VGG19_CFG:
      if index > self.last_index:
        break
      if item == "M":
        x = nn.max_pool(x, (2, 2), strides=(2, 2))
        index += 1
        continue
      x = layers.torch_conv(item, 3, in_features=in_features, dtype=self.dtype, name=f"features_{index}")(x)
      if index + 1 <= self.last_index:
        x = nn.relu(x)
      index, in_features = index + 2, item
    return x


# torchvision's file also holds the classifier (and, for a shorter `last_index`, deeper features).
@registry.register("vgg19", origin="pytorch", partial_weights=True)
def create(last_index=35, dtype="float32"):
  return VGG19Features(last_index=last_index, dtype=registry.dtype(dtype))
