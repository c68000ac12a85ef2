#!/usr/bin/env bash
# Train on a Cloud TPU VM pod slice: the same command on every worker, which JAX connects by itself.
#   TPU_NAME=my-v5e-32 ZONE=us-west4-a launch/tpu_pod.sh qcn gs://my-bucket/runs/qcn [--config.x=y ...]
# The workdir must be a bucket every worker can reach; rerunning the command after a preemption
# resumes from the latest checkpoint there. On the first run set SETUP=1 REPO=<git URL of jaxcar>
# to clone and install on every worker.
set -euo pipefail
config=${1:?usage: launch/tpu_pod.sh CONFIG gs://BUCKET/WORKDIR [--config.field=value ...]}
workdir=${2:?usage: launch/tpu_pod.sh CONFIG gs://BUCKET/WORKDIR [--config.field=value ...]}
shift 2
: "${TPU_NAME:?set TPU_NAME}" "${ZONE:?set ZONE}"
project_flag=${PROJECT:+--project=$PROJECT}

# Each word single-quoted for the workers' shell (gcloud passes --command as one string), so that
# arguments arrive unchanged: --config.x='a b', quotes, $ and * included.
quote() {
  local word q="'" escaped="'\\''" quoted=()
  for word in "$@"; do quoted+=("'${word//$q/$escaped}'"); done
  printf '%s' "${quoted[*]}"
}
setup_command() { echo "test -d jaxcar || git clone $(quote "$repo") jaxcar; cd jaxcar && python3 -m venv .venv \
  && . .venv/bin/activate && pip install -q -e . && pip install -q 'jax[tpu]==0.10.2'"; }
train="cd jaxcar && . .venv/bin/activate && python -m jaxcar.train --distributed \
  $(quote "--config=$config" "--workdir=$workdir" "$@")"

if [[ "${SETUP:-0}" == 1 ]]; then
  repo=${REPO:?set REPO to the git URL to clone}
  gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone="$ZONE" $project_flag --worker=all --command="$(setup_command)"
fi
gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone="$ZONE" $project_flag --worker=all --command="$train"
