"""Issue 14 (reliability), training side: bad input is one actionable line or a counted, logged skip;
never a traceback from deep inside, never lost work."""

import errno
import itertools
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from jaxcar import cli, configs, evaluate
from jaxcar.data import sources
from jaxcar.training import checkpoint, config_checks, loop, validation, writers

ROOT = Path(__file__).resolve().parents[1]


def tiny(images, extra=()):
  overrides = [f"data.source={images}", f"data.validation={images}", "data.num_workers=0", "batch_size=8",
               "data.patch_size=16", "num_steps=2", "log_every=1", "eval_every=1000", "checkpoint_every=1"]
  return cli.load_config("dacar4:small", overrides + list(extra))


@pytest.fixture(scope="module")
def trained(images, tmp_path_factory):
  """A workdir after 2 steps: checkpoints at steps 1 and 2, metrics rows 1 and 2. Copy before changing."""
  workdir = tmp_path_factory.mktemp("trained")
  loop.train_and_evaluate(tiny(images), workdir)
  assert checkpoint.latest_step(workdir) == 2
  return workdir


def copy_of(trained, tmp_path) -> Path:
  workdir = tmp_path / "run"
  shutil.copytree(trained, workdir)
  (workdir / loop.LOCK_FILE).unlink(missing_ok=True)
  return workdir


def metric_steps(workdir) -> list[int]:
  rows = [json.loads(line) for line in (workdir / writers.METRICS_FILE).read_text().splitlines()]
  return [row["step"] for row in rows if "loss" in row]


# --- item 3: a corrupt latest checkpoint ---------------------------------------------------------------

def test_corrupt_latest_checkpoint_falls_back_to_the_previous_one(trained, images, tmp_path, caplog):
  """Issue 14, item 3: a corrupt latest checkpoint blocks resume. Now: the newest intact one is used,
  with one warning line, and the damaged one is kept aside in checkpoints_corrupt/<step>."""
  workdir = copy_of(trained, tmp_path)
  biggest = max((p for p in (workdir / "checkpoints" / "2").rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
  garbage = os.urandom(biggest.stat().st_size)
  biggest.write_bytes(garbage)
  with caplog.at_level(logging.WARNING):
    loop.train_and_evaluate(tiny(images, ["num_steps=3"]), workdir)
  warnings = [r.getMessage() for r in caplog.records if "damaged" in r.getMessage()]
  assert len(warnings) == 1 and "\n" not in warnings[0] and "step 2" in warnings[0], warnings
  aside = workdir / checkpoint.CORRUPT_DIR / "2"
  assert (aside / biggest.relative_to(workdir / "checkpoints" / "2")).read_bytes() == garbage  # kept, not deleted
  assert checkpoint.latest_step(workdir) == 3
  assert metric_steps(workdir) == [1, 2, 3]


@pytest.fixture(scope="module")
def abstract_state(images):
  config = tiny(images, ["num_steps=3"])
  trainer = loop.make_trainer(config, loop.steps.make_mesh(loop.mesh_devices(config)))
  return config, trainer.abstract_state()


def test_any_damaged_file_of_the_latest_checkpoint_is_a_fallback_not_an_error(trained, abstract_state, tmp_path):
  """Issue 14, item 3: corrupt = any file of the step's folder truncated or garbage. Each one either
  still restores (a file the restore does not read) or makes resume fall back to step 1, the damaged
  step moved aside; never an exception."""
  config, abstract = abstract_state
  files = sorted(p.relative_to(trained) for p in (trained / "checkpoints" / "2").rglob("*") if p.is_file())
  fell_back = []
  for index, (name, damage) in enumerate(itertools.product(files, ("truncated", "garbage"))):
    workdir = tmp_path / f"run{index}"
    shutil.copytree(trained / "checkpoints", workdir / "checkpoints")
    content = (workdir / name).read_bytes()
    (workdir / name).write_bytes(content[:len(content) // 2] if damage == "truncated" else os.urandom(len(content)))
    mngr = checkpoint.manager(workdir, config)
    try:
      state, step = checkpoint.resume(mngr, abstract, loop._train_iterator(config))
    finally:
      mngr.close()
    assert state is not None and step in (1, 2), (name, damage)
    if step == 1:
      fell_back.append(name)
      assert (workdir / checkpoint.CORRUPT_DIR / "2").is_dir() and not (workdir / "checkpoints" / "2").exists()
    shutil.rmtree(workdir)
  assert any("ocdbt" in str(name) for name in fell_back), fell_back  # the arrays themselves


def test_checkpoint_of_another_config_is_still_a_mismatch_not_a_fallback(trained, images, tmp_path):
  """Issue 14, item 3: a CheckpointMismatch caused by a different config stays the one-line error, and
  the checkpoint stays where it is."""
  workdir = copy_of(trained, tmp_path)
  other = cli.load_config("dacar3:small", [f"data.source={images}", f"data.validation={images}",
                                            "data.num_workers=0", "batch_size=8", "data.patch_size=16"])
  trainer = loop.make_trainer(other, loop.steps.make_mesh(loop.mesh_devices(other)))
  mngr = checkpoint.manager(workdir, other)
  try:
    with pytest.raises(checkpoint.CheckpointMismatch, match="fresh --workdir") as error:
      checkpoint.resume(mngr, trainer.abstract_state(), loop._train_iterator(other))
  finally:
    mngr.close()
  assert "\n" not in str(error.value)
  assert (workdir / "checkpoints" / "2").is_dir() and not (workdir / checkpoint.CORRUPT_DIR).exists()


# --- item 5: two runs on one workdir -------------------------------------------------------------------

HOLDER = """
import sys, time
from jaxcar.training import loop
loop.lock_workdir(sys.argv[1])
print("locked", flush=True)
time.sleep(600)
"""


def test_second_run_on_a_locked_workdir_is_refused_and_a_dead_holder_does_not_block(images, tmp_path):
  """Issue 14, item 5: two runs on one workdir at once both ran. Now the second stops with one line
  naming the holder (pid, host, since when); once the holder is dead (even SIGKILLed) a run goes on."""
  workdir = tmp_path / "run"
  workdir.mkdir()
  holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(workdir)], cwd=ROOT, stdout=subprocess.PIPE,
                            text=True)
  try:
    assert holder.stdout.readline().strip() == "locked"
    with pytest.raises(loop.WorkdirBusy) as busy:
      loop.train_and_evaluate(tiny(images, ["num_steps=1"]), workdir)
    message = str(busy.value)
    assert "\n" not in message and f"pid {holder.pid} on host {socket.gethostname()} since " in message, message
    assert sorted(p.name for p in workdir.iterdir()) == [loop.LOCK_FILE]  # the refused run wrote nothing
  finally:
    holder.send_signal(signal.SIGKILL)
    holder.wait()
  # The dead holder's lock file is still there, naming it; the kernel released its lock.
  assert f"pid {holder.pid}" in (workdir / loop.LOCK_FILE).read_text()
  loop.train_and_evaluate(tiny(images, ["num_steps=1"]), workdir)
  assert checkpoint.latest_step(workdir) == 1
  lock = loop.lock_workdir(workdir)  # and the finished run released its own
  loop.unlock_workdir(lock)


def test_lock_is_per_run_in_one_process_and_skipped_on_gcs(images, tmp_path, capsys):
  """Issue 14, item 5: the lock holds against a second run in the same process too; gs:// workdirs
  (no flock there) are not locked, with a note."""
  lock = loop.lock_workdir(tmp_path)
  try:
    with pytest.raises(loop.WorkdirBusy, match=f"pid {os.getpid()} on host"):
      loop.train_and_evaluate(tiny(images), tmp_path)
  finally:
    loop.unlock_workdir(lock)
  assert loop.lock_workdir("gs://bucket/run") is None
  assert "not locked" in capsys.readouterr().out


# --- item 6: metrics rows repeated after a resume ------------------------------------------------------

def test_resumed_run_does_not_repeat_metrics_rows(trained, images, tmp_path):
  """Issue 14, item 6: metrics.jsonl repeated the rows between the checkpoint and the kill. Now the rows
  past the resumed step (and a row cut short by the kill) are dropped when resuming."""
  workdir = copy_of(trained, tmp_path)
  shutil.rmtree(workdir / "checkpoints" / "2")  # killed after logging step 2, before its checkpoint
  with (workdir / writers.METRICS_FILE).open("a") as f:
    f.write('{"step": 3, "lo')  # and in the middle of a row
  loop.train_and_evaluate(tiny(images, ["num_steps=3"]), workdir)
  assert metric_steps(workdir) == [1, 2, 3]


def test_drop_rows_after_rewrites_atomically(tmp_path):
  """Issue 14, item 6: rows with step <= the resumed step stay, in order; nothing else is left behind."""
  path = tmp_path / writers.METRICS_FILE
  path.write_text("".join(json.dumps({"step": s, "loss": s / 10}) + "\n" for s in (1, 2, 3, 4)))
  assert writers.drop_rows_after(path, 2) == 2
  assert [json.loads(line)["step"] for line in path.read_text().splitlines()] == [1, 2]
  assert sorted(p.name for p in tmp_path.iterdir()) == [writers.METRICS_FILE]


# --- item 10: numbers validated before the expensive work ----------------------------------------------

BAD_VALUES = [
    ("log_every=0", "log_every"), ("checkpoint_every=0", "checkpoint_every"), ("eval_every=-1", "eval_every"),
    ("batch_size=0", "batch_size"), ("num_steps=0", "num_steps"), ("keep_checkpoints=0", "keep_checkpoints"),
    ("data.patch_size=0", "data.patch_size"), ("data.quality_range=(50,10)", "data.quality_range"),
    ("data.quality_range=(0,10)", "data.quality_range"), ("data.validation_quality=101", "data.validation_quality"),
    ("data.double_fraction=1.5", "data.double_fraction"), ("data.color=cmyk", "data.color"),
    ("data.subsampling=4:1:1", "data.subsampling"), ("data.value_range=zero_ten", "data.value_range"),
    ("data.num_workers=-1", "data.num_workers"), ("optimizer.learning_rate=0", "optimizer.learning_rate"),
    ("optimizer.name=adamm", "optimizer.name"), ("optimizer.schedule=linear", "optimizer.schedule"),
    ("loss=huber", "loss"), ("ema_decay=1.0", "ema_decay"), ("cpu_conv=gpu", "cpu_conv"),
]


@pytest.mark.parametrize("override,field", BAD_VALUES, ids=[b[0] for b in BAD_VALUES])
def test_bad_config_values_are_one_line_before_anything_is_written(override, field, images, tmp_path):
  """Issue 14, item 10: log_every=0 / checkpoint_every=0 gave a ZeroDivisionError after the first
  compiled step, batch_size=0 an obscure error after 33 s with files left behind. Now each bad value is
  one ValueError line naming the field and what is allowed, before the workdir exists."""
  workdir = tmp_path / "run"
  with pytest.raises(ValueError) as error:
    loop.train_and_evaluate(tiny(images, [override]), workdir)
  message = str(error.value)
  assert "\n" not in message and f"config.{field}=" in message and "must be" in message, message
  assert not workdir.exists()


FREE_FORM = {"data.source", "data.cache_dir", "data.validation", "init_from"}  # any string is a name


def _leaves(config, prefix=""):
  for name, value in config.items():
    if name == "options":
      continue  # the network's own options, checked by the network
    if hasattr(value, "items"):
      yield from _leaves(value, f"{prefix}{name}.")
    else:
      yield f"{prefix}{name}", value


CHECKABLE = [name for name, value in _leaves(configs.load(configs.resolve("dacar4")))
             if not isinstance(value, bool) and name not in FREE_FORM]  # True/False cannot be wrong


@pytest.mark.parametrize("field", CHECKABLE)
def test_every_base_config_field_is_checked(field):
  """Issue 14, item 10: every field of configs/base.py is validated (a nonsense value of its own type
  is refused, naming the field), apart from free-form names and flags that cannot be wrong."""
  config = configs.load(configs.resolve("dacar4"))
  *parents, name = field.split(".")
  owner = config
  for parent in parents:
    owner = owner[parent]
  nonsense = {int: -5, float: -5.0, str: "nonsense", tuple: (0,)}[type(owner[name])]
  owner[name] = nonsense
  with pytest.raises(config_checks.ConfigValueError, match=f"config.{field}="):
    config_checks.check(config)


def test_every_shipped_config_and_variant_passes_the_checks():
  """Issue 14, item 10: the checks refuse nothing a shipped config (or one of its variants) sets."""
  for name in configs.available():
    for variant in [None, *configs.variants(name)]:
      config_checks.check(configs.load(configs.resolve(name if variant is None else f"{name}:{variant}")))


@pytest.mark.parametrize("flag", ["--limit=-1", "--bucket=-1"])
def test_evaluate_numeric_flags_have_bounds(flag):
  """Issue 14, item 10: `evaluate --limit=-1` silently dropped the last image. Now a negative --limit or
  --bucket is a one-line flag error."""
  result = subprocess.run([sys.executable, "-m", "jaxcar.evaluate", "--dataset=embedded:validation", "--model=grey",
                           flag], cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert result.returncode != 0
  assert result.stderr.strip().splitlines() == [result.stderr.strip()], result.stderr
  assert flag.split("=")[0] in result.stderr and "non-negative" in result.stderr, result.stderr


# --- item 11: a .txt list with a missing path; a full disk ---------------------------------------------

def test_txt_list_with_a_missing_file_is_skipped_and_counted_everywhere(images, tmp_path, caplog):
  """Issue 14, item 11: a .txt list with one missing path stopped training but was skipped by evaluate.
  Now it is skipped and counted everywhere (logged once), an error only when nothing is left."""
  listing = tmp_path / "train.txt"
  listing.write_text("".join(f"{p}\n" for p in sorted(images.glob("*.png"))) + "gone.png\n")
  with caplog.at_level(logging.WARNING):
    found = sources.list_images(listing)
    assert sources.list_images(listing) == found
  assert found == sorted(str(p) for p in images.glob("*.png"))
  counts = [r.getMessage() for r in caplog.records if "skipped 1 file(s)" in r.getMessage()]
  assert len(counts) == 1 and str(listing) in counts[0], counts
  config = tiny(images, [f"data.source={listing}", f"data.validation={listing}"])
  assert next(loop._train_iterator(config))["inputs"].shape[0] == 8  # training's pipeline
  assert len(validation.load(config.data)) == 4                      # training's validation
  assert sources.list_images(evaluate.resolve_dataset(str(listing))) == found  # evaluate
  (tmp_path / "none.txt").write_text("gone.png\nalso_gone.png\n")
  with pytest.raises(FileNotFoundError, match="none of its 2 files exists"):
    sources.list_images(tmp_path / "none.txt")


def no_space() -> OSError:
  return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_full_disk_during_a_checkpoint_is_one_line_and_keeps_the_last_good_one(trained, images, tmp_path,
                                                                                 monkeypatch, caplog):
  """Issue 14, item 11: a full disk gave four thread tracebacks before the one-line cause. Now a failed
  asynchronous save ends the run with one line naming the folder, the cause and the checkpoint kept;
  Orbax's per-thread tracebacks are not shown (INFO: --verbosity shows them); the rerun resumes."""
  from orbax.checkpoint._src.serialization import serialization  # pylint: disable=import-outside-toplevel

  async def disk_full(*args, **kwargs):
    raise no_space()

  workdir = copy_of(trained, tmp_path)
  monkeypatch.setattr(serialization, "async_serialize_from_host", disk_full)
  with caplog.at_level(logging.INFO), pytest.raises(loop.RunWriteFailed) as failure:
    loop.train_and_evaluate(tiny(images, ["num_steps=4"]), workdir)
  message = str(failure.value)
  assert "\n" not in message and "No space left on device" in message, message
  assert str(workdir / "checkpoints") in message and "step 2" in message, message
  assert not [r for r in caplog.records if r.levelno >= logging.ERROR and r.exc_info]
  monkeypatch.undo()
  assert checkpoint.latest_step(workdir) == 2
  loop.train_and_evaluate(tiny(images, ["num_steps=4"]), workdir)
  assert checkpoint.latest_step(workdir) == 4


FULL_DISK_TENSORBOARD = """
import errno, os, runpy, sys
from tensorboardX import record_writer

flush, flushes = record_writer.RecordWriter.flush, []

def full_disk_after_the_first_flush(self):
  flushes.append(1)
  if len(flushes) > 1:
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
  flush(self)

record_writer.RecordWriter.flush = full_disk_after_the_first_flush
sys.argv = ["jaxcar.train", *sys.argv[1:]]
runpy.run_module("jaxcar.train", run_name="__main__")
"""


def test_full_disk_during_a_tensorboard_write_is_one_line(images, tmp_path):
  """Issue 14, item 11: TensorBoard's events are written by tensorboardX's thread and flushed again at
  exit, so a full disk printed its error as tracebacks three times. Now: one line naming the folder,
  exit code 1, the checkpoint kept, nothing else on stderr. A process of its own, for the exit hooks."""
  workdir = tmp_path / "run"
  overrides = [f"--config.{o}" for o in (f"data.source={images}", f"data.validation={images}",
                                         "data.num_workers=0", "batch_size=8", "data.patch_size=16",
                                         "num_steps=3", "log_every=2", "eval_every=1000", "checkpoint_every=1")]
  env = {key: value for key, value in os.environ.items() if key != "XLA_FLAGS"}
  done = subprocess.run([sys.executable, "-c", FULL_DISK_TENSORBOARD, "--config=dacar4:small",
                         f"--workdir={workdir}", *overrides], env=env, capture_output=True, text=True,
                        timeout=600, check=False)
  lines = [line for line in done.stderr.splitlines() if line.strip()]
  assert done.returncode == 1 and len(lines) == 1, done.stderr[-3000:]
  assert str(workdir / writers.TENSORBOARD_DIR) in lines[0] and "No space left on device" in lines[0], lines
  step = checkpoint.latest_step(workdir)
  assert step and f"step {step}" in lines[0], lines


def test_full_disk_during_a_metrics_write_is_one_line_and_keeps_the_last_good_checkpoint(trained, images,
                                                                                          tmp_path, monkeypatch):
  """Issue 14, item 11: a failed metrics write (ENOSPC) ends the run with one line naming metrics.jsonl
  and the cause, after the checkpoint in flight is finished, so it is kept."""
  workdir = copy_of(trained, tmp_path)
  write = writers._write_line

  def full_from_step_4(path, line):
    if json.loads(line)["step"] >= 4:
      raise no_space()
    write(path, line)

  monkeypatch.setattr(writers, "_write_line", full_from_step_4)
  with pytest.raises(loop.RunWriteFailed) as failure:
    loop.train_and_evaluate(tiny(images, ["num_steps=5"]), workdir)
  message = str(failure.value)
  assert "\n" not in message and str(workdir / writers.METRICS_FILE) in message, message
  assert "No space left on device" in message and "step 3" in message, message
  assert checkpoint.latest_step(workdir) == 3
  assert checkpoint.load_params(workdir)
