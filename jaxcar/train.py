"""`python -m jaxcar.train --config=NAME[:variants] --workdir=DIR [--config.field=value ...]`.

NAME is a file in configs/ (or a path to one); `:small` gives a run of minutes on a CPU. Rerunning
the same command resumes from the latest checkpoint in DIR. `--print_config` prints the config's
fields and values (overrides applied) and exits. `--distributed` (or $JAXCAR_DISTRIBUTED=1) calls
jax.distributed.initialize() first, for TPU pods and clusters.
"""

from absl import flags

from jaxcar import cli, configs

FLAGS = flags.FLAGS


def define_flags() -> None:
  cli.define_config_flag()
  flags.DEFINE_bool("print_config", False, "print the config's fields and values, then exit")
  flags.DEFINE_string("workdir", None, "where checkpoints, metrics and samples go (local or gs://...)")
  flags.DEFINE_bool("distributed", False, "call jax.distributed.initialize() (multi-host)")
  flags.DEFINE_string("coordinator", None, "host:port of process 0 when not auto-detected")
  flags.DEFINE_integer("num_processes", None, "process count when not auto-detected")
  flags.DEFINE_integer("process_id", None, "this process's index when not auto-detected")


def main(argv):
  if len(argv) > 1:
    raise cli.UsageError(f"unexpected arguments {argv[1:]}")
  if FLAGS.config is None:
    raise cli.UsageError(f"--config is required: one of {configs.available()} (add ':small' for a quick "
                              f"CPU run)")
  if FLAGS.print_config:
    print(FLAGS.config)
    return
  if not FLAGS.workdir:
    raise cli.UsageError("--workdir is required (a folder for checkpoints and metrics; rerun to resume)")
  from jaxcar.training import distributed, loop  # pylint: disable=import-outside-toplevel  (after host memory)
  distributed.initialize(FLAGS.distributed, FLAGS.coordinator, FLAGS.num_processes, FLAGS.process_id)
  loop.train_and_evaluate(FLAGS.config, FLAGS.workdir)


if __name__ == "__main__":
  cli.run(main, define_flags)
