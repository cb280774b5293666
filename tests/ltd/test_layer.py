"""A dropping layer against a straightforward reference: gather the kept tokens by the plan,
run the plain layer on each sample's kept tokens with an explicitly built mask / rotary angles,
put them back, dropped tokens unchanged. Values and gradients, for causal GPT, document-masked
GPT, RoPE GPT and BERT with padding."""

import pytest
import torch

from tests.multirank import run_multirank

S, B, H, K = 12, 3, 32, 5


def _layers(kind, config):
    from megatron.core.transformer.spec_utils import build_module

    from megatron.ltd.layer import RandomLTDTransformerLayer
    from megatron.models.specs import bert_layer_spec, gpt_layer_spec

    spec_fn = bert_layer_spec if kind == "bert" else gpt_layer_spec
    ltd_spec = spec_fn(layer_module=RandomLTDTransformerLayer)
    ltd_spec.params = {"ltd_layer_numbers": (0, 1)}
    ltd = build_module(ltd_spec, config=config, layer_number=2)  # global layer 1: plan row 1
    plain = build_module(spec_fn(), config=config, layer_number=2)
    torch.manual_seed(5)
    with torch.no_grad():
        for p in ltd.parameters():
            p.normal_(0.0, 0.2)
    plain.load_state_dict(ltd.state_dict(), strict=True)
    return ltd, plain


def _inputs(kind, gen):
    """Full-length inputs: hidden, megatron-style mask (True = masked) or None, rotary or None."""
    hidden = torch.randn(S, B, H, generator=gen, dtype=torch.float64)
    mask, rope = None, None
    if kind == "doc":
        # Documents of lengths 5, 4, 3 (different per sample by a shift): block-diagonal causal.
        doc = torch.zeros(B, S, dtype=torch.long)
        for j in range(B):
            cuts = [(5 + j) % S, (9 + j) % S]
            for c in cuts:
                doc[j, c:] += 1
        same = doc[:, :, None] == doc[:, None, :]
        causal = torch.tril(torch.ones(S, S, dtype=torch.bool))
        mask = ~(same & causal)[:, None]  # [b,1,s,s]
    if kind == "bert":
        lengths = [S, S - 3, S - 6]
        valid = torch.zeros(B, S, dtype=torch.bool)
        for j, n in enumerate(lengths):
            valid[j, :n] = True
        mask = ~(valid[:, None, :, None] & valid[:, None, None, :])  # [b,1,s,s], as BertModel builds it
    if kind == "rope":
        from megatron.core.models.common.embeddings.rotary_pos_embedding import RotaryEmbedding

        rope = RotaryEmbedding(kv_channels=H // 4, rotary_percent=1.0, use_cpu_initialization=True)(S).double()
    return hidden, mask, rope


def _reference(plain, hidden, mask, rope, idx):
    out = hidden.clone()
    for j in range(B):
        pos = idx[j]
        kept = hidden[pos, j : j + 1]  # [k,1,h]
        if mask is not None:
            m = mask[j : j + 1][:, :, pos][:, :, :, pos]
        else:  # plain causal GPT: an explicit causal mask over the kept positions
            m = (pos[None, :] > pos[:, None])[None, None]
        r = rope[pos] if rope is not None else None
        y, _ = plain(hidden_states=kept, attention_mask=m, rotary_pos_emb=r)
        out[pos, j : j + 1] = y
    return out


def body_layer_matches_reference(ctx, kind):
    from megatron.ltd.sampler import make_index_plan, route_rows
    from tests.model_utils import tiny_config

    config = tiny_config(params_dtype=torch.float64, num_layers=2)
    ltd, plain = _layers(kind, config)
    ltd.double(), plain.double()
    gen = torch.Generator().manual_seed(2)
    hidden, mask, rope = _inputs(kind, gen)
    plan = make_index_plan(3, 7, torch.tensor([10, 11, 12]), [0, 1], K, S)
    idx = plan[1]
    h1 = hidden.clone().requires_grad_(True)
    y, _ = ltd(hidden_states=h1, attention_mask=mask, context_mask=route_rows(plan), rotary_pos_emb=rope)
    h2 = hidden.clone().requires_grad_(True)
    y_ref = _reference(plain, h2, mask, rope, idx)
    w = torch.randn(y.shape, generator=gen, dtype=torch.float64)
    (y * w).sum().backward()
    (y_ref * w).sum().backward()
    dropped = torch.ones(S, B, dtype=torch.bool)
    for j in range(B):
        dropped[idx[j], j] = False
    return {
        "out_err": float((y - y_ref).abs().max()),
        "in_grad_err": float((h1.grad - h2.grad).abs().max()),
        "param_grad_err": max(float((p.grad - q.grad).abs().max()) for p, q in zip(ltd.parameters(), plain.parameters())),
        "dropped_unchanged": bool(torch.equal(y.detach()[dropped], hidden[dropped])),
        "kept_changed": bool((y.detach()[~dropped] - hidden[~dropped]).abs().max() > 1e-3),
        "dropped_grad_is_upstream": bool(torch.allclose(h1.grad[dropped], w[dropped])),
    }


@pytest.mark.parametrize("kind", ["causal", "doc", "rope", "bert"])
def test_dropping_layer_matches_reference(kind):
    r = run_multirank(body_layer_matches_reference, world_size=1, kwargs={"kind": kind})[0]
    assert r["out_err"] < 1e-10, r
    assert r["in_grad_err"] < 1e-10, r
    assert r["param_grad_err"] < 1e-10, r
    assert r["dropped_unchanged"] and r["kept_changed"] and r["dropped_grad_is_upstream"], r


def body_full_k_equals_baseline(ctx):
    from megatron.models.builders import build_gpt_model
    from tests.model_utils import (LTDForwardStep, VOCAB, collect_full_tensors, fill_params_deterministically,
                                   forward_backward, make_batches, tiny_config, wrap_ddp)

    import megatron.ltd.layer as layer_mod

    calls = []

    class CountingRoute(layer_mod.TokenRoute):  # the layer's gather/scatter pair, counting its gathers
        def gather(self, hidden):
            calls.append(1)
            return super().gather(hidden)

    layer_mod.TokenRoute = CountingRoute
    out = {}
    for name, layers in (("base", None), ("ltd", [1, 2])):
        config = tiny_config()
        model = build_gpt_model(config, vocab_size=VOCAB, max_sequence_length=16, ltd_layers=layers)
        fill_params_deterministically(model, seed=3)
        ddp = wrap_ddp(model, config)
        # k == s with a forced plan (every index): the gather/scatter path runs, dropping nothing.
        step = LTDForwardStep([1, 2], k=16, seq_length=16, force=True)
        loss = forward_backward(ddp, config, make_batches(2, 2, 16), 16, 2, forward_step=step)
        out[name] = (loss, collect_full_tensors(ddp, "grad"), list(model.state_dict().keys()), len(calls))
        calls.clear()
    return out


def test_full_length_equals_baseline_and_state_dict_keys_match():
    out = run_multirank(body_full_k_equals_baseline, world_size=1)[0]
    (lb, gb, kb, nb), (ll, gl, kl, nl) = out["base"], out["ltd"]
    assert nb == 0 and nl == 2 * 2  # 2 dropping layers x 2 micro-batches went through gather/scatter
    assert ll == lb
    assert all(torch.equal(gb[k], gl[k]) for k in gb)
    assert kb == kl


def body_checkpoint_round_trip(ctx):
    from megatron.models.builders import build_gpt_model
    from tests.model_utils import VOCAB, fill_params_deterministically, tiny_config

    ltd = build_gpt_model(tiny_config(), vocab_size=VOCAB, max_sequence_length=16, ltd_layers=[1, 2])
    fill_params_deterministically(ltd, seed=9)
    base = build_gpt_model(tiny_config(), vocab_size=VOCAB, max_sequence_length=16)
    base.load_state_dict(ltd.state_dict(), strict=True)
    back = build_gpt_model(tiny_config(), vocab_size=VOCAB, max_sequence_length=16, ltd_layers=[1, 2])
    back.load_state_dict(base.state_dict(), strict=True)
    a, b = ltd.state_dict(), back.state_dict()
    return all(torch.equal(a[k], b[k]) for k in a if torch.is_tensor(a[k])) and set(a) == set(b)


def test_random_ltd_checkpoint_loads_into_baseline_and_back():
    assert run_multirank(body_checkpoint_round_trip, world_size=1)[0] is True
