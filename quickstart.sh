#!/usr/bin/env bash
# The main job: sets up .venv if needed, then trains a small GPT baseline and with random-LTD on
# an offline real-text corpus, compares them (table + PNG) and evaluates both zero-shot.
# Extra args go to examples/quickstart.py (e.g. --preset tiny, --out-dir DIR).
set -euo pipefail
cd "$(dirname "$0")"
source scripts/setup_env.sh || exit 1
exec python examples/quickstart.py "$@"
