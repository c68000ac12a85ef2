"""`python -m benchmarks NAME [flags]`, from the repository root: run one benchmark (input, step, restore).

Each benchmark is a module `benchmarks.NAME` with a `main(argv)` that parses its own absl flags,
prints a table, and with `--record` writes it to benchmarks/results/NAME.md (replacing the last one).
"""

import importlib
import sys

BENCHMARKS = ("input", "step", "restore")


def main():
  if len(sys.argv) < 2 or sys.argv[1] not in BENCHMARKS:
    sys.exit(f"usage: python -m benchmarks {{{','.join(BENCHMARKS)}}} [flags]")
  name = sys.argv[1]
  module = importlib.import_module(f"benchmarks.{name}")
  if {"-h", "--help", "--helpshort", "--helpfull"} & set(sys.argv[2:]):
    print(f"usage: python -m benchmarks {name} [flags]\n\n{module.__doc__.strip()}\n\n"
          f"{module.FLAGS.module_help(module)}")
    return
  module.main([f"benchmarks {name}"] + sys.argv[2:])


if __name__ == "__main__":
  main()
