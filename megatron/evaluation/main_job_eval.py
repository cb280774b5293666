"""The main job's final step: evaluate several checkpoints (baseline, random-LTD) on the same
held-out text and print them side by side.

    from megatron.evaluation.main_job_eval import evaluate_checkpoints_side_by_side
    evaluate_checkpoints_side_by_side({"baseline": "runs/base", "random-LTD": "runs/ltd"},
                                      paths["test_txt"], paths["lambada_jsonl"], "runs/eval.json")

Work is capped (tokens of text, LAMBADA examples) so a small CPU model finishes in seconds.
"""

from __future__ import annotations

import gc
import os
import time
from typing import Any, Dict, Mapping, Optional

from megatron.evaluation.checkpoint_loader import load_for_inference
from megatron.evaluation.results import format_side_by_side, write_json
from megatron.evaluation.tasks import evaluate_lambada, evaluate_perplexity

__all__ = ["evaluate_checkpoints_side_by_side"]


def evaluate_checkpoints_side_by_side(
    ckpt_dirs: Mapping[str, str],
    test_txt: str,
    lambada_jsonl: str,
    out_json: str,
    max_tokens: Optional[int] = 16384,
    max_lambada_examples: Optional[int] = 200,
    batch_size: int = 8,
    stride: Optional[int] = None,
    seq_length: Optional[int] = None,
    force_cpu: bool = False,
    progress: bool = False,
    verbose: bool = True,
) -> Dict[str, Any]:
    """Perplexity of ``test_txt`` and LAMBADA-style last-word accuracy of ``lambada_jsonl`` for
    each named checkpoint (latest iteration). Writes ``out_json`` and returns::

        {"models": {name: {"checkpoint", "iteration", "perplexity": {...}, "lambada": {...}}},
         "table": "<side-by-side table>", "settings": {...}}

    ``max_tokens`` / ``max_lambada_examples`` cap the work (None = everything); ``stride`` is the
    perplexity window stride (default half the window, so every token has context)."""
    if not ckpt_dirs:
        raise ValueError("ckpt_dirs is empty: name at least one checkpoint directory")
    models: Dict[str, Any] = {}
    t_start = time.time()
    for name, path in ckpt_dirs.items():
        t0 = time.time()
        loaded = load_for_inference(path, seq_length=seq_length, force_cpu=force_cpu)
        seq = loaded.seq_length
        ppl = evaluate_perplexity(loaded, test_txt, stride=stride or max(1, seq // 2), batch_size=batch_size,
                                  max_tokens=max_tokens, progress=progress)
        lam = evaluate_lambada(loaded, lambada_jsonl, batch_size=batch_size, limit=max_lambada_examples,
                               progress=progress)
        models[name] = {"checkpoint": os.path.abspath(path), "iteration": loaded.iteration,
                        "perplexity": ppl, "lambada": lam, "seconds": round(time.time() - t0, 2)}
        del loaded
        gc.collect()
    table = format_side_by_side({n: {"held-out text": m["perplexity"], "last word": m["lambada"]}
                                 for n, m in models.items()})
    result = {
        "models": models,
        "table": table,
        "settings": {"test_txt": os.path.abspath(test_txt), "lambada_jsonl": os.path.abspath(lambada_jsonl),
                     "max_tokens": max_tokens, "max_lambada_examples": max_lambada_examples,
                     "stride": stride, "seq_length": seq_length},
        "seconds": round(time.time() - t_start, 2),
    }
    write_json(out_json, result)
    if verbose:
        print("zero-shot evaluation on held-out text:")
        print(table)
        print(f"(written to {out_json}; {result['seconds']} s)")
    return result
