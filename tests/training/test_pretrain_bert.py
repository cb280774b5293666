"""BERT pretraining end to end on CPU: a tiny BERT with random-LTD trains on a real (tiny,
sentence-split, WordPiece) corpus, TP=2 gives the one-process losses from the same weights, the loss pieces and the mock
dataset behave, the BERT-large launchers' commands parse, and bad flags are refused by name."""

from __future__ import annotations

import math
import os
import random
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from megatron.training.arguments import ConfigError, parse_pretrain_config
from tests.multirank import run_multirank
from tests.training.run_utils import read_metrics

ROOT = Path(__file__).resolve().parents[2]
ENTRY = ROOT / "pretrain_bert.py"
BERT = ROOT / "examples" / "bert"
BASELINE = BERT / "pretrain_bert_large_baseline.sh"
RANDOM_LTD = BERT / "pretrain_bert_large_random_ltd.sh"

TINY_BERT = [
    "--num-layers", "4", "--hidden-size", "32", "--num-attention-heads", "4", "--seq-length", "32",
    "--micro-batch-size", "4", "--global-batch-size", "8", "--lr", "3e-3", "--min-lr", "1e-4",
    "--lr-decay-style", "cosine", "--log-interval", "1", "--eval-interval", "1000", "--eval-iters", "1",
    "--no-progress", "--cpu", "--hidden-dropout", "0.0", "--attention-dropout", "0.0",
]
LTD = ["--random-ltd", "--random-ltd-min-seq", "8", "--random-ltd-seq-step", "8", "--random-ltd-require-steps", "12"]
WORDS = ("the cat dog sat on mat ran far away house tree river blue green small large quick brown fox "
         "jumps over lazy model data token layer train drop keep sample").split()


def run_bert(args, nproc=1, check=True, timeout=120, env=None):
    env = dict(os.environ, OMP_NUM_THREADS="1", MEGATRON_LTD_FORCE_CPU="1", PYTHONPATH=str(ROOT), **(env or {}))
    env.pop("MEGATRON_LTD_CRASH_AT", None)
    head = [sys.executable] if nproc == 1 else [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                                 f"--nproc-per-node={nproc}"]
    proc = subprocess.run([*head, str(ENTRY), *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"pretrain_bert.py failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """A WordPiece vocabulary and a --split-sentences corpus of 300 short documents."""
    import json

    from tokenizers import BertWordPieceTokenizer

    from megatron.data.preprocess import PreprocessConfig, preprocess
    from megatron.data.tokenizers import TokenizerConfig

    d = tmp_path_factory.mktemp("bert_corpus")
    rng = random.Random(0)
    texts = [" ".join(" ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 10))).capitalize() + "."
                      for _ in range(rng.randint(2, 5))) for _ in range(300)]
    with open(d / "c.jsonl", "w") as f:
        f.writelines(json.dumps({"text": t}) + "\n" for t in texts)
    wp = BertWordPieceTokenizer(lowercase=True)
    wp.train_from_iterator(texts, vocab_size=200, min_frequency=1)
    vocab = wp.save_model(str(d))[0]
    tok = TokenizerConfig("BertWordPieceLowerCase", vocab_file=vocab)
    out = preprocess(PreprocessConfig(input=str(d / "c.jsonl"), output_prefix=str(d / "c"), tokenizer=tok,
                                      split_sentences=True, progress=False))
    return ["--data-path", out.outputs["text"], "--split", "90,10,0", "--tokenizer-type", "BertWordPieceLowerCase",
            "--vocab-file", vocab, "--data-cache-path", str(d / "cache")]


def _assert_trains(rows, n):
    losses = [r["loss"] for r in rows]
    assert len(losses) == n and all(math.isfinite(v) for v in losses), losses
    head, tail = sum(losses[:4]) / 4, sum(losses[-4:]) / 4
    assert tail < head - 0.1, losses
    kept = [r["kept_length"] for r in rows]
    assert kept[0] == 8 and kept[-1] == 32 and kept == sorted(kept)


@pytest.fixture(scope="module")
def single_run(corpus, tmp_path_factory):
    metrics = str(tmp_path_factory.mktemp("bert1") / "m.jsonl")
    proc = run_bert(TINY_BERT + LTD + corpus + ["--train-iters", "20", "--metrics-file", metrics])
    return read_metrics(metrics), proc.stdout


def test_bert_random_ltd_trains(single_run):
    rows, stdout = single_run
    _assert_trains(rows, 20)
    assert "BERT 4 layers" in stdout and "random-LTD on layers [1, 2]" in stdout
    assert "[valid]" in stdout
    # Both loss terms are logged, and the logged loss is the masked-LM one.
    for r in rows:
        assert r["loss"] == r["lm_loss"] and r["total_loss"] == pytest.approx(r["lm_loss"] + r["sop_loss"], rel=1e-5)


def body_bert_run(ctx, args, metrics):
    """The BERT Trainer in this process group from layout-independent weights; returns the metric
    rows and how many padded positions the micro-batches held."""
    import megatron.training.bert as bert
    from tests.model_utils import fill_params_deterministically
    from tests.training.trainer_utils import run_trainer

    seen = {"padded": 0, "positions": 0, "text": []}
    original = bert.forward_step

    def counting(batch, model, plan, binary_head=True):
        seen["padded"] += int((batch["padding_mask"] != 1).sum())
        seen["positions"] += batch["padding_mask"].numel()
        seen["text"].append(batch["text"].clone())
        return original(batch, model, plan, binary_head)

    bert.forward_step = counting  # bert_task binds the module's forward_step when the Trainer is built

    def same_weights(trainer):
        for chunk in trainer.models:
            fill_params_deterministically(chunk, seed=3)
        trainer.optimizer.reload_model_params()

    run = run_trainer(args, metrics, model_type="bert", on_built=same_weights)
    return {"rows": run["rows"], **seen}


def test_bert_tp2_random_ltd_gives_the_one_process_losses(corpus, tmp_path):
    """From identical weights, over 6 steps with tokens dropped (k = 8, 8, 8, 8, 16, 16 of 32) and
    padded samples: TP=2 gives the one-process masked-LM and sentence-order losses step for step
    (fp32, relative 1e-5: only the reduction order differs; docs/testing.md)."""
    # The padded vocabulary must be the same (its padding rows take part in the softmax): 256 both.
    args = TINY_BERT + LTD + corpus + ["--train-iters", "6", "--eval-iters", "0"]
    one = run_multirank(body_bert_run, world_size=1, kwargs={"args": args + ["--make-vocab-size-divisible-by", "256"],
                                                            "metrics": str(tmp_path / "one.jsonl")},
                        timeout_s=180)[0]
    tp2 = run_multirank(body_bert_run, world_size=2, tp=2, kwargs={"args": args + ["--tensor-model-parallel-size", "2"],
                                                            "metrics": str(tmp_path / "tp2.jsonl")}, timeout_s=180)
    rows = next(r["rows"] for r in tp2 if r["rows"] is not None)
    ref = one["rows"]
    assert [r["kept_length"] for r in ref] == [r["kept_length"] for r in rows] == [8, 8, 8, 8, 16, 16]
    assert one["padded"] > 0.1 * one["positions"]  # the padding mask is gathered with the plan at every layer
    # Every TP rank reads the one-process batches, masked-LM replacement tokens included (they
    # come from the tokenizer's id order, which once differed from process to process).
    for t in tp2:
        assert len(t["text"]) == len(one["text"]) and all(torch.equal(a, b) for a, b in zip(t["text"], one["text"]))
    for key in ("lm_loss", "sop_loss"):
        assert [r[key] for r in rows] == pytest.approx([r[key] for r in ref], rel=1e-5), (key, rows, ref)


# ---------------------------------------------------------------------- pieces, in process
def test_loss_is_masked_lm_mean_plus_sentence_order():
    from megatron.training.bert import bert_loss

    per_token = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    loss_mask = torch.tensor([[1, 0, 1], [0, 0, 1]])
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    labels = torch.tensor([0, 1])
    total, report = bert_loss(loss_mask, labels, (per_token, logits))
    sop = torch.nn.functional.cross_entropy(logits, labels)
    assert list(report) == ["lm loss", "sop loss", "total loss"]
    assert float(report["lm loss"]) == pytest.approx((1 + 3 + 6) / 3)
    assert float(report["sop loss"]) == pytest.approx(float(sop))
    assert float(total) == pytest.approx(10 / 3 + float(sop))
    lm_only, report = bert_loss(loss_mask, None, (per_token, None))
    assert list(report) == ["lm loss"] and float(lm_only) == pytest.approx(10 / 3)


@pytest.mark.parametrize("binary_head", [True, False])
def test_mock_dataset_items(binary_head):
    from megatron.training.bert import MockBERTDataset

    ds = MockBERTDataset(64, 32, 100, seed=5, binary_head=binary_head)
    swapped = []
    for i in range(len(ds)):
        item = ds[i]
        assert set(item) == {"text", "types", "labels", "is_random", "padding_mask", "loss_mask", "truncated"}
        real = int(item["padding_mask"].sum())
        assert item["text"][0] == ds.CLS and item["text"][real - 1] == ds.SEP and (item["text"][real:] == ds.PAD).all()
        lm = item["loss_mask"].astype(bool)
        assert lm.any() and (item["labels"][lm] >= ds.FIRST).all() and (item["labels"][~lm] == -1).all()
        assert set(np.unique(item["types"])) <= ({0, 1} if binary_head else {0})
        swapped.append(item["is_random"])
        np.testing.assert_array_equal(ds[i]["text"], item["text"])  # a pure function of (seed, index)
    assert (0.2 < np.mean(swapped) < 0.8) if binary_head else not any(swapped)


# ---------------------------------------------------------------------- flags
def test_mock_data_no_binary_head_runs(tmp_path):
    metrics = str(tmp_path / "m.jsonl")
    run_bert(TINY_BERT + ["--mock-data", "--vocab-size", "128", "--bert-no-binary-head", "--train-iters", "3",
                          "--eval-iters", "0", "--metrics-file", metrics])
    assert len(read_metrics(metrics)) == 3


def test_sequence_parallel_is_refused_by_the_entry(corpus):
    # WORLD_SIZE as torchrun would set it: the flags are checked before any process group exists.
    proc = run_bert(TINY_BERT + corpus + ["--tensor-model-parallel-size", "2", "--sequence-parallel",
                                          "--train-iters", "2"], check=False, env={"WORLD_SIZE": "2"})
    assert proc.returncode != 0
    assert "pretrain_bert.py: error: --sequence-parallel is not supported for BERT" in proc.stderr


@pytest.mark.parametrize("flag, message", [("--untie-embeddings-and-output-weights", "tied"), ("--swiglu", "GELU")])
def test_bert_only_refusals(flag, message):
    from megatron.training.bert import bert_task

    cfg = parse_pretrain_config(TINY_BERT + ["--mock-data", "--train-iters", "2", flag], model_type="bert", world_size=1)
    with pytest.raises(ConfigError, match=message):
        bert_task(cfg)


# ---------------------------------------------------------------------- launchers
def _dry_run(script, tmp_path, **env):
    vocab, ckpt = tmp_path / "vocab.txt", tmp_path / "ckpt"
    vocab.write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nthe\n")
    ckpt.mkdir(exist_ok=True)
    data = tmp_path / "bert_text_sentence"
    for ext in (".bin", ".idx"):  # the parser checks that the pair exists
        data.with_suffix(ext).write_bytes(b"")
    full = {k: v for k, v in os.environ.items() if k not in ("TP", "PP", "TRAIN_ITERS", "EXTRA_ARGS", "NNODES")}
    full.update(DRY_RUN="1", PYTHON=sys.executable, DATA_PATH=str(data), VOCAB_FILE=str(vocab),
                CHECKPOINT_DIR=str(ckpt), OUTPUT_DIR=str(tmp_path / "out"), **env)
    proc = subprocess.run(["bash", str(script)], env=full, capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    words = shlex.split(proc.stdout.strip().splitlines()[-1])
    entry = next(i for i, w in enumerate(words) if w.endswith("pretrain_bert.py"))
    head, args = words[:entry], words[entry + 1:]
    world = int(head[head.index("--nproc-per-node") + 1]) * int(head[head.index("--nnodes") + 1])
    return parse_pretrain_config(args, model_type="bert", world_size=world), world


def _check_large(cfg):
    m, t, lr = cfg.model, cfg.training, cfg.lr
    assert (m.num_layers, m.hidden_size, m.num_attention_heads, m.seq_length) == (24, 1024, 16, 512)
    assert (t.global_batch_size, lr.lr, lr.min_lr, lr.lr_decay_style) == (1024, 1e-4, 1e-5, "linear")
    assert cfg.tokenizer.tokenizer_type == "BertWordPieceLowerCase" and cfg.data.bert_binary_head


def test_baseline_launcher(tmp_path):
    cfg, world = _dry_run(BASELINE, tmp_path, TP="2", PP="2")
    _check_large(cfg)
    assert world == 8 and (cfg.parallel.tensor_model_parallel_size, cfg.parallel.pipeline_model_parallel_size) == (2, 2)
    assert not cfg.random_ltd.enabled and cfg.training.train_iters == 2_000_000
    assert cfg.lr.lr_schedule_unit == "tokens" and cfg.lr.lr_warmup_tokens == 10_000 * 1024 * 512
    assert cfg.lr.lr_decay_tokens == 2_000_000 * 1024 * 512


def test_random_ltd_launcher_matches_the_schedule(tmp_path):
    from megatron.ltd.schedule import kept_length, layer_averaged_tokens
    from megatron.training.lr_schedule import run_length, schedule_lengths

    cfg, world = _dry_run(RANDOM_LTD, tmp_path, TRAIN_ITERS="30000", NNODES="2")
    _check_large(cfg)
    ltd, t = cfg.random_ltd, cfg.training
    assert world == 16 and ltd.enabled and ltd.resolve_layers(24) == list(range(1, 23))
    assert (ltd.min_seq, ltd.resolved_max_seq(512), ltd.seq_step, ltd.require_steps) == (128, 512, 16, 30000)
    assert cfg.lr.lr_schedule_unit == "layer-averaged-tokens"
    assert (cfg.lr.lr_warmup_iters, cfg.lr.lr_warmup_tokens, cfg.lr.lr_decay_tokens) == (10_000, None, None)
    # The trainer turns the warmup iterations and the run into layer-averaged tokens, walking the ramp.
    per_step = [layer_averaged_tokens(1024, 512, kept_length(i, ltd, 512), 24, 22) for i in range(t.train_iters)]
    assert schedule_lengths(cfg, run_length(cfg)) == (sum(per_step[:10_000]), sum(per_step))


def test_launchers_refuse_missing_inputs(tmp_path):
    for script in (BASELINE, RANDOM_LTD):
        proc = subprocess.run(["bash", str(script)], env=dict(os.environ, DRY_RUN="1", DATA_PATH="", VOCAB_FILE=""),
                              capture_output=True, text=True, timeout=30)
        assert proc.returncode != 0 and "DATA_PATH" in proc.stderr


def test_forward_step_hands_the_plan_to_the_encoder():
    """BertModel.forward cannot pass the plan on; forward_step attaches it to the encoder call of the
    unwrapped model (through DDP/Float16Module-style ``.module`` wrappers) and only for that call."""
    from megatron.training.bert import forward_step

    seen = []

    class Encoder(torch.nn.Module):
        def forward(self, hidden_states=None, attention_mask=None, context_mask=None):
            seen.append(context_mask)
            return hidden_states

    class Bert(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = Encoder()

        def forward(self, input_ids, attention_mask, tokentype_ids=None, lm_labels=None):
            self.encoder(hidden_states=input_ids, attention_mask=attention_mask)
            assert tokentype_ids is None or (tokentype_ids[attention_mask == 0] == 0).all()
            return torch.zeros(input_ids.shape), torch.zeros(input_ids.shape[0], 2)

    class Wrapper(torch.nn.Module):
        def __init__(self, module):
            super().__init__()
            self.module = module

        def forward(self, *args, **kwargs):
            return self.module(*args, **kwargs)

    model = Wrapper(Wrapper(Bert()))
    pad = 3  # megatron-core fills padding_mask and types with the pad id at padded positions
    batch = {"text": torch.ones(2, 4, dtype=torch.long), "types": torch.tensor([[0, 1, pad, pad]] * 2),
             "padding_mask": torch.tensor([[1, 1, pad, pad]] * 2), "labels": torch.zeros(2, 4, dtype=torch.long),
             "loss_mask": torch.ones(2, 4), "is_random": torch.tensor([0, 1])}
    plan = torch.tensor([[[0, 1], [1, 2]]])
    forward_step(batch, model, plan)
    forward_step(batch, model, None)
    model(batch["text"], torch.ones(2, 4))
    assert seen[0] is plan and seen[1] is None and seen[2] is None
