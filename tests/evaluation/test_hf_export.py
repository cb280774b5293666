"""Hugging Face export: a checkpoint trained and saved at TP=2 x PP=2 (GPT-2 architecture) and one
at TP=2 with RoPE + SwiGLU + RMSNorm + grouped-query attention (LLaMA architecture), exported with
tools/convert_checkpoint.py --to-hf and loaded with transformers, give our model's logits and
greedy continuation; the exported tokenizer encodes as ours does."""

from __future__ import annotations

import os
import sys
from dataclasses import asdict

import pytest
import torch

transformers = pytest.importorskip("transformers")
pytest.importorskip("safetensors")

from tests.multirank import run_multirank  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SEQ, MBS = 32, 4
FLAGS = dict(num_layers=4, hidden_size=64, num_attention_heads=4, seq_length=SEQ, max_position_embeddings=SEQ,
             hidden_dropout=0.0, attention_dropout=0.0, make_vocab_size_divisible_by=8)
LLAMA = dict(position_embedding_type="rope", normalization="RMSNorm", swiglu=True, num_query_groups=2,
             ffn_hidden_size=96, untie_embeddings_and_output_weights=True, rotary_base=5000)
TEXTS = ["the owl went to the market. in the market the owl slept.",
         "Numbers 12345 and  two  spaces,\nnew lines\tand tabs.",
         "Unicode: café, naïve, 東京 and an emoji 🙂 fall back to bytes."]


def body_train_save(ctx, out_dir, spm_model, flags, steps=12, probe=None):
    """Train a tiny GPT at this rank's TP x PP layout (megatron-core schedule, DDP, Adam) on the
    miniature corpus tokenized with ``spm_model``, save it in the trainer's format; return the
    losses and (PP=1) the full logits of ``probe`` from the saved model."""
    from megatron.core import parallel_state as ps
    from megatron.core.optimizer import OptimizerConfig, get_megatron_optimizer

    from megatron.data.tokenizers import TokenizerConfig, build_tokenizer
    from megatron.checkpoint import Saver
    from megatron.training.config import ModelConfig, ParallelConfig
    from megatron.training.gpt import gpt_model_from_flags
    from megatron.training.model_setup import padded_vocab_size, transformer_config
    from tests.evaluation.ckpt_utils import make_corpus
    from tests.model_utils import fill_params_deterministically, forward_backward, wrap_ddp

    tok_cfg = TokenizerConfig("SentencePieceTokenizer", tokenizer_model=spm_model)
    tok = build_tokenizer(tok_cfg)
    model_cfg = ModelConfig(**flags)
    tcfg = transformer_config(model_cfg, ParallelConfig(tensor_model_parallel_size=ctx.tp, pipeline_model_parallel_size=ctx.pp))
    vocab = padded_vocab_size(tok.vocab_size, model_cfg.make_vocab_size_divisible_by, ctx.tp)
    model = gpt_model_from_flags(model_cfg, tcfg, vocab)
    fill_params_deterministically(model, seed=7)
    ddp = wrap_ddp(model, tcfg)
    opt = get_megatron_optimizer(OptimizerConfig(optimizer="adam", lr=1e-2, weight_decay=0.0, clip_grad=1.0), [ddp])
    ids = []
    for t in make_corpus(120, seed=3):
        ids += tok.tokenize(t) + [tok.eod]
    data = torch.tensor(ids)
    gen = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(steps):
        batches = []
        for _ in range(2):
            starts = torch.randint(0, len(data) - SEQ - 1, (MBS,), generator=gen).tolist()
            chunk = torch.stack([data[s:s + SEQ + 1] for s in starts])
            batches.append({"tokens": chunk[:, :-1], "labels": chunk[:, 1:], "loss_mask": torch.ones(MBS, SEQ),
                            "position_ids": torch.arange(SEQ).expand(MBS, SEQ)})
        ddp.zero_grad_buffer()
        opt.zero_grad()
        losses.append(forward_backward(ddp, tcfg, batches, SEQ, MBS))
        assert opt.step()[0]
    meta = {"model_flags": asdict(model_cfg), "tokenizer": asdict(tok_cfg), "model_type": "gpt",
            "layout": {"tp": ctx.tp, "pp": ctx.pp, "dp": 1, "vpp": None}, "padded_vocab_size": vocab}
    Saver(out_dir, say=lambda _: None).save(steps, [model], None, None, {"note": "hf export test"}, meta)
    out = {"losses": losses, "pp_rank": ctx.pp_rank}
    if probe is not None and ctx.pp == 1:
        model.eval()
        with torch.no_grad():
            p = torch.as_tensor(probe)
            logits = model(p, torch.arange(p.shape[1]).expand_as(p), None)
        parts = [torch.empty_like(logits) for _ in range(ctx.tp)]
        torch.distributed.all_gather(parts, logits.contiguous(), group=ps.get_tensor_model_parallel_group())
        out["logits"] = torch.cat(parts, dim=-1)
    return out


@pytest.fixture(scope="module")
def spm_model(tmp_path_factory):
    from megatron.data.train_tokenizer import SentencePieceTrainConfig, train_sentencepiece
    from tests.evaluation.ckpt_utils import make_corpus

    d = tmp_path_factory.mktemp("spm")
    text = d / "corpus.txt"
    text.write_text("\n".join(make_corpus(300, seed=1) + TEXTS[:2] * 3) + "\n")
    return train_sentencepiece(SentencePieceTrainConfig(inputs=[str(text)], model_prefix=str(d / "spm"),
                                                        vocab_size=320, model_type="bpe"))


def _export(ckpt, out):
    sys.path.insert(0, os.path.join(ROOT, "tools"))
    from convert_checkpoint import main as convert_main

    assert convert_main(["--load", ckpt, "--to-hf", out]) == 0
    return transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()


def _rel(a, b):
    return float((a - b).abs().max() / b.abs().max())


def _greedy(logits_fn, prompt, n):
    ids = list(prompt)
    for _ in range(n):
        ids.append(int(logits_fn(torch.tensor([ids]))[0, -1].argmax()))
    return ids[len(prompt):]


def test_gpt2_export_of_tp2_pp2_checkpoint(eval_runtime, spm_model, tmp_path):
    from megatron.evaluation.checkpoint_loader import load_for_inference

    ckpt, out = str(tmp_path / "ckpt"), str(tmp_path / "hf")
    res = run_multirank(body_train_save, world_size=4, tp=2, pp=2,
                        kwargs={"out_dir": ckpt, "spm_model": spm_model, "flags": FLAGS})
    losses = [r["losses"] for r in res if r["pp_rank"] == 1][0]
    assert losses[-1] < losses[0] - 0.5  # it trained
    hf = _export(ckpt, out)
    assert type(hf).__name__ == "GPT2LMHeadModel"
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= set(os.listdir(out))
    # A non-empty --to-hf directory is never replaced.
    from convert_checkpoint import main as convert_main

    before = {n: os.path.getmtime(os.path.join(out, n)) for n in os.listdir(out)}
    assert convert_main(["--load", ckpt, "--to-hf", out]) == 2
    assert {n: os.path.getmtime(os.path.join(out, n)) for n in os.listdir(out)} == before

    ours = load_for_inference(ckpt)
    hf_tok = transformers.AutoTokenizer.from_pretrained(out)
    for text in TEXTS:  # the exported tokenizer encodes (and decodes) as ours does
        ids = ours.tokenizer.tokenize(text)
        assert hf_tok.encode(text, add_special_tokens=False) == ids, text
        assert hf_tok.decode(ids) == text
    rows = [ours.tokenizer.tokenize(TEXTS[0] + " " + TEXTS[1]), ours.tokenizer.tokenize(TEXTS[2])]
    probe = torch.tensor([r[:SEQ] for r in rows])
    with torch.no_grad():
        assert _rel(hf(probe).logits, ours.logits(probe)) < 1e-5
        prompt = ours.tokenizer.tokenize("the cat went to the garden. in the")
        n = SEQ - len(prompt)
        ref = _greedy(ours.logits, prompt, n)
        gen = hf.generate(torch.tensor([prompt]), max_new_tokens=n, do_sample=False, pad_token_id=0)
    assert gen[0, len(prompt):].tolist() == ref


def test_llama_export_of_tp2_checkpoint_matches_the_tp2_model(eval_runtime, spm_model, tmp_path):
    from megatron.evaluation.checkpoint_loader import load_for_inference

    ckpt, out = str(tmp_path / "ckpt"), str(tmp_path / "hf")
    probe = torch.randint(4, 300, (2, SEQ), generator=torch.Generator().manual_seed(1))
    res = run_multirank(body_train_save, world_size=2, tp=2,
                        kwargs={"out_dir": ckpt, "spm_model": spm_model, "flags": dict(FLAGS, **LLAMA), "probe": probe})
    assert res[0]["losses"][-1] < res[0]["losses"][0] - 0.5
    tp2_logits = res[0]["logits"]
    hf = _export(ckpt, out)
    assert type(hf).__name__ == "LlamaForCausalLM" and hf.config.num_key_value_heads == 2
    ours = load_for_inference(ckpt)
    with torch.no_grad():
        assert _rel(ours.logits(probe), tp2_logits) < 1e-5  # the merge un-interleaves SwiGLU's gate/up shards
        assert _rel(hf(probe).logits, tp2_logits) < 1e-5
        prompt = ours.tokenizer.tokenize("the fox went to the river. in the")
        n = SEQ - len(prompt)
        gen = hf.generate(torch.tensor([prompt]), max_new_tokens=n, do_sample=False, pad_token_id=0)
    assert gen[0, len(prompt):].tolist() == _greedy(ours.logits, prompt, n)


@pytest.mark.parametrize("flags, named", [
    (dict(position_embedding_type="rope"), "--position-embedding-type rope"),
    (dict(normalization="RMSNorm"), "--normalization RMSNorm"),
    (dict(swiglu=True), "--swiglu"),
    (dict(num_query_groups=2), "--num-query-groups 2"),
    (dict(LLAMA, rotary_percent=0.5), "--rotary-percent 0.5"),
    (dict(LLAMA, swiglu=False), "no --swiglu"),
])
def test_inexpressible_models_are_refused_naming_the_flag(flags, named):
    from megatron.evaluation.hf_export import ExportError, hf_architecture

    with pytest.raises(ExportError, match=named.replace("-", r"\-").replace(".", r"\.")):
        hf_architecture(dict(FLAGS, **flags))
    assert hf_architecture(FLAGS) == "gpt2" and hf_architecture(dict(FLAGS, **LLAMA)) == "llama"
