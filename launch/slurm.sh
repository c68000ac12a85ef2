#!/usr/bin/env bash
# Multi-node GPU training under SLURM: one task per node, each using all of its node's GPUs.
#   sbatch --nodes=4 --gpus-per-node=8 launch/slurm.sh qcn /shared/runs/qcn [--config.x=y ...]
# JAX reads the SLURM environment to find the coordinator and this task's rank (--distributed).
# The workdir must be on a filesystem every node sees; resubmitting resumes from its latest checkpoint.
#SBATCH --job-name=jaxcar
#SBATCH --ntasks-per-node=1
#SBATCH --cpus-per-task=16
#SBATCH --time=24:00:00
#SBATCH --signal=TERM@120
#SBATCH --output=slurm-%j.out
set -euo pipefail
config=${1:?usage: sbatch launch/slurm.sh CONFIG WORKDIR [--config.field=value ...]}
workdir=${2:?usage: sbatch launch/slurm.sh CONFIG WORKDIR [--config.field=value ...]}
shift 2
cd "${SLURM_SUBMIT_DIR:-$(dirname "$0")/..}"
. .venv/bin/activate
# --signal=TERM@120 sends SIGTERM two minutes before the time limit: the run saves and exits cleanly.
# --cpus-per-task again for the step: from Slurm 22.05 srun no longer takes it from the job, and each task
# (its data loader workers included) would get one CPU.
srun --kill-on-bad-exit=1 ${SLURM_CPUS_PER_TASK:+--cpus-per-task=$SLURM_CPUS_PER_TASK} \
  python -m jaxcar.train --distributed --config="$config" --workdir="$workdir" "$@"
