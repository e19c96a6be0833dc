#!/usr/bin/env bash
# From a fresh clone: set up the environment (skipped when already done) and run the demo:
# a scaled-down TOFU end to end on the CPU with the real SmolLM2-135M-Instruct (finetune
# target and retain models, unlearn with ME+GD, GA+GD and IDK+AP, evaluate, report).
# A second run reuses the finetuned models from runs/demo/cache.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export JAX_PLATFORMS=${JAX_PLATFORMS:-cpu}
exec .venv/bin/jaxunlearn demo --config configs/demo.yaml --out "${OUT:-runs/demo}" "$@"
