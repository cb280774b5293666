"""lm-evaluation-harness's own command line with the ``megatron-ltd`` model available.

    python -m megatron.evaluation.lm_eval_cli run --model megatron-ltd \\
        --model_args load=CKPT --batch_size 8 --tasks piqa,hellaswag --output_path results/

Everything after the module name is lm_eval's CLI (``lm_eval --help``). The model is registered
lazily, so ``--help`` and ``ls tasks`` do not load torch models.
"""

from __future__ import annotations

import sys


def register() -> None:
    """Make ``--model megatron-ltd`` resolvable without importing the adapter yet."""
    from lm_eval.api.registry import model_registry

    target = "megatron.evaluation.lm_eval_adapter:MegatronLTDLM"
    for name in ("megatron-ltd", "megatron_ltd"):
        if name not in model_registry:
            model_registry.register(name, target=target)


def main() -> None:
    try:
        from lm_eval.__main__ import cli_evaluate
    except ImportError:
        sys.exit("lm-evaluation-harness is not installed: pip install -e .[eval]  (lm-eval>=0.4,<0.5)")
    register()
    cli_evaluate()


if __name__ == "__main__":
    main()
