"""One process of a two-process CPU job over gloo (run by tests/test_train_sharding.py).

usage: python tests/multiprocess_worker.py PORT PROCESS_ID OUTPUT.npz
Each process holds 2 CPU devices and its half of a fixed global batch; process 0 writes the result.
"""

import sys

import jax

jax.config.update("jax_cpu_collectives_implementation", "gloo")
jax.config.update("jax_num_cpu_devices", 2)


def main(port: str, process_id: str, output: str):
  jax.distributed.initialize(f"127.0.0.1:{port}", num_processes=2, process_id=int(process_id))
  import numpy as np  # pylint: disable=import-outside-toplevel
  from tests import sharding_case  # pylint: disable=import-outside-toplevel
  half = sharding_case.GLOBAL_BATCH // 2
  local = {k: v[jax.process_index() * half:(jax.process_index() + 1) * half]
           for k, v in sharding_case.global_batch_numpy().items()}
  losses, params = sharding_case.train(jax.devices(), local)
  if jax.process_index() == 0:
    np.savez(output, losses=np.asarray(losses), **{str(i): p for i, p in enumerate(params)})
  jax.distributed.shutdown()


if __name__ == "__main__":
  main(*sys.argv[1:])
