#!/usr/bin/env bash
# BERT-large, baseline (no token dropping): the recipe of the random-LTD paper's BERT comparison.
#
# Model:  24 layers, hidden 1024, 16 heads, sequence 512, learned positions, init std 0.02,
#         masked LM (15 %, whole words, n-grams up to 3) + sentence-order prediction (binary head).
# Optim:  Adam (0.9, 0.999), weight decay 0.01, clip 1.0, bf16.
# LR:     peak 1e-4, floor 1e-5, warmup 10,000 iterations, linear decay over the training tokens;
#         the schedule advances by raw tokens (--lr-schedule-unit tokens), so the warmup is given as
#         the tokens of 10,000 iterations.
# Length: TRAIN_ITERS iterations (default 2,000,000 = 1,049B tokens, the paper's baseline).
#
# Token arithmetic (GLOBAL_BATCH 1024, sequence 512):
#   tokens per iteration   1024 x 512                  = 524,288
#   2,000,000 iterations   2e6 x 524,288               = 1,048,576,000,000 (~1,049B)
#   warmup                 10,000 x 524,288            = 5,242,880,000 tokens
#   micro-batches per step GLOBAL_BATCH / (MICRO_BATCH x DP), DP = world / (TP x PP)
#   e.g. 8 GPUs, TP 1, PP 1, MICRO_BATCH 16: DP 8, 8 micro-batches per step
#
# Data: a corpus preprocessed with --split-sentences and a WordPiece vocabulary, e.g.
#   python tools/preprocess_data.py --input corpus.jsonl --output-prefix data/bert \
#       --tokenizer-type BertWordPieceLowerCase --vocab-file bert-large-uncased-vocab.txt --split-sentences
#   -> DATA_PATH=data/bert_text_sentence
#
# Run (activate the environment first: source scripts/setup_env.sh):
#   single node, 8 GPUs:
#     DATA_PATH=/data/bert_text_sentence VOCAB_FILE=vocab.txt bash examples/bert/pretrain_bert_large_baseline.sh
#   node k of N (run on every node; MASTER_ADDR is node 0):
#     NNODES=N NODE_RANK=k MASTER_ADDR=node0 DATA_PATH=... bash examples/bert/pretrain_bert_large_baseline.sh
#   print the command without running it: DRY_RUN=1 ... bash examples/bert/pretrain_bert_large_baseline.sh
#
# Every variable below can be set from the environment. DATA_PATH is one prefix or a weighted blend
# "0.3 prefixA 0.7 prefixB". VOCAB_CASED=1 uses BertWordPieceCase instead of the lower-cased one.
# BERT cannot use --sequence-parallel (megatron-core's BERT LM-head norm needs TransformerEngine/apex).
# EXTRA_ARGS is appended to pretrain_bert.py's arguments (e.g. EXTRA_ARGS="--exit-interval 1000").
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
TRAIN_ITERS="${TRAIN_ITERS:-2000000}"
LR="${LR:-1e-4}"
MIN_LR="${MIN_LR:-1e-5}"
WARMUP_ITERS="${WARMUP_ITERS:-10000}"
WARMUP_TOKENS="${WARMUP_TOKENS:-$((WARMUP_ITERS * GLOBAL_BATCH * SEQ_LEN))}"
DECAY_TOKENS="${DECAY_TOKENS:-$((TRAIN_ITERS * GLOBAL_BATCH * SEQ_LEN))}"
SEED="${SEED:-1234}"

# ---- data and tokenizer
DATA_PATH="${DATA_PATH:-}"
SPLIT="${SPLIT:-949,50,1}"
DATA_CACHE_PATH="${DATA_CACHE_PATH:-}"
NUM_WORKERS="${NUM_WORKERS:-2}"
VOCAB_FILE="${VOCAB_FILE:-}"
VOCAB_CASED="${VOCAB_CASED:-0}"

# ---- outputs
RUN_NAME="${RUN_NAME:-bert_large_baseline}"
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
LR_ARGS=(
    --lr "$LR" --min-lr "$MIN_LR" --lr-decay-style linear --lr-schedule-unit tokens
    --lr-warmup-tokens "$WARMUP_TOKENS" --lr-decay-tokens "$DECAY_TOKENS"
)
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
    "${MODEL_ARGS[@]}" "${PARALLEL_ARGS[@]}" "${TRAINING_ARGS[@]}" "${LR_ARGS[@]}"
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
