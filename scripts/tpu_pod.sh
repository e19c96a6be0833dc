#!/usr/bin/env bash
# Run one jaxunlearn command on every host of a TPU pod slice. From your workstation:
#
#   gcloud compute tpus tpu-vm ssh NAME --zone ZONE --worker=all \
#     --command="cd jaxunlearn && scripts/tpu_pod.sh unlearn --config configs/paper/tofu/me_gd.yaml \
#                mesh.data=1 mesh.fsdp=-1 output.dir=gs://BUCKET/runs/me_gd"
#
# Every host runs the same command; jax.distributed discovers the pod itself
# (JAXUNLEARN_DISTRIBUTED=auto), each host feeds its slice of the global batch, process 0
# writes metrics and exports. output.dir must be storage every host sees: a gs:// URL
# (checkpoints written there by every host, the rest copied up by host 0) or a shared mount.
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRAS=tpu,gcs scripts/setup.sh  # the pinned jax's TPU plugin and gs:// output, no torch
export JAXUNLEARN_DISTRIBUTED=auto
exec .venv/bin/jaxunlearn "$@"
