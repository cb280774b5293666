#!/usr/bin/env bash
# Sets up .venv if needed (pinned versions, scripts/setup_env.sh), then runs the whole test suite
# (CPU, gloo). Extra args go to pytest. Prints how long setup and tests took.
set -euo pipefail
cd "$(dirname "$0")"
t0=$(date +%s)
source scripts/setup_env.sh || exit 1
t1=$(date +%s)
echo "[run_tests] setup took $(( t1 - t0 )) s"
python -m pytest -q tests "$@" && rc=0 || rc=$?
echo "[run_tests] pytest took $(( $(date +%s) - t1 )) s"
exit $rc
