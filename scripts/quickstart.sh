#!/usr/bin/env bash
# From a fresh clone: set up the environment (skipped when already done), convert the
# built-in real SmolLM2-135M-Instruct (GGUF) into a Hugging Face checkpoint, and
# generate from the converted checkpoint.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export JAX_PLATFORMS=${JAX_PLATFORMS:-cpu}
OUT=${OUT:-outputs/smollm2-135m-instruct-hf}
if [ ! -f "$OUT/config.json" ]; then
  .venv/bin/jaxunlearn convert smollm2-135m-instruct "$OUT" --to hf
fi
.venv/bin/jaxunlearn generate "$OUT" \
  --prompt "What is the capital of France?" \
  --prompt "Write one sentence about the sea." \
  --max-new-tokens 40
