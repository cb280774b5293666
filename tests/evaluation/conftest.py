"""Fixtures for the evaluation tests: a tiny random-LTD-trained checkpoint (written by a gloo
process in the trainer's format), the in-process TP=1 runtime, and small local data files."""

import json
import os
import warnings

import pytest

# lm-eval's `datasets` must never try the network: every task here reads local files.
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
warnings.filterwarnings("ignore", message=".*Transformer Engine.*")
warnings.filterwarnings("ignore", message=".*Apex is not installed.*")


@pytest.fixture(scope="package")
def eval_runtime():
    """torch.distributed + megatron-core groups at TP=1 in this process (CPU mode), undone after
    the evaluation tests so later tests start from a clean process state."""
    import torch
    from megatron.runtime import cpu_compat

    from megatron.evaluation.checkpoint_loader import ensure_inference_runtime
    from megatron.runtime.device import destroy_distributed

    was_initialized = torch.distributed.is_initialized()
    was_cpu_mode = cpu_compat.is_enabled()
    info = ensure_inference_runtime(force_cpu=True)
    yield info
    if not was_initialized:
        destroy_distributed()
    if not was_cpu_mode:
        cpu_compat.disable()


@pytest.fixture(scope="package")
def trained(tmp_path_factory):
    """A 3-layer GPT trained 120 steps with random-LTD on layer 1 (TP=1), saved by the trainer's
    Saver; (directory, the weights it saved)."""
    from tests.evaluation.ckpt_utils import body_train_and_save
    from tests.multirank import run_multirank

    out = str(tmp_path_factory.mktemp("ckpt_tp1"))
    result = run_multirank(body_train_and_save, world_size=1, kwargs={"out_dir": out, "steps": 120, "ltd_layers": [1]})
    return out, result[0]["state"]


@pytest.fixture(scope="package")
def trained_ckpt(trained):
    return trained[0]


@pytest.fixture(scope="package")
def loaded(eval_runtime, trained_ckpt):
    from megatron.evaluation.checkpoint_loader import load_for_inference

    return load_for_inference(trained_ckpt)


@pytest.fixture(scope="package")
def lambada_file(tmp_path_factory):
    from tests.evaluation.ckpt_utils import make_corpus

    path = tmp_path_factory.mktemp("data") / "lambada.jsonl"
    texts = make_corpus(24, seed=123)
    # A few short passages and one far longer than the 64-token window (left truncation).
    texts += ["the cat went to the garden", "in the river the owl", " ".join(make_corpus(3, seed=5))]
    with open(path, "w") as f:
        for t in texts:
            f.write(json.dumps({"text": t, "id": len(t)}) + "\n")
    return str(path)


@pytest.fixture(scope="package")
def text_file(tmp_path_factory):
    from tests.evaluation.ckpt_utils import make_corpus

    path = tmp_path_factory.mktemp("data") / "heldout.txt"
    path.write_text("\n".join(make_corpus(8, seed=77)) + "\n")
    return str(path)
