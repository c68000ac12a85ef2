"""`python -m jaxcar.zoo [--markdown]`: the pretrained models shipped with jaxcar, their size and scores.

`--markdown` prints the scores tables README.md shows, from the shipped manifests: one per model a
short name points at; the earlier versions they were fine-tuned from are listed, not tabled.
"""

from absl import flags

from jaxcar import cli, zoo

FLAGS = flags.FLAGS


def describe(name: str, manifest: dict) -> str:
  aliases = ", ".join(manifest.get("aliases", ())) or "-"
  training = manifest["training"]
  lines = [f"{name} (alias: {aliases}): {manifest['description']}",
           f"  {manifest['parameters']:,} parameters, {manifest['bytes'] / 1e6:.1f} MB; trained "
           f"{training['steps']:,} steps ({training['cpu_hours']:.2f} CPU-hours): {training['command']}"]
  for dataset, by_quality in manifest.get("scores", {}).items():
    cells = [f"q{q} {s['model']['psnr']:.2f} ({s['model']['psnr'] - s['jpeg']['psnr']:+.2f})"
             for q, s in _by_quality(by_quality)]
    lines.append(f"  {dataset} PSNR (vs JPEG): " + ", ".join(cells))
  return "\n".join(lines)


def total_cpu_hours(name: str) -> float:
  """A model's training cost including the stages it was fine-tuned from (`config.init_from`)."""
  manifest = zoo.manifest(name)
  parent = manifest["config"].get("init_from", "")
  return manifest["training"]["cpu_hours"] + (total_cpu_hours(parent) if parent in zoo.names() else 0.0)


def stages(name: str) -> list[str]:
  """`name` and the shipped models it was fine-tuned from, oldest first."""
  parent = zoo.manifest(name)["config"].get("init_from", "")
  return (stages(parent) if parent in zoo.names() else []) + [zoo.resolve(name)]


def _by_quality(by_quality: dict) -> list:
  return sorted(by_quality.items(), key=lambda item: int(item[0]))


def markdown(name: str, manifest: dict) -> str:
  """One table per model: each dataset's PSNR / SSIM / PSNR-B, JPEG -> restored, at every quality."""
  training = manifest["training"]
  aliases = ", ".join(f"`{a}`" for a in manifest.get("aliases", ()))
  history = stages(name)
  commands = "; then ".join(f"`{zoo.manifest(stage)['training']['command']}`" for stage in history)
  steps = sum(zoo.manifest(stage)["training"]["steps"] for stage in history)
  lines = [f"**`{name}`** ({aliases}): {manifest['parameters']:,} parameters, {manifest['bytes'] / 1e6:.1f} MB, "
           f"{steps:,} steps of {training['patches'] // max(training['steps'], 1)} patches in {len(history)} "
           f"stage(s), {total_cpu_hours(name):.2f} CPU-hours on {training['host']}: {commands}", ""]
  datasets = list(manifest.get("scores", {}))
  header = "| q | " + " | ".join(f"{d} PSNR | SSIM | PSNR-B" for d in datasets) + " |"
  lines += [header, "|---" * (1 + 3 * len(datasets)) + "|"]
  qualities = sorted({int(q) for d in datasets for q in manifest["scores"][d]})
  for quality in qualities:
    cells = []
    for dataset in datasets:
      entry = manifest["scores"][dataset][str(quality)]
      jpeg, model = entry["jpeg"], entry["model"]
      cells += [f"{jpeg['psnr']:.2f} → **{model['psnr']:.2f}**", f"{jpeg['ssim']:.4f} → {model['ssim']:.4f}",
                f"{jpeg['psnr_b']:.2f} → {model['psnr_b']:.2f}"]
    lines.append(f"| {quality} | " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise cli.UsageError(f"unexpected arguments {argv[1:]}")
  if not zoo.manifests():
    raise cli.UsageError("no pretrained models are shipped with this installation")
  if FLAGS.markdown:
    current = sorted(set(zoo.aliases().values()))
    print("\n".join(markdown(name, zoo.manifest(name)) for name in current))
    earlier = [name for name in zoo.manifests() if name not in current]
    if earlier:
      print(f"Earlier versions, shipped as the starting points of later stages: {', '.join(earlier)} "
            f"(`python -m jaxcar.zoo` lists them with their scores).")
    return
  for name, manifest in zoo.manifests().items():
    print(describe(name, manifest))
  print("\nUse one with --model=NAME in jaxcar.evaluate / restore / export, or jaxcar.zoo.load(NAME).")


def define_flags() -> None:
  flags.DEFINE_bool("markdown", False, "print README.md's score tables instead of the listing")


if __name__ == "__main__":
  cli.run(main, define_flags)
