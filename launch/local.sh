#!/usr/bin/env bash
# Train on this machine: one process using every local device (all GPUs, or the CPU).
#   launch/local.sh qcn:small /tmp/qcn_small [--config.field=value ...]
# With NUM_PROCESSES=N (CPU only) it starts N processes on 127.0.0.1 over gloo instead, which
# exercises the multi-host code path without a cluster.
set -euo pipefail
config=${1:?usage: launch/local.sh CONFIG WORKDIR [--config.field=value ...]}
workdir=${2:?usage: launch/local.sh CONFIG WORKDIR [--config.field=value ...]}
shift 2
# No `cd`: the workdir, data and config paths a user gives are relative to where they ran this from.

num_processes=${NUM_PROCESSES:-1}
if [[ "$num_processes" == 1 ]]; then
  exec python -m jaxcar.train --config="$config" --workdir="$workdir" "$@"
fi
port=${PORT:-12355}
pids=()
for ((i = 0; i < num_processes; i++)); do
  JAX_PLATFORMS=cpu JAX_CPU_COLLECTIVES_IMPLEMENTATION=gloo \
    python -m jaxcar.train --config="$config" --workdir="$workdir" --distributed \
      --coordinator="127.0.0.1:$port" --num_processes="$num_processes" --process_id="$i" "$@" &
  pids+=($!)
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=$?; done
exit $status
