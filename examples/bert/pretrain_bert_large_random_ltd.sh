#!/usr/bin/env bash
# BERT-large with random-LTD (random and layerwise token dropping) and the LayerToken LR schedule.
#
# Same model, optimizer and data as pretrain_bert_large_baseline.sh; what changes:
#   * random-LTD on layers 1..22 (0-based; the first and last layer always see the full sequence):
#     each of those layers keeps k tokens per sample, k growing 128 -> 512 in steps of 16 over the
#     WHOLE run (LTD_REQUIRE_STEPS defaults to TRAIN_ITERS): the last steps keep 496 of 512 tokens;
#   * the run is TRAIN_ITERS iterations (default 1,000,000: 524B raw tokens, half the baseline's
#     1,049B, the paper's random-LTD BERT-large setting);
#   * the learning rate's warmup and decay advance with layer-averaged tokens,
#     gbs x (512 x 2 + k x 22) / 24 per iteration (Megatron-DeepSpeed's "tokens" counter for random-LTD):
#     an iteration that drops tokens moves the schedule less. Warmup stays "10,000 iterations"
#     (--lr-warmup-iters: the trainer converts it to the layer-averaged tokens of the first
#     WARMUP_ITERS iterations of the ramp), and the decay spans the whole run (linear decay to MIN_LR
#     at the last step); the trainer walks the kept-length schedule to compute both exactly.
#
# Token arithmetic per iteration (GLOBAL_BATCH 1024, sequence 512, 24 layers, 22 dropping):
#   raw tokens                  1024 x 512                      = 524,288
#   layer-tokens at k           1024 x (512 x 2 + k x 22)       = 3,932,160 at k 128 .. 12,582,912 at k 512
#   layer-averaged tokens       layer-tokens / 24               = 163,840 .. 524,288
#   warmup (10,000 iterations, k = 128)                         = 1,638,400,000
#   whole run (1,000,000 iterations, k 128 -> 496)              = 336,554,213,184 (0.64 x full length)
#   the trainer's [setup] line prints the warmup and decay lengths in layer-averaged tokens.
#
# Run (activate the environment first: source scripts/setup_env.sh):
#   single node, 8 GPUs:
#     DATA_PATH=/data/bert_text_sentence VOCAB_FILE=vocab.txt bash examples/bert/pretrain_bert_large_random_ltd.sh
#   node k of N: NNODES=N NODE_RANK=k MASTER_ADDR=node0 ... bash examples/bert/pretrain_bert_large_random_ltd.sh
#   print the command without running it: DRY_RUN=1 ... bash examples/bert/pretrain_bert_large_random_ltd.sh
#
# Every variable below can be set from the environment (see the baseline launcher for the shared ones).
set -euo pipefail

ROOT="${ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}"

# ---- launch (torchrun)
GPUS_PER_NODE="${GPUS_PER_NODE:-8}"
NNODES="${NNODES:-1}"
NODE_RANK="${NODE_RANK:-0}"
MASTER_ADDR="${MASTER_ADDR:-localhost}"
MASTER_PORT="${MASTER_PORT:-6000}"

# ---- parallelism and batch
TP="${TP:-1}"
PP="${PP:-1}"
DIST_OPT="${DIST_OPT:-1}"                     # 1: shard optimizer state over data-parallel ranks
MICRO_BATCH="${MICRO_BATCH:-16}"
GLOBAL_BATCH="${GLOBAL_BATCH:-1024}"
RECOMPUTE="${RECOMPUTE:-none}"                # none | selective | full (full: uniform, 1 layer per chunk)

# ---- model
NUM_LAYERS="${NUM_LAYERS:-24}"
HIDDEN="${HIDDEN:-1024}"
HEADS="${HEADS:-16}"
SEQ_LEN="${SEQ_LEN:-512}"
INIT_STD="${INIT_STD:-0.02}"
BINARY_HEAD="${BINARY_HEAD:-1}"               # 0: masked LM only (--bert-no-binary-head)

# ---- length and learning rate
TRAIN_ITERS="${TRAIN_ITERS:-1000000}"
LR="${LR:-1e-4}"
MIN_LR="${MIN_LR:-1e-5}"
WARMUP_ITERS="${WARMUP_ITERS:-10000}"
WARMUP_TOKENS="${WARMUP_TOKENS:-}"            # empty: the layer-averaged tokens of the first WARMUP_ITERS iterations
DECAY_TOKENS="${DECAY_TOKENS:-}"              # empty: the layer-averaged tokens of the whole run
SEED="${SEED:-1234}"

# ---- random-LTD
LTD_LAYERS="${LTD_LAYERS:-}"                  # e.g. "1 2 3" or "1,2,3"; empty: all but the first and the last
LTD_LAYERS="${LTD_LAYERS//,/ }"
LTD_MIN_SEQ="${LTD_MIN_SEQ:-128}"
LTD_MAX_SEQ="${LTD_MAX_SEQ:-$SEQ_LEN}"
LTD_SEQ_STEP="${LTD_SEQ_STEP:-16}"
LTD_REQUIRE_STEPS="${LTD_REQUIRE_STEPS:-$TRAIN_ITERS}"

# ---- data and tokenizer
DATA_PATH="${DATA_PATH:-}"
SPLIT="${SPLIT:-949,50,1}"
DATA_CACHE_PATH="${DATA_CACHE_PATH:-}"
NUM_WORKERS="${NUM_WORKERS:-2}"
VOCAB_FILE="${VOCAB_FILE:-}"
VOCAB_CASED="${VOCAB_CASED:-0}"

# ---- outputs
RUN_NAME="${RUN_NAME:-bert_large_random_ltd}"
OUTPUT_DIR="${OUTPUT_DIR:-$ROOT/runs/$RUN_NAME}"
CHECKPOINT_DIR="${CHECKPOINT_DIR:-$OUTPUT_DIR/checkpoints}"
TENSORBOARD_DIR="${TENSORBOARD_DIR:-$OUTPUT_DIR/tensorboard}"
METRICS_FILE="${METRICS_FILE:-$OUTPUT_DIR/metrics.jsonl}"
SAVE_INTERVAL="${SAVE_INTERVAL:-10000}"
LOG_INTERVAL="${LOG_INTERVAL:-100}"
EVAL_INTERVAL="${EVAL_INTERVAL:-10000}"
EVAL_ITERS="${EVAL_ITERS:-10}"
EXTRA_ARGS="${EXTRA_ARGS:-}"
DRY_RUN="${DRY_RUN:-0}"

die() { echo "$(basename "$0"): $*" >&2; exit 1; }

[ -n "$DATA_PATH" ] || die "set DATA_PATH to a --split-sentences dataset prefix (e.g. data/bert_text_sentence) or a blend 'w1 p1 w2 p2'"
[ -n "$VOCAB_FILE" ] || die "set VOCAB_FILE to a BERT WordPiece vocab.txt"
TOKENIZER_TYPE=BertWordPieceLowerCase
[ "$VOCAB_CASED" = 1 ] && TOKENIZER_TYPE=BertWordPieceCase

MODEL_ARGS=(
    --num-layers "$NUM_LAYERS" --hidden-size "$HIDDEN" --num-attention-heads "$HEADS"
    --seq-length "$SEQ_LEN" --max-position-embeddings "$SEQ_LEN"
    --init-method-std "$INIT_STD" --hidden-dropout 0.1 --attention-dropout 0.1
)
[ "$BINARY_HEAD" = 1 ] || MODEL_ARGS+=(--bert-no-binary-head)
PARALLEL_ARGS=(--tensor-model-parallel-size "$TP" --pipeline-model-parallel-size "$PP")
[ "$DIST_OPT" = 1 ] && PARALLEL_ARGS+=(--use-distributed-optimizer)
case "$RECOMPUTE" in
    none) ;;
    selective) PARALLEL_ARGS+=(--recompute-granularity selective) ;;
    full) PARALLEL_ARGS+=(--recompute-granularity full --recompute-method uniform --recompute-num-layers 1) ;;
    *) die "RECOMPUTE must be none, selective or full (got $RECOMPUTE)" ;;
esac
TRAINING_ARGS=(
    --micro-batch-size "$MICRO_BATCH" --global-batch-size "$GLOBAL_BATCH"
    --train-iters "$TRAIN_ITERS" --seed "$SEED" --bf16
    --optimizer adam --adam-beta1 0.9 --adam-beta2 0.999 --adam-eps 1e-8
    --weight-decay 0.01 --clip-grad 1.0
)
LTD_ARGS=(
    --random-ltd --random-ltd-min-seq "$LTD_MIN_SEQ" --random-ltd-max-seq "$LTD_MAX_SEQ"
    --random-ltd-seq-step "$LTD_SEQ_STEP" --random-ltd-require-steps "$LTD_REQUIRE_STEPS"
)
# shellcheck disable=SC2206  # a list of layer numbers
[ -n "$LTD_LAYERS" ] && LTD_ARGS+=(--random-ltd-layers $LTD_LAYERS)

LR_ARGS=(--lr "$LR" --min-lr "$MIN_LR" --lr-decay-style linear --lr-schedule-unit layer-averaged-tokens)
if [ -n "$WARMUP_TOKENS" ]; then LR_ARGS+=(--lr-warmup-tokens "$WARMUP_TOKENS"); else LR_ARGS+=(--lr-warmup-iters "$WARMUP_ITERS"); fi
[ -n "$DECAY_TOKENS" ] && LR_ARGS+=(--lr-decay-tokens "$DECAY_TOKENS")
# shellcheck disable=SC2206  # DATA_PATH may be a blend: split it into words on purpose
DATA_ARGS=(
    --data-path $DATA_PATH --split "$SPLIT" --num-workers "$NUM_WORKERS"
    --tokenizer-type "$TOKENIZER_TYPE" --vocab-file "$VOCAB_FILE" --mask-prob 0.15 --short-seq-prob 0.1
)
[ -n "$DATA_CACHE_PATH" ] && DATA_ARGS+=(--data-cache-path "$DATA_CACHE_PATH")
OUTPUT_ARGS=(
    --save "$CHECKPOINT_DIR" --load "$CHECKPOINT_DIR" --save-interval "$SAVE_INTERVAL"
    --log-interval "$LOG_INTERVAL" --eval-interval "$EVAL_INTERVAL" --eval-iters "$EVAL_ITERS"
    --tensorboard-dir "$TENSORBOARD_DIR" --metrics-file "$METRICS_FILE" --no-progress
)

# shellcheck disable=SC2206  # EXTRA_ARGS is a list of words
CMD=(
    torchrun --nproc-per-node "$GPUS_PER_NODE" --nnodes "$NNODES" --node-rank "$NODE_RANK"
    --master-addr "$MASTER_ADDR" --master-port "$MASTER_PORT"
    "$ROOT/pretrain_bert.py"
    "${MODEL_ARGS[@]}" "${PARALLEL_ARGS[@]}" "${TRAINING_ARGS[@]}" "${LR_ARGS[@]}" "${LTD_ARGS[@]}"
    "${DATA_ARGS[@]}" "${OUTPUT_ARGS[@]}" $EXTRA_ARGS
)

if [ "$DRY_RUN" = 1 ]; then
    printf '%q ' "${CMD[@]}"
    echo
    exit 0
fi
mkdir -p "$CHECKPOINT_DIR" "$TENSORBOARD_DIR"   # --load needs the directory (empty: start from scratch)
export CUDA_DEVICE_MAX_CONNECTIONS="${CUDA_DEVICE_MAX_CONNECTIONS:-1}"
exec "${CMD[@]}"
