#!/usr/bin/env bash
# GPT-3 1.3B, baseline (no token dropping): the recipe of the random-LTD paper's comparison.
#
# Model:  24 layers, hidden 2048, 16 heads, sequence 2048, learned positions, init std 0.013.
# Optim:  Adam (0.9, 0.95), weight decay 0.1, clip 1.0, bf16.
# LR:     peak 2e-4, floor 1e-6, warmup over the first 3B tokens, cosine decay over 300B tokens;
#         the schedule advances by tokens (--lr-schedule-unit tokens), not iterations.
# Length: 300B raw tokens (--train-tokens).
#
# Token arithmetic (GLOBAL_BATCH 512, sequence 2048):
#   tokens per iteration   512 x 2048             = 1,048,576
#   iterations for 300B    ceil(300e9 / 1048576)  = 286,103
#   warmup 3B tokens                               ~ 2,861 iterations
#   micro-batches per step GLOBAL_BATCH / (MICRO_BATCH x DP), DP = world / (TP x PP)
#   e.g. 8 GPUs, TP 1, PP 1, MICRO_BATCH 4: DP 8, 16 micro-batches per step
#
# Run (activate the environment first: source scripts/setup_env.sh):
#   single node, 8 GPUs:
#     DATA_PATH=/data/pile_text_document VOCAB_FILE=gpt2-vocab.json MERGE_FILE=gpt2-merges.txt \
#       bash examples/gpt/pretrain_gpt_1.3b_baseline.sh
#   node k of N (run on every node; MASTER_ADDR is node 0):
#     NNODES=N NODE_RANK=k MASTER_ADDR=node0 DATA_PATH=... bash examples/gpt/pretrain_gpt_1.3b_baseline.sh
#   SLURM: MODE=baseline sbatch examples/gpt/slurm_pretrain_gpt_1.3b.sbatch
#   print the command without running it: DRY_RUN=1 ... bash examples/gpt/pretrain_gpt_1.3b_baseline.sh
#
# Every variable below can be set from the environment. DATA_PATH is one prefix (the path of the
# .bin/.idx pair without extension) or a weighted blend "0.3 prefixA 0.7 prefixB". The tokenizer is
# GPT-2 BPE when VOCAB_FILE/MERGE_FILE are set, SentencePiece when TOKENIZER_MODEL is.
# EXTRA_ARGS is appended to pretrain_gpt.py's arguments (e.g. EXTRA_ARGS="--exit-interval 1000").
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
SEQUENCE_PARALLEL="${SEQUENCE_PARALLEL:-0}"   # 1: shard activations along the sequence (needs TP > 1)
DIST_OPT="${DIST_OPT:-1}"                     # 1: shard optimizer state over data-parallel ranks
MICRO_BATCH="${MICRO_BATCH:-4}"
GLOBAL_BATCH="${GLOBAL_BATCH:-512}"
RECOMPUTE="${RECOMPUTE:-none}"                # none | selective | full (full: uniform, 1 layer per chunk)

# ---- model
NUM_LAYERS="${NUM_LAYERS:-24}"
HIDDEN="${HIDDEN:-2048}"
HEADS="${HEADS:-16}"
SEQ_LEN="${SEQ_LEN:-2048}"
INIT_STD="${INIT_STD:-0.013}"

# ---- learning rate and length, in raw tokens
LR="${LR:-2e-4}"
MIN_LR="${MIN_LR:-1e-6}"
TRAIN_TOKENS="${TRAIN_TOKENS:-300000000000}"  # 300B
WARMUP_TOKENS="${WARMUP_TOKENS:-3000000000}"  # 3B
DECAY_TOKENS="${DECAY_TOKENS:-}"              # empty: the whole run (the trainer computes it exactly)
SEED="${SEED:-1234}"

# ---- data and tokenizer
DATA_PATH="${DATA_PATH:-}"
SPLIT="${SPLIT:-949,50,1}"
DATA_CACHE_PATH="${DATA_CACHE_PATH:-}"
NUM_WORKERS="${NUM_WORKERS:-2}"
TOKENIZER_MODEL="${TOKENIZER_MODEL:-}"
VOCAB_FILE="${VOCAB_FILE:-}"
MERGE_FILE="${MERGE_FILE:-}"

# ---- outputs
RUN_NAME="${RUN_NAME:-gpt_1.3b_baseline}"
OUTPUT_DIR="${OUTPUT_DIR:-$ROOT/runs/$RUN_NAME}"
CHECKPOINT_DIR="${CHECKPOINT_DIR:-$OUTPUT_DIR/checkpoints}"
TENSORBOARD_DIR="${TENSORBOARD_DIR:-$OUTPUT_DIR/tensorboard}"
METRICS_FILE="${METRICS_FILE:-$OUTPUT_DIR/metrics.jsonl}"
SAVE_INTERVAL="${SAVE_INTERVAL:-5000}"
LOG_INTERVAL="${LOG_INTERVAL:-10}"
EVAL_INTERVAL="${EVAL_INTERVAL:-1000}"
EVAL_ITERS="${EVAL_ITERS:-10}"
EXTRA_ARGS="${EXTRA_ARGS:-}"
DRY_RUN="${DRY_RUN:-0}"

die() { echo "$(basename "$0"): $*" >&2; exit 1; }

[ -n "$DATA_PATH" ] || die "set DATA_PATH to a dataset prefix (see tools/preprocess_data.py) or a blend 'w1 p1 w2 p2'"
if [ -n "$VOCAB_FILE" ] || [ -n "$MERGE_FILE" ]; then
    [ -n "$VOCAB_FILE" ] && [ -n "$MERGE_FILE" ] || die "GPT-2 BPE needs both VOCAB_FILE and MERGE_FILE"
    TOKENIZER_ARGS=(--tokenizer-type GPT2BPETokenizer --vocab-file "$VOCAB_FILE" --merge-file "$MERGE_FILE")
elif [ -n "$TOKENIZER_MODEL" ]; then
    TOKENIZER_ARGS=(--tokenizer-type SentencePieceTokenizer --tokenizer-model "$TOKENIZER_MODEL")
else
    die "set TOKENIZER_MODEL (SentencePiece .model) or VOCAB_FILE and MERGE_FILE (GPT-2 BPE)"
fi

MODEL_ARGS=(
    --num-layers "$NUM_LAYERS" --hidden-size "$HIDDEN" --num-attention-heads "$HEADS"
    --seq-length "$SEQ_LEN" --max-position-embeddings "$SEQ_LEN"
    --init-method-std "$INIT_STD" --hidden-dropout 0.1 --attention-dropout 0.1
)
PARALLEL_ARGS=(--tensor-model-parallel-size "$TP" --pipeline-model-parallel-size "$PP")
[ "$SEQUENCE_PARALLEL" = 1 ] && PARALLEL_ARGS+=(--sequence-parallel)
[ "$DIST_OPT" = 1 ] && PARALLEL_ARGS+=(--use-distributed-optimizer)
case "$RECOMPUTE" in
    none) ;;
    selective) PARALLEL_ARGS+=(--recompute-granularity selective) ;;
    full) PARALLEL_ARGS+=(--recompute-granularity full --recompute-method uniform --recompute-num-layers 1) ;;
    *) die "RECOMPUTE must be none, selective or full (got $RECOMPUTE)" ;;
esac
TRAINING_ARGS=(
    --micro-batch-size "$MICRO_BATCH" --global-batch-size "$GLOBAL_BATCH"
    --train-tokens "$TRAIN_TOKENS" --seed "$SEED" --bf16
    --optimizer adam --adam-beta1 0.9 --adam-beta2 0.95 --adam-eps 1e-8
    --weight-decay 0.1 --clip-grad 1.0
)
LR_ARGS=(
    --lr "$LR" --min-lr "$MIN_LR" --lr-decay-style cosine --lr-schedule-unit tokens
    --lr-warmup-tokens "$WARMUP_TOKENS"
)
[ -n "$DECAY_TOKENS" ] && LR_ARGS+=(--lr-decay-tokens "$DECAY_TOKENS")
# shellcheck disable=SC2206  # DATA_PATH may be a blend: split it into words on purpose
DATA_ARGS=(--data-path $DATA_PATH --split "$SPLIT" --num-workers "$NUM_WORKERS" "${TOKENIZER_ARGS[@]}")
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
    "$ROOT/pretrain_gpt.py"
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
