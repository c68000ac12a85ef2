"""`python -m jaxcar.zoo`: the pretrained models shipped with jaxcar, their size and scores."""

import sys

from jaxcar import zoo


def describe(name: str, manifest: dict) -> str:
  aliases = ", ".join(manifest.get("aliases", ())) or "-"
  training = manifest["training"]
  lines = [f"{name} (alias: {aliases}): {manifest['description']}",
           f"  {manifest['parameters']:,} parameters, {manifest['bytes'] / 1e6:.1f} MB; trained "
           f"{training['steps']:,} steps ({training['cpu_hours']:.1f} CPU-hours): {training['command']}"]
  for dataset, by_quality in manifest.get("scores", {}).items():
    cells = [f"q{q} {s['model']['psnr']:.2f} ({s['model']['psnr'] - s['jpeg']['psnr']:+.2f})"
             for q, s in sorted(by_quality.items(), key=lambda item: int(item[0]))]
    lines.append(f"  {dataset} PSNR (vs JPEG): " + ", ".join(cells))
  return "\n".join(lines)


def main() -> None:
  if not zoo.manifests():
    sys.exit("no pretrained models are shipped with this installation")
  for name, manifest in zoo.manifests().items():
    print(describe(name, manifest))
  print("\nUse one with --model=NAME in jaxcar.evaluate / restore / export, or jaxcar.zoo.load(NAME).")


if __name__ == "__main__":
  main()
