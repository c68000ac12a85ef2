"""`python -m jaxcar.training.plot WORKDIR OUT.png [--reference="29.074:DACAR3 release"]`: learning curve.

Training loss (log scale) and validation PSNR against steps, from the run's metrics.jsonl, with the
JPEG baseline the validation measured and optional reference lines.
"""

import json
from pathlib import Path

from absl import flags

from matplotlib.figure import Figure  # drawn without pyplot, so no backend is chosen for the process

from jaxcar import cli
from jaxcar.training import writers

FLAGS = flags.FLAGS


def read_metrics(workdir) -> list[dict]:
  """Records of metrics.jsonl; a resumed run may repeat steps, the later record wins."""
  latest = {}
  for line in (Path(workdir) / writers.METRICS_FILE).read_text().splitlines():
    record = json.loads(line)
    key = (record["step"], "validation/psnr" in record)
    latest[key] = record
  return [latest[k] for k in sorted(latest)]


def plot(workdir, output, references: dict[float, str] = None):
  records = read_metrics(workdir)
  train = [(r["step"], r["loss"]) for r in records if "loss" in r]
  valid = [(r["step"], r["validation/psnr"], r["validation/psnr_jpeg"]) for r in records if "validation/psnr" in r]
  figure = Figure(figsize=(11, 4))
  loss_axis, psnr_axis = figure.subplots(1, 2)
  loss_axis.plot(*zip(*train))
  scale = "log" if min(loss for _, loss in train) > 0 else "linear"  # log_mse losses are negative
  loss_axis.set(xlabel="step", ylabel="training loss", yscale=scale, title="training loss")
  if valid:
    steps, psnr, jpeg = zip(*valid)
    psnr_axis.plot(steps, psnr, "o-", label="restored")
    psnr_axis.axhline(jpeg[-1], color="grey", linestyle="--", label=f"JPEG ({jpeg[-1]:.3f} dB)")
  for value, label in (references or {}).items():
    psnr_axis.axhline(value, color="green", linestyle=":", label=f"{label} ({value:.3f} dB)")
  psnr_axis.set(xlabel="step", ylabel="PSNR (dB)", title="validation PSNR")
  psnr_axis.legend()
  figure.tight_layout()
  figure.savefig(output, dpi=100)


def main(argv):
  if len(argv) != 3:
    raise cli.UsageError("usage: python -m jaxcar.training.plot WORKDIR OUT.png [--reference=VALUE:LABEL ...]")
  references = {}
  for reference in FLAGS.reference:
    value, _, label = reference.partition(":")
    references[float(value)] = label or "reference"
  plot(argv[1], argv[2], references)


def define_flags() -> None:
  flags.DEFINE_multi_string("reference", [], "VALUE:LABEL, a horizontal line on the PSNR plot (repeatable)")


if __name__ == "__main__":
  cli.run(main, define_flags)
