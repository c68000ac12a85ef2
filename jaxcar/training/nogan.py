"""NoGAN (mathanprasannakumar/JPEG-ARTIFACT-REMOVER: notebook, config.yaml): three phases, one jitted step each.

1. generator: pixel MSE + VGG19 perceptual loss;
2. discriminator: BCE(D(clean), 1) + BCE(D(fake), 0), fakes from the phase-1 generator;
3. adversarial: both networks from one forward pass (the seed's shared tape): generator
   BCE(D(G(x)), 1) + MSE + perceptual, discriminator as in phase 2.
Each phase has its own Adam and learning rate (config.nogan); a phase's optimizer starts fresh, as
the seed's separate scripts did. The seed's quirks are options: `fakes="jpeg_inputs"` (its phase-2 loop
fed the JPEG inputs as fakes) and `adversarial_learning_rate=1e-10`.
"""

from pathlib import Path
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax

from jaxcar import models
from jaxcar.models import vgg
from jaxcar.training import losses, steps

PHASES = ("generator", "discriminator", "adversarial")
FAKES = ("generator", "jpeg_inputs")
PREPROCESS = {"torchvision": vgg.torchvision_preprocess, "keras_caffe": vgg.keras_caffe_preprocess}
RANDOM_VGG = "random"  # tests and smoke runs only: an untrained VGG19 (the loss then means nothing)


@flax.struct.dataclass
class NoGANState:
  step: jax.Array
  generator: steps.TrainState      # its opt_state is phase 1's
  discriminator: steps.TrainState  # its opt_state is phase 2's
  adversarial_opt: Any             # {"generator": ..., "discriminator": ...}: phase 3's optimizers


class NoGANTrainer:

  def __init__(self, config, mesh):
    self.config, self.nogan, self.mesh = config, config.nogan, mesh
    if self.nogan.fakes not in FAKES:
      raise ValueError(f"nogan.fakes must be one of {FAKES}, got {self.nogan.fakes!r}")
    self.boundaries = (self.nogan.generator_steps, self.nogan.generator_steps + self.nogan.discriminator_steps)
    self.generator = models.from_config(config)
    self.size_multiple = models.size_multiple(self.generator)
    self.discriminator = models.create("nogan_discriminator", logits=True, **self.nogan.discriminator)
    self.tx = {phase: self._adam(self.nogan[f"{phase}_learning_rate"]) for phase in PHASES}
    self.perceptual = self._perceptual_loss()
    shard = dict(in_shardings=(steps.replicated(mesh), steps.batch_sharded(mesh)),
                 out_shardings=(steps.replicated(mesh), steps.replicated(mesh)), donate_argnums=0)
    self._steps = [jax.jit(steps.with_split_batch(self._on_model_batch(fn), mesh), **shard)
                   for fn in (self._generator_step, self._discriminator_step, self._adversarial_step)]
    self._apply = steps.make_apply(self.generator, mesh)

  def _on_model_batch(self, step_fn):
    """step_fn on the model's float inputs, made on the device from the workers' uint8 batch."""
    value_range, global_size = self.config.data.value_range, self.config.data.global_size
    return lambda state, batch: step_fn(state, steps.model_batch(batch, value_range, global_size))

  def _adam(self, learning_rate):
    opt = self.config.optimizer
    return optax.adam(learning_rate, b1=opt.b1, b2=opt.b2, eps=opt.eps)

  def _perceptual_loss(self):
    """MSE of VGG19 features, or None when nogan.perceptual_weight == 0."""
    if self.nogan.perceptual_weight == 0:
      return None
    weights = self.nogan.vgg19_weights
    if not weights:
      raise ValueError("the perceptual loss needs VGG19 weights: set --config.nogan.vgg19_weights=PATH to a "
                       "torchvision vgg19 .pth/.safetensors file, or --config.nogan.perceptual_weight=0")
    network = models.create("vgg19", last_index=self.nogan.vgg19_last_index)
    if weights == RANDOM_VGG:
      params = models.init(network, jax.random.PRNGKey(self.config.seed), 32, 32)["params"]
    else:
      from jaxcar import convert  # pylint: disable=import-outside-toplevel
      if not Path(weights).is_file():
        raise FileNotFoundError(f"VGG19 weights {weights} not found; get them with: python -m jaxcar.data.fetch "
                                f"vgg19 --to $JAXCAR_SHARED, or set --config.nogan.vgg19_weights=PATH")
      params = convert.load_params(weights, "vgg19", network)
    preprocess = PREPROCESS[self.nogan.vgg19_preprocess]
    features = lambda x: network.apply({"params": params}, preprocess(x)).astype(jnp.float32)
    return lambda restored, clean: losses.mse(features(restored), jax.lax.stop_gradient(features(clean)))

  # --- state ---

  def init_state(self) -> NoGANState:
    def init():
      g_rng, d_rng = jax.random.split(jax.random.PRNGKey(self.config.seed))
      g_params = models.init(self.generator, g_rng, 32, 32)["params"]
      d_params = models.init(self.discriminator, d_rng, 32, 32)["params"]
      return NoGANState(
          step=jnp.zeros((), jnp.int32),
          generator=steps.init_state(g_params, self.tx["generator"], self.config.seed, 0.0),
          discriminator=steps.init_state(d_params, self.tx["discriminator"], self.config.seed + 1, 0.0),
          adversarial_opt={"generator": self.tx["adversarial"].init(g_params),
                           "discriminator": self.tx["adversarial"].init(d_params)})
    return jax.jit(init, out_shardings=steps.replicated(self.mesh))()

  def abstract_state(self):
    return jax.eval_shape(self.init_state)

  def phase(self, step: int) -> int:
    return sum(step >= b for b in self.boundaries)

  def train_step(self, state, batch, step: int):
    return self._steps[self.phase(step)](state, batch)

  def predict(self, state, inputs: dict):
    return self._apply(state.generator.params, *steps.model_inputs(steps.global_replicated(inputs, self.mesh)))

  # --- losses and the three steps ---

  def _generator_loss(self, g_params, d_params, batch):
    restored = self.generator.apply({"params": g_params}, batch["inputs"]).astype(jnp.float32)
    pixel = losses.mse(restored, batch["targets"])
    total = self.nogan.pixel_weight * pixel
    metrics = {"pixel_loss": pixel}
    if self.perceptual is not None:
      metrics["perceptual_loss"] = self.perceptual(restored, batch["targets"])
      total += self.nogan.perceptual_weight * metrics["perceptual_loss"]
    if d_params is not None:
      metrics["adversarial_loss"] = losses.binary_cross_entropy(self._scores(d_params, restored), 1.0)
      total += self.nogan.adversarial_weight * metrics["adversarial_loss"]
    return total, (metrics, restored)

  def _scores(self, d_params, images):
    return self.discriminator.apply({"params": d_params}, images).astype(jnp.float32)

  def _discriminator_loss(self, d_params, clean, fake):
    return (losses.binary_cross_entropy(self._scores(d_params, clean), 1.0)
            + losses.binary_cross_entropy(self._scores(d_params, jax.lax.stop_gradient(fake)), 0.0))

  def _generator_step(self, state, batch):
    (loss, (metrics, _)), grads = jax.value_and_grad(self._generator_loss, has_aux=True)(
        state.generator.params, None, batch)
    generator = _apply_updates(self.tx["generator"], state.generator, grads)
    return state.replace(step=state.step + 1, generator=generator), {"loss": loss, **metrics}

  def _discriminator_step(self, state, batch):
    if self.nogan.fakes == "jpeg_inputs":
      fake = batch["inputs"]
    else:
      fake = self.generator.apply({"params": state.generator.params}, batch["inputs"]).astype(jnp.float32)
    loss, grads = jax.value_and_grad(self._discriminator_loss)(state.discriminator.params, batch["targets"], fake)
    discriminator = _apply_updates(self.tx["discriminator"], state.discriminator, grads)
    return state.replace(step=state.step + 1, discriminator=discriminator), {"discriminator_loss": loss}

  def _adversarial_step(self, state, batch):
    g_params, d_params = state.generator.params, state.discriminator.params
    (g_loss, (metrics, restored)), g_grads = jax.value_and_grad(self._generator_loss, has_aux=True)(
        g_params, d_params, batch)
    d_loss, d_grads = jax.value_and_grad(self._discriminator_loss)(d_params, batch["targets"], restored)
    tx, opt = self.tx["adversarial"], state.adversarial_opt
    g_updates, g_opt = tx.update(g_grads, opt["generator"], g_params)
    d_updates, d_opt = tx.update(d_grads, opt["discriminator"], d_params)
    return state.replace(
        step=state.step + 1,
        generator=state.generator.replace(params=optax.apply_updates(g_params, g_updates)),
        discriminator=state.discriminator.replace(params=optax.apply_updates(d_params, d_updates)),
        adversarial_opt={"generator": g_opt, "discriminator": d_opt},
    ), {"loss": g_loss, "discriminator_loss": d_loss, **metrics}


def _apply_updates(tx, train_state: steps.TrainState, grads) -> steps.TrainState:
  updates, opt_state = tx.update(grads, train_state.opt_state, train_state.params)
  return train_state.replace(step=train_state.step + 1, params=optax.apply_updates(train_state.params, updates),
                             opt_state=opt_state)
