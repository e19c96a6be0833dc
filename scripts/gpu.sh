#!/usr/bin/env bash
# Run a jaxunlearn command on one GPU host, all its GPUs in one mesh. Example:
#
#   scripts/gpu.sh unlearn --config configs/paper/tofu/me_gd.yaml mesh.data=1 mesh.fsdp=-1
#
# Installs jaxunlearn with the CUDA plugin of the pinned JAX into .venv the first time
# (CUDA=cuda13 for CUDA 13 drivers; default cuda12), without torch or the test tools.
# Compiled steps are kept in ~/.cache/jaxunlearn/xla (--compilation-cache DIR|off).
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRAS=${CUDA:-cuda12} scripts/setup.sh
export XLA_PYTHON_CLIENT_PREALLOCATE=${XLA_PYTHON_CLIENT_PREALLOCATE:-false}
exec .venv/bin/jaxunlearn "$@"
