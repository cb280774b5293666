#!/usr/bin/env bash
# The 19 zero-shot tasks of the random-LTD GPT-3 1.3B table, through lm-evaluation-harness.
#   examples/eval/paper_tasks.sh CHECKPOINT_DIR [OUTPUT_DIR] [extra lm_eval flags]
# The list is the one of Megatron-DeepSpeed's examples_deepspeed/data_efficiency/gpt/eval/
# ds_evalharness_parallel_run.sh (without its extra wikitext), in lm-eval 0.4 names; what is and
# is not verified about it: docs/evaluation.md. lm-eval comes with the default setup (pinned in
# constraints.txt); the task datasets must be in the Hugging Face cache (or HF_DATASETS_OFFLINE=0
# and network access the first time).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
CKPT="${1:?usage: $0 CHECKPOINT_DIR [OUTPUT_DIR] [lm_eval flags]}"; OUT="${2:-eval_results/paper_tasks}"
shift $(( $# >= 2 ? 2 : 1 ))
# shellcheck disable=SC1091
source "$ROOT/scripts/setup_env.sh"
TASKS="hellaswag,lambada_openai,triviaqa,webqs,winogrande,piqa,arc_challenge,arc_easy,openbookqa,race,boolq,copa,rte,wsc,multirc,record,anli_r1,anli_r2,anli_r3"
python -m megatron.evaluation.lm_eval_cli run --model megatron-ltd \
    --model_args "load=$CKPT,dtype=${DTYPE:-float32}" --batch_size "${MBS:-8}" \
    --tasks "$TASKS" --num_fewshot 0 --output_path "$OUT" "$@"
