#!/usr/bin/env bash
# Set up and run the test suite (offline, CPU, tiny models built from config).
# The browser test drives Debian's chromium + chromium-driver; they are installed here if missing.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! [ -x /usr/bin/chromium ] || ! [ -x /usr/bin/chromedriver ]; then
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    echo "installing chromium and chromium-driver for the browser test"
    apt-get update -q >/dev/null && apt-get install -y -q chromium chromium-driver >/dev/null
  else
    echo "WARNING: no /usr/bin/chromium or /usr/bin/chromedriver and no root apt-get: the browser test will FAIL" >&2
  fi
fi
bash scripts/setup.sh test
.venv/bin/ruff check src tests bench   # lint first: a second, cheap failure mode (rules in pyproject.toml)
.venv/bin/python -m pytest -q "$@"
