"""Smoke runs of the benchmarks (tiny shapes, no timing assertions) and the pieces they rely on."""

import json
import re
import subprocess
import sys

import jax
import numpy as np
import pytest

from benchmarks import common, restore, step, torch_twins
from benchmarks import input as input_bench
from jaxcar import models
from jaxcar.ops import conv


def test_interleaved_runs_every_contender_in_rotation():
  calls = []
  seconds = common.interleaved({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, repeats=3,
                               warmup=1)
  assert set(seconds) == {"a", "b"}
  assert calls == ["a", "b", "a", "b", "b", "a", "a", "b"]


def test_speedup_is_the_median_of_per_round_ratios():
  ours = np.array([1.0, 2.0, 1.0, 4.0, 1.0])
  theirs = np.array([2.0, 2.0, 3.0, 4.0, 1.0])  # per round 2, 1, 3, 1, 1; the ratio of medians is 2.0
  assert common.speedup(ours, theirs) == "**1.00x** (1.00-2.00)"


def test_report_records_the_latest_table_with_its_command(tmp_path):
  (tmp_path / "demo.md").write_text("an older result\n")
  table = common.markdown_table(["x", "y"], [[1, 2]])
  common.report("demo", "Demo", table, record=True, raw={"rows": [[1, 2]]}, results=tmp_path)
  text = (tmp_path / "demo.md").read_text()
  assert text.startswith("#### Demo") and "| 1 | 2 |" in text and "`" in text and "older" not in text
  raw = json.loads((tmp_path / "demo.json").read_text())
  assert raw["rows"] == [[1, 2]] and raw["title"] == "Demo" and raw["command"]


def test_peak_memory_sees_a_large_allocation():
  with common.PeakMemory(interval=0.001) as peak:
    block = np.ones(64 * 2**20 // 8)  # 64 MiB, touched
    block.sum()
    del block
  assert peak.peak_bytes > 32 * 2**20


@pytest.mark.parametrize("name,options", [("arcnn", {"color": "grey"}), ("arcnn", {"color": "rgb"}),
                                          ("dacar3", {}), ("dacar5", {}), ("qcn", {"color": "grey", "num_blocks": 2}),
                                          ("edsr", {"color": "rgb", "num_blocks": 2})])
def test_torch_equivalents_have_the_same_parameters(name, options):
  params = models.init(models.create(name, **options), jax.random.key(0))["params"]
  jax_shapes = sorted(tuple(x.shape) for x in jax.tree_util.tree_leaves(params))
  torch_shapes = sorted(tuple(p.shape) for p in torch_twins.create(name, **options).parameters())
  assert models.param_count(params) == sum(np.prod(s) for s in torch_shapes)
  # conv weights differ only in layout (HWIO vs OIHW); compare sorted sizes, PReLU slopes are () vs (1,)
  assert sorted(np.prod(s) for s in jax_shapes) == sorted(np.prod(s) for s in torch_shapes)


def test_step_benchmark_smoke(tmp_path, capsys):
  step.main(["step", "--models=arcnn,qcn", "--num_blocks=1", "--dtypes=float32,bfloat16", "--batch_size=8",
             "--patch_size=16", "--repeats=1", "--peak_size=64"])
  out = capsys.readouterr().out
  assert out.count("| arcnn color=grey |") == 2 and "qcn color=grey num_blocks=1" in out
  assert re.search(r"\*\*\d+\.\d\dx\*\* \(\d+\.\d\d-\d+\.\d\d\) \|", out)  # a JAX / PyTorch ratio was computed


def test_restore_benchmark_smoke(capsys):
  restore.main(["restore", "--models=dacar3", "--sizes=24x16,40x48", "--max_whole_pixels=1000", "--tile=16",
                "--overlap=4", "--repeats=1"])
  out = capsys.readouterr().out
  assert "| dacar3 | float32 | 24x16 |" in out and "| dacar3 | float32 | 40x48 |" in out


def test_restore_rejects_a_malformed_size():
  with pytest.raises(ValueError, match="WIDTHxHEIGHT"):
    restore.parse_size("768by512")


def test_input_benchmark_smoke_with_training_input_wait(capsys):
  input_bench.main(["input", "--source=embedded", "--workers=0", "--seconds=0.5", "--warmup_batches=1",
                    "--batch_size=8", "--patch_size=32", "--train_config=dacar4:small", "--train_steps=20",
                    "--stages"])
  out = capsys.readouterr().out
  assert "| 0 |" in out and "| workers | input wait |" in out  # the loop's measurement: test_train.py
  assert "| whole batch (pipeline.TrainBatches[k]: all of the above) |" in out


def test_step_benchmark_takes_the_convolution_choice_as_a_flag(capsys):
  previous = conv.backend()
  try:
    step.main(["step", "--models=dacar3", "--dtypes=float32", "--batch_size=8", "--patch_size=16", "--repeats=1",
               "--peak_size=64", "--cpu_conv=xla"])
    assert conv.backend() == "xla"
  finally:
    conv.set_backend(previous)
  assert "JAX convolutions: XLA" in capsys.readouterr().out


def test_benchmarks_run_as_a_module_from_the_repository_root():
  root = common.RESULTS.parent.parent
  done = subprocess.run([sys.executable, "-m", "benchmarks", "step", "--help"], cwd=root, capture_output=True,
                        text=True, timeout=300, check=False)
  assert done.returncode == 0 and "--cpu_conv" in done.stdout + done.stderr, done.stderr[-2000:]
  done = subprocess.run([sys.executable, "-m", "benchmarks", "nope"], cwd=root, capture_output=True, text=True,
                        timeout=300, check=False)
  assert done.returncode != 0 and "usage: python -m benchmarks" in done.stderr
