"""Every config loads (with its variants), names resolve, and each kind of mistake is a one-line error."""

from pathlib import Path
import subprocess
import sys
import warnings

import pytest

import jaxcar.configs
from jaxcar import cli, configs, models
from jaxcar.training import optim

NETWORK_CONFIGS = ["arcnn", "dacar3", "dacar4", "dacar5", "sacar6", "carcnn", "restorer", "nogan", "qcn", "qgcn"]


@pytest.mark.parametrize("name", NETWORK_CONFIGS)
def test_every_config_and_its_small_variant_load(name):
  full = cli.load_config(name)
  small = cli.load_config(f"{name}:small")
  assert full.model.name in models.names()
  assert set(full.model.options) == set(models.options(full.model.name))  # every option overridable
  assert small.num_steps < full.num_steps and small.data.source == "embedded"


def test_recipes_carry_the_seed_values():
  dacar = cli.load_config("dacar3")
  assert (dacar.optimizer.name, dacar.optimizer.learning_rate, dacar.batch_size) == ("adamax", 2e-3, 64)
  assert dacar.num_steps == 60 * 8156 and dacar.optimizer.decay_start == 19 * 8156
  qcn = cli.load_config("qcn")
  assert (qcn.loss, qcn.data.quality_range, qcn.data.value_range) == ("l1", (1, 60), "minus_one_one")
  assert cli.load_config("qgcn").data.color == "grey" and cli.load_config("qgcn:rgb").data.color == "rgb"
  assert cli.load_config("qcn:grey").data.quality_range == (1, 100)
  assert cli.load_config("restorer").optimizer.schedule == "restorer_halving"
  nogan = cli.load_config("nogan")
  assert nogan.nogan.fakes == "generator" and nogan.nogan.adversarial_learning_rate == 1e-4
  # Each full recipe trains on its paper's data by name (`python -m jaxcar.data.fetch NAME`); CNN-CAR's
  # was never published, so it keeps the embedded photos.
  data = {name: cli.load_config(name).data.source for name in NETWORK_CONFIGS}
  assert data == {"qcn": "div2k", "qgcn": "div2k", "arcnn": "div2k", "nogan": "div2k", "dacar3": "bsds500",
                  "dacar4": "bsds500", "dacar5": "bsds500", "sacar6": "bsds500", "restorer": "div2k,bsds500",
                  "carcnn": "embedded"}


def test_a_path_works_and_overrides_are_typed():
  path = str(configs.CONFIG_DIR / "qcn.py")
  config = cli.load_config(f"{path}:small", ["batch_size=4", "model.options.num_blocks=2",
                                               "optimizer.learning_rate=0.5"])
  assert (config.batch_size, config.model.options.num_blocks, config.optimizer.learning_rate) == (4, 2, 0.5)


def test_nogan_run_length_follows_overridden_phases():
  config = cli.load_config("nogan:small", ["nogan.generator_steps=3", "nogan.adversarial_steps=1"])
  assert config.num_steps == 3 + config.nogan.discriminator_steps + 1


@pytest.mark.parametrize("spec, overrides, message", [
    ("qcnn", [], "did you mean ['qcn'"),
    ("qcn:tiny", [], "unknown config variant(s) ['tiny']"),
    ("qcn", ["batch_sise=3"], "Did you mean ['batch_size']"),
    ("qcn", ["model.options.num_block=3"], "Did you mean ['num_blocks']"),
    ("qcn", ["batch_size=abc"], "invalid literal for int()"),
    ("/no/such/config.py", [], "not found"),
])
def test_mistakes_are_one_line_errors(spec, overrides, message):
  with pytest.raises(configs.ConfigError) as error:
    cli.load_config(spec, overrides)
  assert message in str(error.value) and "\n" not in str(error.value)


def test_dacar_epoch_schedule_in_steps():
  config = cli.load_config("dacar3")
  schedule = optim.schedule(config.optimizer, config.num_steps)
  first, every = config.optimizer.decay_start, config.optimizer.decay_steps
  expected = {0: 2e-3, first - 1: 2e-3, first: 2e-4, first + every - 1: 2e-4, first + every: 2e-5,
              first + 2 * every: 2e-6, config.num_steps - 1: 2e-6}
  for step, lr in expected.items():
    assert float(schedule(step)) == pytest.approx(lr, rel=1e-6), step


def test_restorer_halving_quirk():
  config = cli.load_config("restorer")
  schedule = optim.schedule(config.optimizer, config.num_steps)
  epoch = config.optimizer.decay_steps
  for k in (0, 1, 18, 19, 20, 21, 39, 40, 99):
    assert float(schedule(k * epoch)) == pytest.approx(5e-4 * 0.5 ** (k - k // 20), rel=1e-6), k


def test_configs_are_the_installed_jaxcar_configs_package(tmp_path):
  # Resolved through the package, not the repository's path, so an installed jaxcar finds them too.
  assert configs.CONFIG_DIR == Path(jaxcar.configs.__file__).resolve().parent
  assert set(NETWORK_CONFIGS) <= set(configs.available())
  own = tmp_path / "my_qcn.py"  # a user's config anywhere builds on the shipped ones
  own.write_text("from jaxcar.configs import qcn\n\ndef get_config(arg=None):\n"
                 "  config = qcn.get_config(arg)\n  config.batch_size = 3\n  return config\n")
  assert cli.load_config(f"{own}:small").batch_size == 3


def test_loading_a_config_warns_nothing():
  with warnings.catch_warnings():
    warnings.simplefilter("error")  # ml_collections' deprecated load_module() warned once per load
    cli.load_config("qcn:small", ["batch_size=4"])


def test_variants_are_listed_for_help():
  assert configs.variants("qcn") == ["grey", "rgb", "small"]
  assert configs.variants("dacar3") == ["small"]
  assert all("small" in configs.variants(name) for name in configs.available())


def test_train_help_needs_no_config_and_lists_configs(tmp_path):
  result = subprocess.run([sys.executable, "-m", "jaxcar.train", "--help"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
  assert result.returncode == 0, result.stderr
  lines = result.stdout.splitlines()
  for name in configs.available():
    row = next(line for line in lines if line.split()[:1] == [name])
    assert all(f":{variant}" in row for variant in configs.variants(name)), row
  assert "--print_config" in result.stdout and "--workdir" in result.stdout


def test_print_config_shows_the_fields_with_overrides(tmp_path):
  result = subprocess.run([sys.executable, "-m", "jaxcar.train", "--config=dacar3:small", "--print_config",
                           "--config.batch_size=5"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
  assert result.returncode == 0, result.stderr
  assert "batch_size: 5" in result.stdout and "quality_range" in result.stdout
  assert not list(tmp_path.iterdir())  # printed only: no workdir made
