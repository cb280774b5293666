#!/usr/bin/env bash
# Sets up .venv if needed, then runs the whole test suite (CPU, gloo). Extra args go to pytest.
set -euo pipefail
cd "$(dirname "$0")"
source scripts/setup_env.sh || exit 1
exec python -m pytest -q tests "$@"
