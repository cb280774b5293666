#!/usr/bin/env bash
# One prepared GPU check (about 8 minutes on one H100/H200, 9.5 at most: a budget every step's
# timeout is cut to): the GPU tests; the trainer's step at the GPT-1.3B shape (micro-batch 4:
# baseline, keep 0.5 and 0.25, eager and with --compile; wall ms, kernel ms, launches, host-bound);
# 12 iterations of the 1.3B random-LTD launcher's ramp (per-step times); the model-step benchmark
# (MFU against 989 TFLOP/s bf16 dense peak); the gather/scatter cost per layer (torch pair, route,
# Triton); and the checkpoint check (tools/checkpoint_check.py: bf16 random-LTD saved sync and
# async, --load, --finetune).
#
#   tools/gpu_check.sh              # on the GPU machine, from the repository root
#   tools/gpu_check.sh --dry-run    # every step at a tiny shape on CPU (also: GPU_CHECK_DRY=1)
#
# Writes $OUT/gpu_check.json (one entry per step: command, exit code, seconds, the step's own JSON)
# and $OUT/gpu_check.log (everything printed); OUT defaults to ./gpu_check_out. Each step has its
# own timeout (seconds: GPU_CHECK_T_TESTS, _TRAIN, _COMPILE, _BENCH, _RECIPE, _CKPT), cut to what is
# left of GPU_CHECK_BUDGET (570 s); a step with under 20 s left is skipped and recorded as such.
# On a bare machine (no network) the megatron-core wheel travels in .whl/ and is installed from
# there into /tmp/site when megatron.core does not import; carry pytest's wheels the same way
# (`pip download pytest -d .whl`) if the machine has no pytest.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
DRY=${GPU_CHECK_DRY:-0}
for arg in "$@"; do
    case $arg in
        --dry-run) DRY=1 ;;
        -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
        *) echo "gpu_check.sh: unknown argument $arg (use --dry-run)" >&2; exit 2 ;;
    esac
done
OUT=${OUT:-$ROOT/gpu_check_out}
rm -rf "$OUT/steps"  # no stale result from an earlier run may stand in for a failed step
mkdir -p "$OUT/steps"
LOG=$OUT/gpu_check.log
: > "$LOG"
PY=${PYTHON:-python3}

if ! "$PY" -c "import megatron.core" >/dev/null 2>&1 && ls .whl/*.whl >/dev/null 2>&1; then
    echo "[gpu_check] installing the carried wheels from .whl/ into /tmp/site" | tee -a "$LOG"
    "$PY" -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl >>"$LOG" 2>&1
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH}

if [ "$DRY" = 1 ]; then
    export MEGATRON_LTD_FORCE_CPU=1 OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
    T_TESTS=${GPU_CHECK_T_TESTS:-300} T_BENCH=${GPU_CHECK_T_BENCH:-240} T_RECIPE=${GPU_CHECK_T_RECIPE:-240}
    T_CKPT=${GPU_CHECK_T_CKPT:-240} T_TRAIN=${GPU_CHECK_T_TRAIN:-240} T_COMPILE=${GPU_CHECK_T_COMPILE:-300}
    BUDGET=${GPU_CHECK_BUDGET:-1500}
    CKPT_SHAPE=(--num-layers 3 --hidden-size 32 --num-attention-heads 4 --seq-length 32 --micro-batch-size 2
                --global-batch-size 4 --vocab-size 256 --lr 1e-2 --min-lr 1e-3 --random-ltd-min-seq 8
                --random-ltd-seq-step 8 --random-ltd-require-steps 6 --cpu)
    OPS_SHAPE=(--smoke --cpu)
    SHAPE=(--num-layers 4 --hidden-size 64 --num-attention-heads 4 --seq-length 64 --micro-batch-size 2
           --vocab-size 256 --warmup 1 --iters 2 --cpu)
    TRAIN_SHAPE=(--num-layers 4 --hidden-size 32 --num-attention-heads 4 --seq-length 64 --micro-batch-size 2
                 --global-batch-size 4 --vocab-size 128 --keep 0.5 0.25 --warmup 1 --blocks 1 --iters-per-block 1 --cpu)
    RECIPE_SHAPE=(--vocab-size 256 --num-layers 4 --hidden-size 64 --num-attention-heads 4 --seq-length 64
                  --micro-batch-size 2 --global-batch-size 4 --random-ltd-min-seq 16 --random-ltd-require-steps 10 --cpu)
else
    T_TESTS=${GPU_CHECK_T_TESTS:-150} T_BENCH=${GPU_CHECK_T_BENCH:-65} T_RECIPE=${GPU_CHECK_T_RECIPE:-90}
    T_CKPT=${GPU_CHECK_T_CKPT:-100} T_TRAIN=${GPU_CHECK_T_TRAIN:-120} T_COMPILE=${GPU_CHECK_T_COMPILE:-180}
    # Every step's timeout is cut to what is left of this, so the whole check fits one 10-minute
    # device call with room for the wheel install (typical total about 8 minutes).
    BUDGET=${GPU_CHECK_BUDGET:-570}
    # ~200M parameters: each checkpoint ~2.9 GB (bf16 weights, fp32 main copies and Adam moments).
    CKPT_SHAPE=(--num-layers 12 --hidden-size 1024 --num-attention-heads 16 --seq-length 1024 --micro-batch-size 4
                --global-batch-size 8 --vocab-size 50257 --lr 3e-4 --min-lr 3e-5 --random-ltd-min-seq 256
                --random-ltd-seq-step 128 --random-ltd-require-steps 6)
    SHAPE=(--num-layers 24 --hidden-size 2048 --num-attention-heads 16 --seq-length 2048 --micro-batch-size 8
           --vocab-size 50304 --warmup 3 --iters 10)
    # The trainer's own step at the 1.3B launcher's micro-batch: three trainers with Adam state in one
    # process (about 75 GB), so eager and --compile run as two steps.
    TRAIN_SHAPE=(--num-layers 24 --hidden-size 2048 --num-attention-heads 16 --seq-length 2048 --micro-batch-size 4
                 --global-batch-size 16 --vocab-size 50304 --keep 0.5 0.25 --warmup 2 --blocks 2 --iters-per-block 2)
    # examples/gpt/pretrain_gpt_1.3b_random_ltd.sh's recipe, global batch shrunk to one GPU and a
    # 10-step ramp so several kept lengths show up.
    RECIPE_SHAPE=(--vocab-size 50257 --num-layers 24 --hidden-size 2048 --num-attention-heads 16 --seq-length 2048
                  --micro-batch-size 4 --global-batch-size 16 --bf16 --random-ltd-min-seq 128 --random-ltd-require-steps 10)
    OPS_SHAPE=(--ratios 0.75 0.5 0.25 0.125)
fi
START=$(date +%s)

run_step() {  # name timeout_s command...
    local name=$1 limit=$2; shift 2
    local left=$(( BUDGET - ($(date +%s) - START) ))
    if [ "$left" -lt 20 ]; then
        echo "=== [$name] skipped: ${left}s left of the ${BUDGET}s budget" | tee -a "$LOG"
        printf '%s\t%s\t%s\t%s\n' "$name" "-2" "0" "skipped: budget spent" >> "$OUT/steps/index.tsv"
        return
    fi
    [ "$limit" -gt "$left" ] && limit=$left
    echo "=== [$name] (timeout ${limit}s) $*" | tee -a "$LOG"
    local t0 rc
    t0=$(date +%s.%N)
    timeout --kill-after=10 "$limit" "$@" >>"$LOG" 2>&1
    rc=$?
    local secs
    secs=$("$PY" -c "import time; print(round(time.time() - $t0, 1))")
    echo "=== [$name] exit $rc after ${secs}s" | tee -a "$LOG"
    local cmd="$*"
    printf '%s\t%s\t%s\t%s\n' "$name" "$rc" "$secs" "${cmd//[$'\t\n']/ }" >> "$OUT/steps/index.tsv"
}
: > "$OUT/steps/index.tsv"

run_step environment 30 "$PY" -c "
import json, platform, torch
info = {'python': platform.python_version(), 'torch': torch.__version__, 'cuda': torch.version.cuda,
        'gpu': torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
try:
    import triton; info['triton'] = triton.__version__
except Exception as e:
    info['triton'] = None
import megatron.core; info['megatron_core'] = getattr(megatron.core, '__version__', '?')
print(info); json.dump(info, open('$OUT/steps/environment.json', 'w'))
"
if "$PY" -c "import pytest" >/dev/null 2>&1; then
    # The GPU tests (tests/test_gpu.py: random-LTD GPT vs CPU at k < s, Triton kernels, the trainer
    # on one GPU over NCCL with a checkpoint saved and loaded), how ranks start where CUDA exists
    # (tests/test_multirank_start.py), the collective layer on NCCL and in CPU mode on this GPU
    # machine, and the CUDA paths of the random-LTD ops. Every selected test must pass here.
    run_step gpu_tests "$T_TESTS" "$PY" -m pytest -q -p no:cacheprovider tests/test_gpu.py tests/test_multirank_start.py \
        tests/test_collectives.py tests/ltd/test_route.py tests/ltd/test_sampler.py \
        -k "gpu or cuda or route or kernel or nccl"
else
    echo "=== [gpu_tests] skipped: pytest is not installed (carry its wheels in .whl/)" | tee -a "$LOG"
    printf 'gpu_tests\t-1\t0\tpytest not installed\n' >> "$OUT/steps/index.tsv"
fi
# The trainer's step, then the ramp: what random-LTD saves in the step users run (issue 23).
run_step train_step "$T_TRAIN" "$PY" tools/benchmark_train_step.py "${TRAIN_SHAPE[@]}" \
    --json-out "$OUT/steps/train_step.json"
run_step train_step_compile "$T_COMPILE" "$PY" tools/benchmark_train_step.py "${TRAIN_SHAPE[@]}" \
    --json-out "$OUT/steps/train_step_compile.json" --extra --compile
run_step recipe_1.3b "$T_RECIPE" "$PY" pretrain_gpt.py --mock-data "${RECIPE_SHAPE[@]}" --init-method-std 0.013 \
    --lr 2e-4 --min-lr 1e-6 --adam-beta2 0.95 --weight-decay 0.1 --clip-grad 1.0 --train-iters 12 --random-ltd \
    --log-interval 1 --eval-iters 0 --no-progress --metrics-file "$OUT/steps/recipe_metrics.jsonl"
run_step bench_torch "$T_BENCH" "$PY" tools/benchmark_gpt_step.py "${SHAPE[@]}" --keep 1.0 0.75 0.5 0.25 \
    --kernel torch --json-out "$OUT/steps/bench_torch.json"
run_step ops "$((T_BENCH / 2))" "$PY" tools/benchmark_random_ltd.py "${OPS_SHAPE[@]}" --json-out "$OUT/steps/ops.json"
run_step checkpoints "$T_CKPT" "$PY" tools/checkpoint_check.py --mock-data "${CKPT_SHAPE[@]}" \
    --dir "${TMPDIR:-/tmp}/gpu_check_ckpt" --json-out "$OUT/steps/checkpoints.json"

"$PY" - "$OUT" "$DRY" <<'EOF' 2>&1 | tee -a "$LOG"
import json, os, sys
out, dry = sys.argv[1], sys.argv[2] == "1"
steps = []
for line in open(os.path.join(out, "steps", "index.tsv")):
    name, rc, secs, cmd = line.rstrip("\n").split("\t", 3)
    step = {"name": name, "rc": int(rc), "seconds": float(secs), "command": cmd, "timed_out": int(rc) in (124, 137)}
    for suffix in (".json",):
        path = os.path.join(out, "steps", name + suffix)
        if os.path.exists(path):
            step["result"] = json.load(open(path))
    if name == "recipe_1.3b":
        path = os.path.join(out, "steps", "recipe_metrics.jsonl")
        rows = [json.loads(l) for l in open(path) if l.strip()] if os.path.exists(path) else []
        step["result"] = {"train": [r for r in rows if r.get("kind") == "train"]}
    steps.append(step)
ok = all(s["rc"] == 0 for s in steps)
json.dump({"dry_run": dry, "ok": ok, "steps": steps}, open(os.path.join(out, "gpu_check.json"), "w"), indent=1)
print(f"[gpu_check] {'all steps passed' if ok else 'FAILED: ' + ', '.join(s['name'] for s in steps if s['rc'])}"
      f" | {os.path.join(out, 'gpu_check.json')}")
sys.exit(0 if ok else 1)
EOF
