#!/usr/bin/env bash
# A small GPT that trains on a laptop CPU in a couple of minutes, baseline or random-LTD.
#
# Model: 6 layers, hidden 192, 6 heads, sequence 128 (~3.5M parameters with a 4096-token vocabulary).
# Batch: GLOBAL_BATCH 32 = 2 micro-batches of 16: 32 x 128 = 4,096 raw tokens per iteration.
# Length: TRAIN_ITERS 150 (614,400 tokens; 2-3 minutes on 2 idle cores), the same number of
# steps in both modes.
# MODE=random_ltd drops tokens in layers 1..4: kept length 32 -> 128 in steps of 16 over the first
# 70% of the iterations (105). Layer-tokens per iteration: 32 x (128 x 2 + k x 4) = 12,288 at k 32
# and 24,576 at full length (the baseline's every step); over the whole run random-LTD processes
# 2,930,688 layer-tokens, 80% of the baseline's 3,686,400.
# LR: peak 1e-3, floor 1e-4, 5% warmup then cosine, advancing by layer-tokens in both modes (the
# paper's LayerToken schedule; for the baseline it equals a token schedule x 6). The decay length
# is the baseline's layer-tokens, so random-LTD ends the run with its LR not fully decayed: this is
# the "same steps, LR on layer-tokens" comparison; compare the runs' curves against layer-tokens.
#
# Data: DATA_PREFIX is an indexed dataset (.bin/.idx without extension) tokenized with
# TOKENIZER_MODEL. The defaults are the project's offline sample corpus; build it once with
#     python tools/build_sample_corpus.py --output-dir data/sample --prepare
# DATA_PREFIX=mock trains on synthetic tokens (vocabulary VOCAB_SIZE, or TOKENIZER_MODEL's if set).
#
# Run (after: source scripts/setup_env.sh):
#     MODE=baseline bash examples/gpt/pretrain_gpt_small_cpu.sh
#     MODE=random_ltd bash examples/gpt/pretrain_gpt_small_cpu.sh
#     NPROC=2 MODE=random_ltd bash examples/gpt/pretrain_gpt_small_cpu.sh   # torchrun, 2 ranks (DP 2)
#     NPROC=2 TP=2 ...                                                      # tensor-parallel on CPU
#     DRY_RUN=1 bash examples/gpt/pretrain_gpt_small_cpu.sh                 # print the command only
# Every variable below can be set from the environment; EXTRA_ARGS is appended to the arguments.
set -euo pipefail

ROOT="${ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}"

MODE="${MODE:-random_ltd}"                    # baseline | random_ltd
NPROC="${NPROC:-1}"                           # 1: plain python; more: torchrun --standalone
TP="${TP:-1}"
PP="${PP:-1}"

NUM_LAYERS="${NUM_LAYERS:-6}"
HIDDEN="${HIDDEN:-192}"
HEADS="${HEADS:-6}"
SEQ_LEN="${SEQ_LEN:-128}"
MICRO_BATCH="${MICRO_BATCH:-16}"
GLOBAL_BATCH="${GLOBAL_BATCH:-32}"
TRAIN_ITERS="${TRAIN_ITERS:-150}"
LR="${LR:-1e-3}"
MIN_LR="${MIN_LR:-1e-4}"
LR_UNIT="${LR_UNIT:-layer-tokens}"            # iterations | samples | tokens | layer-tokens | layer-averaged-tokens
WARMUP_FRACTION="${WARMUP_FRACTION:-0.05}"
SEED="${SEED:-1234}"

LTD_LAYERS="${LTD_LAYERS:-}"                  # e.g. "1 2" or "1,2"; empty: all but the first and the last
LTD_MIN_SEQ="${LTD_MIN_SEQ:-32}"
LTD_SEQ_STEP="${LTD_SEQ_STEP:-16}"
LTD_REQUIRE_STEPS="${LTD_REQUIRE_STEPS:-$(( TRAIN_ITERS * 7 / 10 > 0 ? TRAIN_ITERS * 7 / 10 : 1 ))}"

DATA_PREFIX="${DATA_PREFIX:-$ROOT/data/sample/train_spm4096_text_document}"
if [ "$DATA_PREFIX" = mock ]; then
    TOKENIZER_MODEL="${TOKENIZER_MODEL:-}"
else
    TOKENIZER_MODEL="${TOKENIZER_MODEL:-$ROOT/data/sample/spm_bpe4096.model}"
fi
VOCAB_SIZE="${VOCAB_SIZE:-4096}"              # mock data without a tokenizer only
SPLIT="${SPLIT:-98,2,0}"

OUTPUT_DIR="${OUTPUT_DIR:-$ROOT/runs/gpt_small_cpu_$MODE}"
CHECKPOINT_DIR="${CHECKPOINT_DIR-$OUTPUT_DIR/checkpoints}"    # saved at the end of the run; "" for none
RESUME="${RESUME:-0}"                         # 1: --load CHECKPOINT_DIR (continue a run)
TENSORBOARD_DIR="${TENSORBOARD_DIR:-$OUTPUT_DIR/tensorboard}"
METRICS_FILE="${METRICS_FILE:-$OUTPUT_DIR/metrics.jsonl}"
LOG_INTERVAL="${LOG_INTERVAL:-10}"
EVAL_INTERVAL="${EVAL_INTERVAL:-50}"
EVAL_ITERS="${EVAL_ITERS:-4}"
EXTRA_ARGS="${EXTRA_ARGS:-}"
DRY_RUN="${DRY_RUN:-0}"

die() { echo "$(basename "$0"): $*" >&2; exit 1; }

ARGS=(
    --cpu --tensor-model-parallel-size "$TP" --pipeline-model-parallel-size "$PP"
    --num-layers "$NUM_LAYERS" --hidden-size "$HIDDEN" --num-attention-heads "$HEADS"
    --seq-length "$SEQ_LEN" --max-position-embeddings "$SEQ_LEN"
    --hidden-dropout 0.0 --attention-dropout 0.0 --init-method-std 0.02
    --micro-batch-size "$MICRO_BATCH" --global-batch-size "$GLOBAL_BATCH" --train-iters "$TRAIN_ITERS"
    --seed "$SEED" --adam-beta1 0.9 --adam-beta2 0.95 --weight-decay 0.1 --clip-grad 1.0
    --lr "$LR" --min-lr "$MIN_LR" --lr-decay-style cosine --lr-schedule-unit "$LR_UNIT"
    --lr-warmup-fraction "$WARMUP_FRACTION"
    --log-interval "$LOG_INTERVAL" --eval-interval "$EVAL_INTERVAL" --eval-iters "$EVAL_ITERS"
    --metrics-file "$METRICS_FILE" --tensorboard-dir "$TENSORBOARD_DIR"
)
case "$MODE" in
    baseline) ;;
    random_ltd)
        ARGS+=(--random-ltd --random-ltd-min-seq "$LTD_MIN_SEQ" --random-ltd-seq-step "$LTD_SEQ_STEP"
               --random-ltd-require-steps "$LTD_REQUIRE_STEPS")
        # shellcheck disable=SC2206  # a list of layer numbers
        [ -n "$LTD_LAYERS" ] && ARGS+=(--random-ltd-layers $LTD_LAYERS)
        ;;
    *) die "MODE must be baseline or random_ltd (got $MODE)" ;;
esac

if [ "$DATA_PREFIX" = mock ]; then
    ARGS+=(--mock-data)
    if [ -n "$TOKENIZER_MODEL" ]; then
        ARGS+=(--tokenizer-type SentencePieceTokenizer --tokenizer-model "$TOKENIZER_MODEL")
    else
        ARGS+=(--vocab-size "$VOCAB_SIZE")
    fi
else
    if [ "$DRY_RUN" != 1 ] && [ ! -f "$DATA_PREFIX.idx" ]; then
        die "no dataset at DATA_PREFIX=$DATA_PREFIX (.bin/.idx); build the sample one with
    python tools/build_sample_corpus.py --output-dir data/sample --prepare
or run on synthetic tokens with DATA_PREFIX=mock"
    fi
    ARGS+=(--data-path "$DATA_PREFIX" --split "$SPLIT"
           --tokenizer-type SentencePieceTokenizer --tokenizer-model "$TOKENIZER_MODEL")
fi
[ -n "$CHECKPOINT_DIR" ] && ARGS+=(--save "$CHECKPOINT_DIR")
[ "$RESUME" = 1 ] && ARGS+=(--load "$CHECKPOINT_DIR")
# shellcheck disable=SC2206  # EXTRA_ARGS is a list of words
ARGS+=($EXTRA_ARGS)

if [ "$NPROC" = 1 ]; then
    CMD=("${PYTHON:-python}" "$ROOT/pretrain_gpt.py" "${ARGS[@]}")
else
    CMD=(torchrun --standalone --nproc-per-node "$NPROC" "$ROOT/pretrain_gpt.py" "${ARGS[@]}")
fi

if [ "$DRY_RUN" = 1 ]; then
    printf '%q ' "${CMD[@]}"
    echo
    exit 0
fi
exec "${CMD[@]}"
