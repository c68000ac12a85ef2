"""`python -m jaxcar.bench NAME [flags]`: run one benchmark (input, step, restore).

Each benchmark is a module `jaxcar.bench.NAME` with a `main(argv)` that parses its own absl flags,
prints a table, and appends it to BUILD_NOTES.md when asked (`--record`).
"""

import importlib
import sys

BENCHMARKS = ("input", "step", "restore")


def main():
  if len(sys.argv) < 2 or sys.argv[1] not in BENCHMARKS:
    sys.exit(f"usage: python -m jaxcar.bench {{{','.join(BENCHMARKS)}}} [flags]")
  name = sys.argv[1]
  module = importlib.import_module(f"jaxcar.bench.{name}")
  module.main([f"jaxcar.bench {name}"] + sys.argv[2:])


if __name__ == "__main__":
  main()
