"""Timing, peak-throughput and reporting helpers shared by the benchmarks.

The machine these run on is usually shared and noisy, so every comparison is *interleaved*: each round
runs every contender once, in rotating order; rates are medians over rounds and a ratio is the median
of the per-round ratios. Two contenders in one round see the same background load, which makes their
ratio far steadier than either absolute number.
"""

import datetime
import json
import os
import platform
import shlex
import sys
import threading
import time
from pathlib import Path
from typing import Callable

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"  # --record: NAME.md (and NAME.json), the latest run


def interleaved(contenders: dict[str, Callable[[], object]], repeats: int, warmup: int = 1,
                statistic: Callable = np.median) -> dict[str, float]:
  """Seconds per call of each contender (median over rounds), timed in rotating round-robin order."""
  return {name: float(statistic(t)) for name, t in interleaved_rounds(contenders, repeats, warmup).items()}


def interleaved_rounds(contenders: dict[str, Callable[[], object]], repeats: int,
                       warmup: int = 1) -> dict[str, np.ndarray]:
  """Seconds of every call, per contender, one per round; each round runs every contender once, the
  starting contender rotating from round to round."""
  names = list(contenders)
  for name in names:
    for _ in range(warmup):
      contenders[name]()
  times = {name: [] for name in names}
  for round_index in range(repeats):
    shift = round_index % len(names)
    for name in names[shift:] + names[:shift]:
      start = time.perf_counter()
      contenders[name]()
      times[name].append(time.perf_counter() - start)
  return {name: np.asarray(t) for name, t in times.items()}


def speedup(ours: np.ndarray, theirs: np.ndarray) -> str:
  """`theirs / ours` per round: the median and, in brackets, the middle half of the rounds.

  A ratio taken within one round sees one background load, so it is far steadier than a ratio of two
  medians on a machine whose speed drifts (seen here: the same oneDNN kernel at 3.5 or 13.5 ms from one
  second to the next). The bracket shows how much the rounds still disagree.
  """
  ratios = np.asarray(theirs) / np.asarray(ours)
  low, mid, high = np.percentile(ratios, [25, 50, 75])
  return f"**{mid:.2f}x** ({low:.2f}-{high:.2f})"


def matmul_calls(dtype: str, size: int = 2048) -> tuple[dict[str, Callable[[], object]], float]:
  """JAX's and PyTorch's square matmul in `dtype` as contenders, and its FLOP count.

  bfloat16 inputs accumulate in float32 (what both frameworks' convolutions do), so the peak is the
  one a bf16 training step could at best approach. It is the denominator of the reported MFU, so take
  the fastest call, not the median: on a loaded machine a median peak understates the hardware.
  """
  import jax
  import jax.numpy as jnp
  import torch

  a = jnp.ones((size, size), jnp.dtype(dtype))
  jax_mm = jax.jit(lambda x, y: jnp.matmul(x, y, preferred_element_type=jnp.float32))
  t = torch.ones(size, size, dtype=getattr(torch, dtype))
  calls = {"matmul jax": lambda: jax_mm(a, a).block_until_ready(), "matmul torch": lambda: torch.mm(t, t)}
  return calls, 2.0 * size ** 3


class PeakMemory:
  """Peak resident memory above the starting level while the block runs (sampled from /proc).

  On CPU, JAX has no allocator statistics, so resident set size is the one measure both frameworks
  share. Sampling every few milliseconds can miss a very short spike; it does not miss the large,
  long-lived activations that dominate a 24 MP forward pass.
  """

  def __init__(self, interval: float = 0.005):
    self.interval = interval
    self.peak_bytes = 0

  def __enter__(self):
    self._baseline = _resident_bytes()
    self._peak = self._baseline
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._sample, daemon=True)
    self._thread.start()
    return self

  def _sample(self):
    while not self._stop.wait(self.interval):
      self._peak = max(self._peak, _resident_bytes())

  def __exit__(self, *exc):
    self._stop.set()
    self._thread.join()
    self.peak_bytes = max(self._peak, _resident_bytes()) - self._baseline


def _resident_bytes() -> int:
  try:
    with open("/proc/self/statm") as statm:
      return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
  except OSError:  # not Linux: fall back to the lifetime peak, coarser but never wrong by excess
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def cpu_count() -> int:
  """Cores this process may run on (its affinity mask, not the host's total): PyTorch's thread count."""
  try:
    return len(os.sched_getaffinity(0))
  except AttributeError:
    return os.cpu_count() or 1


def markdown_table(headers: list[str], rows: list[list]) -> str:
  lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
  lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
  return "\n".join(lines)


def cpu_model() -> str:
  try:
    with open("/proc/cpuinfo") as info:
      return next(line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
  except (OSError, StopIteration):
    return platform.processor() or platform.machine()


def machine() -> str:
  import jax
  import torch
  from jaxcar.ops import conv
  return (f"{cpu_model()}, {cpu_count()} cores, jax {jax.__version__} "
          f"({jax.default_backend()}), torch {torch.__version__} ({torch.get_num_threads()} threads), "
          f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}, JAX convolutions: "
          f"{'oneDNN' if conv.use_onednn() else 'XLA'}")


def command_line() -> str:
  """The command that produced a result, as a user would retype it."""
  if Path(sys.argv[0]).name == "__main__.py":
    return "python -m benchmarks " + shlex.join(sys.argv[1:])
  return shlex.join(sys.argv)


def report(name: str, title: str, table: str, record: bool, raw: dict | None = None,
           results: Path = RESULTS) -> str:
  """Prints the table with its provenance; with `record`, writes the same text to results/NAME.md and
  `raw` (the numbers behind the table, with the same provenance) to results/NAME.json."""
  stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
  command, described = command_line(), machine()
  text = f"\n#### {title} ({stamp})\n\n`{command}` on {described}\n\n{table}\n"
  print(text, flush=True)
  if record:
    save(name, text, {"title": title, "utc": stamp, "command": command, "machine": described, **(raw or {})},
         results)
  return text


def save(name: str, text: str, raw: dict | None = None, results: Path = RESULTS) -> Path:
  """Writes `text` to results/NAME.md, replacing the previous result, and `raw`, if given, to NAME.json."""
  results.mkdir(parents=True, exist_ok=True)
  path = results / f"{name}.md"
  path.write_text(text.lstrip("\n"))
  if raw is not None:
    path.with_suffix(".json").write_text(json.dumps(raw, indent=1) + "\n")
  print(f"recorded in {path}", flush=True)
  return path
