"""lm-evaluation-harness's own command line with the ``megatron-ltd`` model available.

    python -m megatron.evaluation.lm_eval_cli run --model megatron-ltd \\
        --model_args load=CKPT --batch_size 8 --tasks piqa,hellaswag --output_path results/

Everything after the module name is lm_eval's CLI (``lm_eval --help``). The model is registered
lazily, so ``--help`` and ``ls tasks`` do not load torch models.
"""

from __future__ import annotations

import sys
from typing import Optional, Sequence


def register() -> None:
    """Make ``--model megatron-ltd`` resolvable without importing the adapter yet."""
    from lm_eval.api.registry import model_registry

    target = "megatron.evaluation.lm_eval_adapter:MegatronLTDLM"
    for name in ("megatron-ltd", "megatron_ltd"):
        if name not in model_registry:
            model_registry.register(name, target=target)


def check_model_args(argv: Sequence[str]) -> Optional[str]:
    """``--model_args load=CKPT,...``: the checkpoint directory is checked before lm_eval starts
    (lm_eval would load its tasks first); the problem in one line, or None."""
    from megatron.data import paths

    for i, arg in enumerate(argv):
        value = argv[i + 1] if arg == "--model_args" and i + 1 < len(argv) else \
            arg.split("=", 1)[1] if arg.startswith("--model_args=") else None
        for item in (value or "").split(","):
            key, _, path = item.partition("=")
            if key.strip() == "load" and path:
                try:
                    paths.check_input_dir("--model_args load", path, "a checkpoint directory written by --save")
                except paths.PathError as e:
                    return str(e)
    return None


def main(argv: Optional[Sequence[str]] = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    problem = check_model_args(argv)
    if problem:
        print(f"lm_eval_cli: error: {problem}", file=sys.stderr)
        sys.exit(2)
    try:
        from lm_eval.__main__ import cli_evaluate
    except ImportError:
        sys.exit("lm-evaluation-harness is not installed: pip install -e .[eval]  (lm-eval>=0.4,<0.5)")
    register()
    sys.argv = [sys.argv[0]] + argv
    cli_evaluate()


if __name__ == "__main__":
    main()
