#!/usr/bin/env bash
# WikiText-103/-2 perplexity (token- and word-level) of a checkpoint, overlapping windows.
#   examples/eval/wikitext.sh CHECKPOINT_DIR wiki.test.tokens [extra flags]
# STRIDE (default: half the checkpoint's sequence length, set it explicitly for comparisons).
# Use --task perplexity instead of wikitext for plain (not WikiText-tokenized) text.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
CKPT="${1:?usage: $0 CHECKPOINT_DIR TEXT_FILE [flags]}"; DATA="${2:?TEXT_FILE}"; shift 2
# shellcheck disable=SC1091
source "$ROOT/scripts/setup_env.sh"
STRIDE_ARGS=()
if [ -n "${STRIDE:-}" ]; then STRIDE_ARGS=(--overlapping-eval "$STRIDE"); fi
python "$ROOT/tools/evaluate_zeroshot.py" --task "${TASK:-wikitext}" --load "$CKPT" --data-path "$DATA" \
    --micro-batch-size "${MBS:-8}" --results-dir "${RESULTS_DIR:-eval_results}" "${STRIDE_ARGS[@]}" "$@"
