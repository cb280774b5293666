#!/usr/bin/env python
"""Zero-shot evaluation of a GPT checkpoint: LAMBADA accuracy or WikiText-style perplexity.

    python tools/evaluate_zeroshot.py --task lambada  --load CKPT --data-path lambada_test.jsonl
    python tools/evaluate_zeroshot.py --task wikitext --load CKPT --data-path wiki.test.tokens --overlapping-eval 256

Any TP/PP layout loads (merged to TP=1/PP=1 in memory). For lm-evaluation-harness tasks use
``python -m megatron.evaluation.lm_eval_cli --model megatron-ltd ...`` (docs/evaluation.md).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from megatron.evaluation.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
