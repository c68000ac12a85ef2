"""One restoration network trained on (JPEG, clean) pairs with a pixel loss: every config but NoGAN."""

import jax
import ml_collections

from jaxcar import convert, models, zoo
from jaxcar.training import losses, optim, steps


class SupervisedTrainer:
  """Builds the network, optimizer and jitted steps a config describes; holds no mutable state."""

  def __init__(self, config: ml_collections.ConfigDict, mesh):
    self.config, self.mesh = config, mesh
    self.model = models.from_config(config)
    self.size_multiple = models.size_multiple(self.model)  # whole validation images are padded to it
    self.tx = optim.optimizer(config.optimizer, config.num_steps)
    self._step = steps.make_train_step(self.model, self.tx, losses.pixel_loss(config.loss), mesh,
                                       config.ema_decay, config.data.value_range, config.data.global_size)
    self._apply = steps.make_apply(self.model, mesh)

  def init_state(self) -> steps.TrainState:
    def init(start_params):
      params = start_params
      if params is None:
        params = models.init(self.model, jax.random.PRNGKey(self.config.seed))["params"]
      return steps.init_state(params, self.tx, self.config.seed, self.config.ema_decay)
    return jax.jit(init, out_shardings=steps.replicated(self.mesh))(self._start_params())

  def _start_params(self):
    """`config.init_from`'s parameters (a jaxcar.zoo name or a weights file), or None: random init."""
    source = self.config.get("init_from", "")
    if not source:
      return None
    if source in zoo.names():
      return self._grown(convert.flatten(zoo.load(source).params), f"init_from={source}")
    return convert.load_params(source, self.config.model.name, self.model)

  def _grown(self, parent: dict, source: str):
    """The parent's parameters, plus identity residual blocks where config.model is deeper.

    A new block `x + res_scale * conv2(relu(conv1(x)))` with conv2 at zero passes its input through,
    so the deeper network starts as exactly its parent and training learns only what the extra
    depth adds (zoo_grey:v4). Any other difference is the usual one-line mismatch error.
    """
    expected = convert.expected_shapes(self.model)
    added = [path for path in expected if path not in parent]
    new_blocks = {path[0] for path in added}
    grows = bool(added) and all(block.startswith("residual") for block in new_blocks) \
        and not new_blocks & {path[0] for path in parent}
    kept = {path: shape for path, shape in expected.items() if path not in added} if grows else expected
    convert.check_shapes(parent, kept, f"{source} (a different network than config.model)")
    if not grows:
      return convert.unflatten(parent)
    fresh = convert.flatten(models.init(self.model, jax.random.PRNGKey(self.config.seed))["params"])
    grown = {path: parent.get(path, fresh[path]) for path in expected}
    for path in added:
      if path[1] == "conv2":
        grown[path] = jax.numpy.zeros_like(grown[path])
    return convert.unflatten(grown)

  def abstract_state(self):
    return jax.eval_shape(self.init_state)

  def train_step(self, state, batch: dict, step: int):
    del step  # one phase: the same compiled step throughout
    return self._step(state, batch)

  def predict(self, state, inputs: dict):
    """The network applied to whole-image inputs (a dict like a batch, without targets)."""
    params = state.ema_params if state.ema_params is not None else state.params
    return self._apply(params, *steps.model_inputs(steps.global_replicated(inputs, self.mesh)))
