#!/usr/bin/env bash
# LAMBADA last-word accuracy (strict and non-strict) of a checkpoint saved at any TP/PP layout.
#   examples/eval/lambada.sh CHECKPOINT_DIR LAMBADA_JSONL [extra flags, e.g. --strict-lambada --cpu]
# LAMBADA_JSONL: one {"text": "..."} per line, the last word is the target (e.g. lambada_test.jsonl).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
CKPT="${1:?usage: $0 CHECKPOINT_DIR LAMBADA_JSONL [flags]}"; DATA="${2:?LAMBADA_JSONL}"; shift 2
# shellcheck disable=SC1091
source "$ROOT/scripts/setup_env.sh"
python "$ROOT/tools/evaluate_zeroshot.py" --task lambada --load "$CKPT" --data-path "$DATA" \
    --micro-batch-size "${MBS:-8}" --results-dir "${RESULTS_DIR:-eval_results}" "$@"
