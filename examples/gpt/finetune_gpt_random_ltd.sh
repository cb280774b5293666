#!/usr/bin/env bash
# Finetune a pretrained GPT checkpoint on a new corpus, without and with random-LTD, and compare
# the held-out perplexity of the starting checkpoint and of both finetuned ones.
#
#   PRETRAINED=runs/quickstart/baseline/checkpoints \
#   TRAIN_JSONL=my_corpus/train.jsonl HELDOUT_TXT=my_corpus/test.txt \
#   bash examples/gpt/finetune_gpt_random_ltd.sh
#
# 1. reads the model flags and tokenizer from the checkpoint's metadata (the finetuning model must
#    be the pretrained one), tokenizes TRAIN_JSONL with that tokenizer (tools/preprocess_data.py);
# 2. finetunes twice from the same weights (pretrain_gpt.py --finetune --load PRETRAINED: weights
#    only, counters and optimizer fresh), the same steps and LR schedule on layer-tokens:
#      baseline     every layer sees the whole sequence;
#      random_ltd   layers but the first and last keep LTD_MIN_SEQ tokens at first, ramping to the
#                   full sequence over LTD_RAMP_FRACTION of the steps (the MSLG schedule);
# 3. evaluates held-out perplexity of the three checkpoints with tools/evaluate_zeroshot.py
#    (--task perplexity) and prints them side by side (results in OUTPUT_DIR/eval_*.json).
#
# Every variable below can be set from the environment; EXTRA_ARGS goes to both finetuning runs.
set -euo pipefail

ROOT="${ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}"
PY="${PYTHON:-python}"
die() { echo "$(basename "$0"): $*" >&2; exit 1; }

PRETRAINED="${PRETRAINED:-}"                  # checkpoint directory (any TP/PP layout: merge it first if not TP=1/PP=1)
TRAIN_JSONL="${TRAIN_JSONL:-}"                # the new corpus, one {"text": ...} per line
HELDOUT_TXT="${HELDOUT_TXT:-}"                # held-out raw text of the new corpus
OUTPUT_DIR="${OUTPUT_DIR:-$ROOT/runs/finetune}"
MODES="${MODES:-baseline random_ltd}"
TRAIN_ITERS="${TRAIN_ITERS:-100}"
MICRO_BATCH="${MICRO_BATCH:-8}"
GLOBAL_BATCH="${GLOBAL_BATCH:-16}"
LR="${LR:-3e-4}"                              # lower than pretraining: the weights are already good
MIN_LR="${MIN_LR:-3e-5}"
WARMUP_FRACTION="${WARMUP_FRACTION:-0.05}"
LTD_MIN_SEQ="${LTD_MIN_SEQ:-}"                # default: half the sequence
LTD_SEQ_STEP="${LTD_SEQ_STEP:-8}"
LTD_RAMP_FRACTION="${LTD_RAMP_FRACTION:-0.7}"
SEED="${SEED:-1234}"
EVAL_MAX_TOKENS="${EVAL_MAX_TOKENS:-}"        # cap the held-out tokens evaluated (default: all)
EXTRA_ARGS="${EXTRA_ARGS:-}"

[ -n "$PRETRAINED" ] && [ -d "$PRETRAINED" ] || die "set PRETRAINED to a checkpoint directory (got '${PRETRAINED}')"
[ -n "$TRAIN_JSONL" ] && [ -f "$TRAIN_JSONL" ] || die "set TRAIN_JSONL to the new corpus (JSONL with a \"text\" field; got '${TRAIN_JSONL}')"
[ -n "$HELDOUT_TXT" ] && [ -f "$HELDOUT_TXT" ] || die "set HELDOUT_TXT to held-out text of the new corpus (got '${HELDOUT_TXT}')"
mkdir -p "$OUTPUT_DIR/data"

# 1. The checkpoint's model flags (as command-line flags) and tokenizer flags, from its metadata.
FLAGS_FILE="$OUTPUT_DIR/checkpoint_flags.txt"
"$PY" - "$PRETRAINED" > "$FLAGS_FILE" <<'EOF' || die "cannot read the model flags of $PRETRAINED (see above)"
import dataclasses, sys
sys.path.insert(0, __import__("os").environ.get("ROOT", "."))
from megatron.evaluation.checkpoint_loader import read_metadata, resolve_iteration
from megatron.training.config import ModelConfig

load = sys.argv[1]
meta = read_metadata(load, resolve_iteration(load))
flags, defaults = meta["model_flags"], ModelConfig()
words = []
for f in dataclasses.fields(ModelConfig):
    value = flags.get(f.name)
    flag = "--" + f.name.replace("_", "-")
    if value is None or (value == getattr(defaults, f.name) and f.name != "max_position_embeddings"):
        continue
    words += [flag] if value is True else [] if value is False else [flag, str(value)]
tok = meta.get("tokenizer") or {}
print(" ".join(words))
print(tok.get("tokenizer_type", ""))
print(tok.get("tokenizer_model") or "")
print(flags["seq_length"])
EOF
MODEL_ARGS=$(sed -n 1p "$FLAGS_FILE")
TOKENIZER_TYPE=$(sed -n 2p "$FLAGS_FILE")
TOKENIZER_MODEL="${TOKENIZER_MODEL:-$(sed -n 3p "$FLAGS_FILE")}"
SEQ_LEN=$(sed -n 4p "$FLAGS_FILE")
[ -n "$TOKENIZER_TYPE" ] || die "$PRETRAINED records no tokenizer; cannot tokenize the new corpus consistently"
TOK_ARGS=(--tokenizer-type "$TOKENIZER_TYPE")
[ -n "$TOKENIZER_MODEL" ] && TOK_ARGS+=(--tokenizer-model "$TOKENIZER_MODEL")
LTD_MIN_SEQ="${LTD_MIN_SEQ:-$(( SEQ_LEN / 2 ))}"
LTD_REQUIRE_STEPS=$("$PY" -c "print(max(1, round($TRAIN_ITERS * $LTD_RAMP_FRACTION)))")

echo "=== tokenizing $TRAIN_JSONL ($TOKENIZER_TYPE)"
DATA_PREFIX="$OUTPUT_DIR/data/finetune"
"$PY" "$ROOT/tools/preprocess_data.py" --input "$TRAIN_JSONL" --output-prefix "$DATA_PREFIX" \
    "${TOK_ARGS[@]}" --append-eod --workers 1
DATA_PREFIX="${DATA_PREFIX}_text_document"

# 2. Finetune, once per mode, from the same pretrained weights.
for MODE in $MODES; do
    ARGS=(
        $MODEL_ARGS "${TOK_ARGS[@]}"
        --finetune --load "$PRETRAINED" --save "$OUTPUT_DIR/$MODE/checkpoints"
        --data-path "$DATA_PREFIX" --split 98,2,0
        --micro-batch-size "$MICRO_BATCH" --global-batch-size "$GLOBAL_BATCH" --train-iters "$TRAIN_ITERS"
        --lr "$LR" --min-lr "$MIN_LR" --lr-decay-style cosine --lr-schedule-unit layer-tokens
        --lr-warmup-fraction "$WARMUP_FRACTION" --weight-decay 0.01 --clip-grad 1.0 --seed "$SEED"
        --log-interval 10 --eval-interval "$TRAIN_ITERS" --eval-iters 1 --no-progress
        --metrics-file "$OUTPUT_DIR/$MODE/metrics.jsonl"
    )
    case "$MODE" in
        baseline) ;;
        random_ltd) ARGS+=(--random-ltd --random-ltd-min-seq "$LTD_MIN_SEQ" --random-ltd-seq-step "$LTD_SEQ_STEP"
                           --random-ltd-require-steps "$LTD_REQUIRE_STEPS") ;;
        *) die "MODES may hold baseline and random_ltd (got $MODE)" ;;
    esac
    # shellcheck disable=SC2206  # EXTRA_ARGS is a list of words
    ARGS+=($EXTRA_ARGS)
    echo "=== finetuning: $MODE"
    "$PY" "$ROOT/pretrain_gpt.py" "${ARGS[@]}"
done

# 3. Held-out perplexity of the starting checkpoint and of each finetuned one.
EVAL_ARGS=(--task perplexity --data-path "$HELDOUT_TXT" --no-progress)
[ -n "$EVAL_MAX_TOKENS" ] && EVAL_ARGS+=(--max-tokens "$EVAL_MAX_TOKENS")
[ -n "$TOKENIZER_MODEL" ] && [ "$TOKENIZER_TYPE" = SentencePieceTokenizer ] && EVAL_ARGS+=(--tokenizer-model "$TOKENIZER_MODEL")
declare -A CKPTS=([pretrained]="$PRETRAINED")
NAMES="pretrained"
for MODE in $MODES; do CKPTS[$MODE]="$OUTPUT_DIR/$MODE/checkpoints"; NAMES="$NAMES $MODE"; done
for NAME in $NAMES; do
    echo "=== held-out perplexity: $NAME"
    "$PY" "$ROOT/tools/evaluate_zeroshot.py" --load "${CKPTS[$NAME]}" "${EVAL_ARGS[@]}" \
        --results-json "$OUTPUT_DIR/eval_$NAME.json"
done
"$PY" - "$OUTPUT_DIR" $NAMES <<'EOF'
import json, os, sys
out, names = sys.argv[1], sys.argv[2:]
res = {n: json.load(open(os.path.join(out, f"eval_{n}.json"))) for n in names}
print(f"\n=== held-out token perplexity ({res[names[0]]['scored_tokens'] if 'scored_tokens' in res[names[0]] else '?'} tokens)")
for n in names:
    print(f"{n:12} {res[n]['token_ppl']:10.3f}")
json.dump({n: res[n]["token_ppl"] for n in names}, open(os.path.join(out, "summary.json"), "w"), indent=1)
EOF
