"""`python -m jaxcar.zoo.publish`: turn a finished training run into a shipped model (maintainers).

    python -m jaxcar.zoo.publish --workdir=../runs/zoo_color --name=color-v1 --aliases=color \
        --description="..." --train_command="python -m jaxcar.train --config=zoo_color --workdir=..." \
        --cpu_hours=3.1 --commit=934173b --evaluations=eval/color/live1_color/summary.json,...

Writes `jaxcar/zoo/NAME.safetensors` (the run's EMA parameters, flat `/`-joined Flax names, as
`jaxcar.export` writes them) and `NAME.json`: the run's config, the weights' SHA-256, how it was trained
and the scores of each `jaxcar.evaluate` summary given.
"""

import hashlib
import json
from pathlib import Path

from absl import flags
import numpy as np

from jaxcar import cli, export, zoo
from jaxcar.training import checkpoint

FLAGS = flags.FLAGS


def scores(summary_files: list[str]) -> tuple[dict, dict]:
  """({dataset: {quality: {"jpeg": {...}, "model": {...}}}}, {dataset: how it was evaluated}) from
  evaluate's summary.json files."""
  result, settings = {}, {}
  for path in summary_files:
    summary = json.loads(Path(path).read_text())
    if summary.get("bucket") != 0:
      raise ValueError(f"{path}: evaluate with --bucket=0 (the published protocol) before publishing")
    result.setdefault(summary["dataset"], {}).update(
        {str(q): {"jpeg": entry["jpeg"], "model": entry["model"]} for q, entry in summary["qualities"].items()})
    settings[summary["dataset"]] = {key: summary.get(key) for key in ("protocol", "ssim_window", "self_ensemble")}
  return result, settings


def main(argv):
  del argv
  config = checkpoint.read_config(FLAGS.workdir)
  params = checkpoint.load_params(FLAGS.workdir)
  step = checkpoint.latest_step(FLAGS.workdir)
  output_dir = zoo.FOLDER
  weights = output_dir / f"{FLAGS.name}.safetensors"
  export.write_safetensors(params, weights)
  weights.chmod(0o644)
  data = weights.read_bytes()
  manifest = {
      "name": FLAGS.name,
      "aliases": FLAGS.aliases,
      "description": FLAGS.description,
      "file": weights.name,
      "sha256": hashlib.sha256(data).hexdigest(),
      "bytes": len(data),
      "parameters": int(sum(np.size(leaf) for leaf in export.flat_params(params).values())),
      "config": config.to_dict(),
      "training": {"command": FLAGS.train_command, "steps": int(step),
                   "patches": int(step) * int(config.batch_size), "data": config.data.source,
                   "validation": config.data.validation, "cpu_hours": FLAGS.cpu_hours,
                   "commit": FLAGS.commit, "host": FLAGS.host},
  }
  manifest["scores"], manifest["evaluated_with"] = scores(FLAGS.evaluations)
  (output_dir / f"{FLAGS.name}.json").write_text(json.dumps(manifest, indent=1) + "\n")
  zoo.manifests.cache_clear()
  zoo.load(FLAGS.name)  # and everything written passes the checks users' loads make
  print(f"wrote {weights} and its manifest")


def define_flags() -> None:
  flags.DEFINE_string("workdir", None, "The finished training run.")
  flags.DEFINE_string("name", None, "Versioned name, e.g. color-v1.")
  flags.DEFINE_list("aliases", [], "Short names that point at this version, e.g. color.")
  flags.DEFINE_string("description", "", "One line: what the model restores.")
  flags.DEFINE_string("train_command", "", "The command that trained it.")
  flags.DEFINE_float("cpu_hours", None, "CPU time the training took (main and loader processes).")
  flags.DEFINE_string("commit", "", "The jaxcar commit the run was trained with.")
  flags.DEFINE_string("host", "", "Where it was trained, e.g. '2-core AMD EPYC (Zen 4), CPU only'.")
  flags.DEFINE_list("evaluations", [], "jaxcar.evaluate summary.json files to record as scores.")
  flags.mark_flags_as_required(["workdir", "name", "cpu_hours"])


if __name__ == "__main__":
  cli.run(main, define_flags)
