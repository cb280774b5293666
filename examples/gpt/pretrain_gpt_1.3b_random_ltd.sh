#!/usr/bin/env bash
# GPT-3 1.3B with random-LTD (random and layerwise token dropping) and the LayerToken LR schedule.
#
# Same model, optimizer and data as pretrain_gpt_1.3b_baseline.sh; what changes:
#   * random-LTD on layers 1..22 (0-based; the first and last layer always see the full sequence):
#     each of those layers keeps k tokens per sample, k growing 128 -> 2048 in steps of 16 over the
#     first LTD_REQUIRE_STEPS iterations, then every layer runs at full length;
#   * the learning rate's warmup and decay, and the training budget, are counted in layer-averaged
#     tokens, gbs x (2048 x 2 + k x 22) / 24 per iteration (Megatron-DeepSpeed's "tokens" counter for
#     random-LTD): an iteration that drops tokens moves the schedule less.
#
# BUDGET selects the paper's three settings (layer-averaged tokens, GLOBAL_BATCH 512):
#   BUDGET  LR     ramp (iterations)  iterations to the budget   baseline iterations, same tokens
#   300B    2e-4   200,000            372,757                    286,103
#   200B    3e-4   133,333            248,505                    190,735
#   150B    4e-4   100,000            186,379                    143,052
# 300B is the run that beats the 300B baseline; 200B (2/3 of the layer-averaged tokens) is the one
# that matches it ("33% compute saved"). Warmup is 3B layer-averaged tokens in every setting, which
# ends near iteration 16.6k (300B) instead of 2.9k: the first iterations process ~7x fewer tokens.
#
# Token arithmetic per iteration (GLOBAL_BATCH 512, sequence 2048, 24 layers, 22 dropping):
#   raw tokens                  512 x 2048                        = 1,048,576
#   layer-tokens at k           512 x (2048 x 2 + k x 22)         = 3,538,944 at k 128 .. 25,165,824 at k 2048
#   layer-averaged tokens       layer-tokens / 24                 = 147,456 .. 1,048,576
#   budget                      --train-layer-tokens = BUDGET x 24 (300B -> 7,200,000,000,000)
# The budget flag is all the trainer needs: the kept length is a pure function of the step, so it
# knows the exact run (372,757 iterations at 300B), sizes the dataset for it, and ends the cosine
# decay at MIN_LR on the run's last iteration (megatron/training/lr_schedule.py, exact_run). Set
# DECAY_TOKENS only to decay over another length.
#
# Run (activate the environment first: source scripts/setup_env.sh):
#   single node, 8 GPUs:
#     DATA_PATH=/data/pile_text_document VOCAB_FILE=gpt2-vocab.json MERGE_FILE=gpt2-merges.txt \
#       BUDGET=300B bash examples/gpt/pretrain_gpt_1.3b_random_ltd.sh
#   node k of N: NNODES=N NODE_RANK=k MASTER_ADDR=node0 ... bash examples/gpt/pretrain_gpt_1.3b_random_ltd.sh
#   SLURM: MODE=random_ltd BUDGET=200B sbatch examples/gpt/slurm_pretrain_gpt_1.3b.sbatch
#   print the command without running it: DRY_RUN=1 ... bash examples/gpt/pretrain_gpt_1.3b_random_ltd.sh
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

# ---- budget, learning rate and kept-length ramp, in layer-averaged tokens
BUDGET="${BUDGET:-300B}"
case "$BUDGET" in
    300B) BUDGET_TOKENS=300000000000; DEFAULT_LR=2e-4; DEFAULT_RAMP=200000 ;;
    200B) BUDGET_TOKENS=200000000000; DEFAULT_LR=3e-4; DEFAULT_RAMP=133333 ;;
    150B) BUDGET_TOKENS=150000000000; DEFAULT_LR=4e-4; DEFAULT_RAMP=100000 ;;
    *) echo "$(basename "$0"): BUDGET must be 300B, 200B or 150B (got $BUDGET)" >&2; exit 1 ;;
esac
LR="${LR:-$DEFAULT_LR}"
MIN_LR="${MIN_LR:-1e-6}"
WARMUP_TOKENS="${WARMUP_TOKENS:-3000000000}"  # 3B layer-averaged tokens
DECAY_TOKENS="${DECAY_TOKENS:-}"              # empty: the whole run (the trainer computes it exactly)
TRAIN_LAYER_TOKENS="${TRAIN_LAYER_TOKENS:-$((BUDGET_TOKENS * NUM_LAYERS))}"
SEED="${SEED:-1234}"

# ---- random-LTD
LTD_LAYERS="${LTD_LAYERS:-}"                  # e.g. "1 2 3" or "1,2,3"; empty: all but the first and the last
LTD_LAYERS="${LTD_LAYERS//,/ }"
LTD_MIN_SEQ="${LTD_MIN_SEQ:-128}"
LTD_MAX_SEQ="${LTD_MAX_SEQ:-$SEQ_LEN}"
LTD_SEQ_STEP="${LTD_SEQ_STEP:-16}"
LTD_REQUIRE_STEPS="${LTD_REQUIRE_STEPS:-$DEFAULT_RAMP}"

# ---- data and tokenizer
DATA_PATH="${DATA_PATH:-}"
SPLIT="${SPLIT:-949,50,1}"
DATA_CACHE_PATH="${DATA_CACHE_PATH:-}"
NUM_WORKERS="${NUM_WORKERS:-2}"
TOKENIZER_MODEL="${TOKENIZER_MODEL:-}"
VOCAB_FILE="${VOCAB_FILE:-}"
MERGE_FILE="${MERGE_FILE:-}"

# ---- outputs
RUN_NAME="${RUN_NAME:-gpt_1.3b_random_ltd_$BUDGET}"
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
    --train-layer-tokens "$TRAIN_LAYER_TOKENS" --seed "$SEED" --bf16
    --optimizer adam --adam-beta1 0.9 --adam-beta2 0.95 --adam-eps 1e-8
    --weight-decay 0.1 --clip-grad 1.0
)
LR_ARGS=(
    --lr "$LR" --min-lr "$MIN_LR" --lr-decay-style cosine --lr-schedule-unit layer-averaged-tokens
    --lr-warmup-tokens "$WARMUP_TOKENS"
)
[ -n "$DECAY_TOKENS" ] && LR_ARGS+=(--lr-decay-tokens "$DECAY_TOKENS")
LTD_ARGS=(
    --random-ltd --random-ltd-min-seq "$LTD_MIN_SEQ" --random-ltd-max-seq "$LTD_MAX_SEQ"
    --random-ltd-seq-step "$LTD_SEQ_STEP" --random-ltd-require-steps "$LTD_REQUIRE_STEPS"
)
# shellcheck disable=SC2206  # a list of layer numbers
[ -n "$LTD_LAYERS" ] && LTD_ARGS+=(--random-ltd-layers $LTD_LAYERS)

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
