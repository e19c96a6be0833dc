#!/usr/bin/env bash
# From a fresh clone: set up the environment (skipped when already done), check style
# (ruff format + ruff check) and run the whole test suite. Extra arguments go to pytest.
# Exits non-zero on any failure, including pytest's exit 5 (no tests collected).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export JAX_PLATFORMS=${JAX_PLATFORMS:-cpu}
# style first (seconds): formatting and lint of everything the repository ships
.venv/bin/ruff format --check --quiet jaxunlearn tests scripts benchmarks
.venv/bin/ruff check --quiet jaxunlearn tests scripts benchmarks
# two workers (pytest-xdist): compiling is single-threaded, so one pytest process leaves a
# core idle much of the time; JAXUNLEARN_TEST_WORKERS=0 runs in this process (pdb, -s)
exec .venv/bin/python -m pytest -n "${JAXUNLEARN_TEST_WORKERS:-2}" --dist worksteal "$@"
