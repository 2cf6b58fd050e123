#!/usr/bin/env bash
# Set up and run the test suite (offline, CPU, tiny models built from config).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test
.venv/bin/python -m pytest -q "$@"
