#!/usr/bin/env bash
# Run a jaxunlearn command on one GPU host, all its GPUs in one mesh. Example:
#
#   scripts/gpu.sh unlearn --config configs/paper/tofu/me_gd.yaml mesh.data=1 mesh.fsdp=-1
#
# Installs the CUDA build of the pinned JAX into .venv the first time.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
if ! .venv/bin/python -c "import jax; assert jax.default_backend() == 'gpu'" 2>/dev/null; then
  .venv/bin/python -m pip install -q "jax[cuda12]==0.10.2"
fi
export XLA_PYTHON_CLIENT_PREALLOCATE=${XLA_PYTHON_CLIENT_PREALLOCATE:-false}
exec .venv/bin/jaxunlearn "$@"
