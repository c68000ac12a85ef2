"""The seeds' training behaviours kept as options: a fresh Adam at each lr change (Image Restorer), the
best-validation parameters (CNN-CAR), a batch of 1 on a host with several devices (NoGAN)."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from PIL import Image

from jaxcar import cli
from jaxcar.configs import base
from jaxcar.training import checkpoint, loop, optim


def test_each_recipe_switches_on_only_its_seeds_behaviour():
  assert cli.load_config("restorer").optimizer.reset_at_decay
  assert cli.load_config("carcnn").keep_best
  assert cli.load_config("nogan").num_devices == 1 and cli.load_config("nogan:small").num_devices == 0
  for name in ("arcnn", "dacar3", "qcn", "qgcn"):
    config = cli.load_config(name)
    assert not config.optimizer.reset_at_decay and not config.keep_best and config.num_devices == 0, name


def _step_config(reset: bool):
  opt = base.get_config().optimizer
  opt.update(learning_rate=1e-2, schedule="step", decay_steps=3, decay_factor=0.5, reset_at_decay=reset)
  return opt


def _updates(tx, grads):
  params = {"w": jnp.zeros(4)}
  state, out = tx.init(params), []
  for grad in grads:
    update, state = tx.update({"w": grad}, state, params)
    out.append(np.asarray(update["w"]))
  return out


def test_reset_at_decay_is_a_fresh_adam_at_every_lr_change():
  grads = list(jax.random.normal(jax.random.key(0), (8, 4)))
  reset = _updates(optim.optimizer(_step_config(True), 8), grads)
  # By hand: a new optax.adam at each boundary (steps 3 and 6) with that stretch's lr.
  fresh = [*_updates(optax.adam(1e-2), grads[:3]), *_updates(optax.adam(5e-3), grads[3:6]),
           *_updates(optax.adam(2.5e-3), grads[6:])]
  np.testing.assert_allclose(reset, fresh, rtol=1e-6, atol=0)
  carried = _updates(optim.optimizer(_step_config(False), 8), grads)
  np.testing.assert_allclose(carried[:3], fresh[:3], rtol=1e-6, atol=0)
  assert not np.allclose(carried[3], fresh[3], rtol=1e-3)  # without the reset the moments carry over


def test_reset_at_decay_needs_a_piecewise_schedule():
  opt = _step_config(True)
  opt.schedule = "cosine"
  with pytest.raises(ValueError, match="reset_at_decay needs"):
    optim.optimizer(opt, 8)


def test_restorer_resets_at_each_of_its_halvings():
  opt = cli.load_config("restorer").optimizer
  halvings = optim.decay_boundaries(opt, 100 * opt.decay_steps)
  assert len(halvings) == 95 and 20 * opt.decay_steps not in halvings and 19 * opt.decay_steps in halvings


def _state(value: float):
  return {"step": jnp.int32(0), "params": {"w": jnp.full((2,), value)}, "ema_params": None}


def test_best_manager_keeps_the_highest_validation_psnr_across_a_resume(tmp_path):
  with checkpoint.best_manager(tmp_path) as best:
    for step, psnr in ((1, 20.0), (2, 23.0), (3, 21.0)):
      checkpoint.save_if_best(best, step, _state(step), psnr)
  with checkpoint.best_manager(tmp_path) as best:  # a resumed run re-validates step 2, then step 4 is worse
    checkpoint.save_if_best(best, 2, _state(99.0), 50.0)
    checkpoint.save_if_best(best, 4, _state(4.0), 22.9)
  assert checkpoint.best_step(tmp_path) == 2
  np.testing.assert_array_equal(checkpoint.load_params(tmp_path)["w"], [2.0, 2.0])


@pytest.fixture(scope="module")
def images(tmp_path_factory):
  folder = tmp_path_factory.mktemp("images")
  rng = np.random.default_rng(0)
  for i in range(2):
    Image.fromarray(rng.integers(0, 256, (32, 32, 3), np.uint8)).save(folder / f"{i}.png")
  return folder


def _tiny(name, images, extra):
  overrides = [f"data.source={images}", f"data.validation={images}", "data.num_workers=0", "data.patch_size=16",
               "log_every=1", "eval_every=1", "checkpoint_every=1"]
  return cli.load_config(f"{name}:small", overrides + extra)


def test_carcnn_run_keeps_its_best_validation_parameters(images, tmp_path):
  config = _tiny("carcnn", images, ["batch_size=8", "num_steps=4", "keep_best=True", "optimizer.learning_rate=0.05"])
  loop.train_and_evaluate(config, tmp_path)
  records = map(json.loads, (tmp_path / "metrics.jsonl").read_text().splitlines())
  scores = {r["step"]: r["validation/psnr"] for r in records if "validation/psnr" in r}
  assert sorted(scores) == [1, 2, 3, 4]
  assert checkpoint.best_step(tmp_path) == max(scores, key=scores.get)


def test_nogan_batch_of_one_trains_on_one_of_several_devices(images, tmp_path):
  assert jax.device_count() > 1, "the test setup simulates several CPU devices (conftest.py)"
  phases = ["nogan.generator_steps=1", "nogan.discriminator_steps=1", "nogan.adversarial_steps=1",
            "eval_every=3", "checkpoint_every=3"]  # one validation and one save: the run is about devices
  one = _tiny("nogan", images, ["batch_size=1", "num_devices=1", *phases])
  assert [d.id for d in loop.mesh_devices(one)] == [jax.devices()[0].id]
  assert np.isfinite(loop.train_and_evaluate(one, tmp_path / "one")["validation_psnr"])
  with pytest.raises(ValueError, match=f"multiple of the {jax.device_count()} devices.*num_devices"):
    loop.train_and_evaluate(_tiny("nogan", images, ["batch_size=1", "num_devices=0", *phases]), tmp_path / "all")
  with pytest.raises(ValueError, match="num_devices=99 must be"):
    loop.mesh_devices(_tiny("nogan", images, ["num_devices=99"]))
