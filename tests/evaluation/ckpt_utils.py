"""Tiny trained checkpoints for the evaluation tests, written in the trainer's exact format
(megatron.checkpoint.Saver) from multi-rank bodies."""

from __future__ import annotations

import random
from dataclasses import asdict

import torch

SEQ = 64

FLAGS = dict(
    num_layers=3,
    hidden_size=64,
    num_attention_heads=4,
    seq_length=SEQ,
    max_position_embeddings=SEQ,
    hidden_dropout=0.0,
    attention_dropout=0.0,
    make_vocab_size_divisible_by=8,
)

ANIMALS = ["cat", "dog", "fox", "owl", "bee", "cow", "pig", "hen"]
PLACES = ["garden", "kitchen", "forest", "river", "market", "castle"]


def make_corpus(n: int, seed: int = 0) -> list:
    """Short stories with a strongly predictable last word (a LAMBADA in miniature)."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        a, p = rng.choice(ANIMALS), rng.choice(PLACES)
        out.append(f"the {a} went to the {p}. in the {p} the {a} slept. then the {p} was quiet and the {a}")
    return out


def corpus_tokens(texts) -> list:
    from megatron.data.tokenizers import ByteTokenizer

    tok = ByteTokenizer()
    ids = []
    for t in texts:
        ids += tok.tokenize(t + "\n") + [tok.eod]
    return ids


def metadata(model_cfg, tp: int, pp: int, vocab: int, ltd_layers=None) -> dict:
    from megatron.data.tokenizers import TokenizerConfig
    from megatron.ltd.config import RandomLTDConfig

    return {
        "model_flags": asdict(model_cfg),
        "tokenizer": asdict(TokenizerConfig("ByteTokenizer")),
        "layout": {"tp": tp, "pp": pp, "dp": 1, "vpp": None},
        "model_type": "gpt",
        "padded_vocab_size": vocab,
        "random_ltd": asdict(RandomLTDConfig(enabled=ltd_layers is not None, layers=ltd_layers)),
    }


def _build(ctx, flags, ltd_layers=None, vocab_tp=None):
    from megatron.data.tokenizers import ByteTokenizer
    from megatron.models.builders import build_gpt_model
    from megatron.training.config import ModelConfig, ParallelConfig
    from megatron.training.model_setup import padded_vocab_size, transformer_config

    model_cfg = ModelConfig(**flags)
    tcfg = transformer_config(model_cfg, ParallelConfig(tensor_model_parallel_size=ctx.tp, pipeline_model_parallel_size=ctx.pp))
    vocab = padded_vocab_size(ByteTokenizer().vocab_size, model_cfg.make_vocab_size_divisible_by, vocab_tp or ctx.tp)
    model = build_gpt_model(tcfg, vocab, model_cfg.max_position_embeddings,
                            share_embeddings_and_output_weights=not model_cfg.untie_embeddings_and_output_weights,
                            ltd_layers=ltd_layers)
    return model_cfg, model, vocab


def body_train_and_save(ctx, out_dir, steps=40, flags=None, ltd_layers=None, probe=None, seed=0, deterministic=False, lr=1e-2):
    """Train a tiny GPT (TP x PP=1, plain Adam; random-LTD on ``ltd_layers`` with half the tokens
    kept) on the miniature corpus, save it in the trainer's format, and return the full logits
    of ``probe`` (gathered across TP ranks) from the model that was saved."""
    from megatron.core import parallel_state as ps

    from megatron.checkpoint import Saver

    flags = dict(FLAGS, **(flags or {}))
    model_cfg, model, vocab = _build(ctx, flags, ltd_layers)
    if deterministic:
        from tests.model_utils import fill_params_deterministically

        fill_params_deterministically(model, seed=seed)
    if steps:
        assert ctx.pp == 1, "training here runs without a pipeline schedule"
        from megatron.ltd.layer import gpt_forward_kwargs
        from megatron.ltd.sampler import build_index_plan

        data = torch.tensor(corpus_tokens(make_corpus(200, seed=seed)), dtype=torch.long)
        gen = torch.Generator().manual_seed(seed)
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        mbs, seq = 8, model_cfg.seq_length
        pos = torch.arange(seq).unsqueeze(0).expand(mbs, seq)
        model.train()
        for step in range(steps):
            starts = torch.randint(0, len(data) - seq - 1, (mbs,), generator=gen)
            batch = torch.stack([data[s:s + seq + 1] for s in starts.tolist()])
            kw = {}
            if ltd_layers is not None:
                plan = build_index_plan(seed, step, torch.arange(step * mbs, (step + 1) * mbs), list(ltd_layers),
                                        seq // 2, seq, device=torch.device("cpu"))
                kw = gpt_forward_kwargs(plan)
            loss = model(batch[:, :-1], pos, None, labels=batch[:, 1:], **kw).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    Saver(out_dir, say=lambda _: None).save(max(steps, 1), [model], None, None, {"note": "eval test"},
                                            metadata(model_cfg, ctx.tp, ctx.pp, vocab, ltd_layers))
    out = {"vocab": vocab}
    if ctx.tp == 1 and ctx.pp == 1:
        out["state"] = {k: v.detach().clone() for k, v in model.state_dict().items() if isinstance(v, torch.Tensor)}
    if probe is not None and ctx.pp == 1:
        model.eval()
        with torch.no_grad():
            p = torch.as_tensor(probe)
            logits = model(p, torch.arange(p.shape[1]).unsqueeze(0).expand_as(p), None)
        if ctx.tp > 1:
            parts = [torch.empty_like(logits) for _ in range(ctx.tp)]
            torch.distributed.all_gather(parts, logits.contiguous(), group=ps.get_tensor_model_parallel_group())
            logits = torch.cat(parts, dim=-1)
        out["logits"] = logits
    return out


def body_full_state(ctx, flags=None, seed=0, vocab_tp=1):
    """The TP=1/PP=1 state dict of the deterministically filled model (layout-independent values;
    the vocabulary padded as a TP=``vocab_tp`` run pads it)."""
    from tests.model_utils import fill_params_deterministically

    _, model, _ = _build(ctx, dict(FLAGS, **(flags or {})), vocab_tp=vocab_tp)
    fill_params_deterministically(model, seed=seed)
    return {k: v.clone() for k, v in model.state_dict().items() if isinstance(v, torch.Tensor)}


def write_legacy_checkpoint(out_dir: str, iteration: int, state_dict: dict, meta: dict) -> None:
    """A TP=1/PP=1 checkpoint in the retired per-rank format (mp_rank_00_000/model_optim_rng.pt
    and a metadata.json marking it complete), as runs before the torch_dist format wrote them."""
    import json
    import os

    d = os.path.join(out_dir, f"iter_{iteration:07d}")
    os.makedirs(os.path.join(d, "mp_rank_00_000"))
    torch.save({"format_version": 1, "iteration": iteration, "model": state_dict, "tp_partition_dims": [{}],
                "layer_offsets": [0], "optimizer": None, "scheduler": None, "trainer": {}},
               os.path.join(d, "mp_rank_00_000", "model_optim_rng.pt"))
    with open(os.path.join(d, "metadata.json"), "w") as f:
        json.dump(dict(meta, complete=True, iteration=iteration, format_version=1), f)
    with open(os.path.join(out_dir, "latest_checkpointed_iteration.txt"), "w") as f:
        f.write(str(iteration))
