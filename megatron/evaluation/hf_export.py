"""Export a checkpoint (any TP/PP layout) as a Hugging Face ``transformers`` model directory.

Two architectures are expressible exactly:

* **GPT-2** (``GPT2LMHeadModel``): the project's default GPT, learned absolute positions,
  LayerNorm, GELU MLP, multi-head attention. Linear biases are always present in GPT-2: a model
  trained with ``--disable-bias-linear`` gets zero biases (the same function).
* **LLaMA** (``LlamaForCausalLM``): ``--position-embedding-type rope --normalization RMSNorm
  --swiglu`` (grouped-query attention, biases and untied output weights included).

Anything else is refused with the flag that cannot be expressed. The weights come from the
TP=1/PP=1 merge of :mod:`megatron.evaluation.checkpoint_loader`; this module only renames and
re-lays them out:

* megatron-core's fused ``linear_qkv`` holds, per query group, that group's query heads, then
  its key head, then its value head (rows of ``head_dim``); Hugging Face wants separate q/k/v
  (LLaMA) or one ``[q | k | v]`` block (GPT-2);
* GPT-2's ``Conv1D`` stores weights as ``[in, out]``, the transpose of ``nn.Linear``;
* megatron-core's SwiGLU ``linear_fc1`` is ``[gate; up]``;
* megatron-core's rotary embedding rotates halves (not interleaved pairs), as LLaMA in
  ``transformers`` does, so q/k need no permutation.

The tokenizer is written next to the weights as a ``tokenizers`` fast tokenizer built from the
SentencePiece model (``tokenizer.json``, loadable without sentencepiece, encoding as
``SentencePieceProcessor.encode`` does), or copied for Hugging Face tokenizers.
"""

from __future__ import annotations

import json
import os
import shutil
from typing import Any, Dict, Mapping, Optional, Tuple

import torch

from megatron.evaluation.checkpoint_loader import CheckpointError, read_merged_state_dict

__all__ = ["ExportError", "hf_architecture", "convert_state_dict", "export_to_hf"]


class ExportError(CheckpointError):
    """The checkpoint cannot be expressed as a transformers model (the message names the flag)."""


def hf_architecture(flags: Mapping[str, Any]) -> str:
    """``"gpt2"`` or ``"llama"`` for a checkpoint's model flags; :class:`ExportError` otherwise."""
    pos = flags.get("position_embedding_type", "learned_absolute")
    norm = flags.get("normalization", "LayerNorm")
    swiglu = bool(flags.get("swiglu", False))
    heads = int(flags["num_attention_heads"])
    groups = flags.get("num_query_groups") or heads
    if pos == "learned_absolute" and norm == "LayerNorm" and not swiglu:
        if groups != heads:
            raise ExportError(f"--num-query-groups {groups}: GPT-2 has no grouped-query attention "
                              "(export a model trained without it, or use the LLaMA flags)")
        kv = flags.get("kv_channels")
        if kv is not None and kv * heads != int(flags["hidden_size"]):
            raise ExportError(f"--kv-channels {kv}: GPT-2 needs head dim = hidden size / heads "
                              f"({int(flags['hidden_size']) // heads})")
        return "gpt2"
    if pos == "rope" and norm == "RMSNorm" and swiglu:
        if float(flags.get("rotary_percent", 1.0)) != 1.0:
            raise ExportError(f"--rotary-percent {flags['rotary_percent']}: LLaMA rotates the whole head "
                              "dimension (train with --rotary-percent 1.0)")
        return "llama"
    # Name the flag that breaks each of the two patterns.
    gpt2 = [f for f, bad in (("--position-embedding-type " + str(pos), pos != "learned_absolute"),
                             ("--normalization " + str(norm), norm != "LayerNorm"),
                             ("--swiglu", swiglu)) if bad]
    llama = [f for f, bad in (("--position-embedding-type " + str(pos), pos != "rope"),
                              ("--normalization " + str(norm), norm != "RMSNorm"),
                              ("no --swiglu", not swiglu)) if bad]
    raise ExportError(
        "this model has no transformers equivalent: GPT-2 needs learned positions, LayerNorm and a GELU MLP "
        f"(this one has {', '.join(gpt2)}); LLaMA needs --position-embedding-type rope, --normalization "
        f"RMSNorm and --swiglu (this one has {', '.join(llama)})")


def _dims(flags: Mapping[str, Any]) -> Tuple[int, int, int, int, int]:
    hidden, heads = int(flags["hidden_size"]), int(flags["num_attention_heads"])
    groups = int(flags.get("num_query_groups") or heads)
    head_dim = int(flags.get("kv_channels") or hidden // heads)
    ffn = int(flags.get("ffn_hidden_size") or 4 * hidden)
    return hidden, heads, groups, head_dim, ffn


def _split_qkv(t: torch.Tensor, heads: int, groups: int, head_dim: int):
    """megatron-core's per-group [q heads, k, v] rows -> (q, k, v), each rows-in-head-order."""
    per = heads // groups
    rest = t.shape[1:]
    g = t.reshape(groups, per + 2, head_dim, *rest)
    q = g[:, :per].reshape(heads * head_dim, *rest)
    k = g[:, per].reshape(groups * head_dim, *rest)
    v = g[:, per + 1].reshape(groups * head_dim, *rest)
    return q, k, v


def _layers(sd: Mapping[str, torch.Tensor]) -> int:
    return 1 + max(int(k.split(".")[2]) for k in sd if k.startswith("decoder.layers."))


def _gpt2(sd: Mapping[str, torch.Tensor], flags: Mapping[str, Any], vocab: int) -> Tuple[dict, Dict[str, torch.Tensor]]:
    hidden, heads, _, head_dim, ffn = _dims(flags)
    n_layers = _layers(sd)
    tied = not flags.get("untie_embeddings_and_output_weights", False)

    def bias(key: str, size: int) -> torch.Tensor:
        return sd[key] if key in sd else torch.zeros(size, dtype=sd["embedding.word_embeddings.weight"].dtype)

    out = {"transformer.wte.weight": sd["embedding.word_embeddings.weight"],
           "transformer.wpe.weight": sd["embedding.position_embeddings.weight"],
           "transformer.ln_f.weight": sd["decoder.final_layernorm.weight"],
           "transformer.ln_f.bias": sd["decoder.final_layernorm.bias"]}
    for i in range(n_layers):
        src, dst = f"decoder.layers.{i}.", f"transformer.h.{i}."
        q, k, v = _split_qkv(sd[src + "self_attention.linear_qkv.weight"], heads, heads, head_dim)
        qb, kb, vb = _split_qkv(bias(src + "self_attention.linear_qkv.bias", 3 * hidden), heads, heads, head_dim)
        out.update({
            dst + "ln_1.weight": sd[src + "input_layernorm.weight"], dst + "ln_1.bias": sd[src + "input_layernorm.bias"],
            dst + "attn.c_attn.weight": torch.cat([q, k, v]).t(), dst + "attn.c_attn.bias": torch.cat([qb, kb, vb]),
            dst + "attn.c_proj.weight": sd[src + "self_attention.linear_proj.weight"].t(),
            dst + "attn.c_proj.bias": bias(src + "self_attention.linear_proj.bias", hidden),
            dst + "ln_2.weight": sd[src + "pre_mlp_layernorm.weight"], dst + "ln_2.bias": sd[src + "pre_mlp_layernorm.bias"],
            dst + "mlp.c_fc.weight": sd[src + "mlp.linear_fc1.weight"].t(),
            dst + "mlp.c_fc.bias": bias(src + "mlp.linear_fc1.bias", ffn),
            dst + "mlp.c_proj.weight": sd[src + "mlp.linear_fc2.weight"].t(),
            dst + "mlp.c_proj.bias": bias(src + "mlp.linear_fc2.bias", hidden),
        })
    if not tied:
        out["lm_head.weight"] = sd["output_layer.weight"]
    config = {
        "architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "vocab_size": vocab,
        "n_positions": int(flags["max_position_embeddings"]), "n_embd": hidden, "n_layer": n_layers,
        "n_head": heads, "n_inner": ffn, "activation_function": "gelu",  # exact (erf) GELU, as trained
        "layer_norm_epsilon": float(flags.get("layernorm_epsilon", 1e-5)),
        "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0,
        "scale_attn_weights": True, "tie_word_embeddings": tied,
    }
    return config, out


def _llama(sd: Mapping[str, torch.Tensor], flags: Mapping[str, Any], vocab: int) -> Tuple[dict, Dict[str, torch.Tensor]]:
    hidden, heads, groups, head_dim, ffn = _dims(flags)
    n_layers = _layers(sd)
    tied = not flags.get("untie_embeddings_and_output_weights", False)
    has_bias = not flags.get("disable_bias_linear", False)
    out = {"model.embed_tokens.weight": sd["embedding.word_embeddings.weight"],
           "model.norm.weight": sd["decoder.final_layernorm.weight"]}
    for i in range(n_layers):
        src, dst = f"decoder.layers.{i}.", f"model.layers.{i}."
        for suffix in (("weight", "bias") if has_bias else ("weight",)):
            q, k, v = _split_qkv(sd[src + "self_attention.linear_qkv." + suffix], heads, groups, head_dim)
            gate, up = sd[src + "mlp.linear_fc1." + suffix].chunk(2, dim=0)
            out.update({
                dst + "self_attn.q_proj." + suffix: q, dst + "self_attn.k_proj." + suffix: k,
                dst + "self_attn.v_proj." + suffix: v,
                dst + "self_attn.o_proj." + suffix: sd[src + "self_attention.linear_proj." + suffix],
                dst + "mlp.gate_proj." + suffix: gate, dst + "mlp.up_proj." + suffix: up,
                dst + "mlp.down_proj." + suffix: sd[src + "mlp.linear_fc2." + suffix],
            })
        out[dst + "input_layernorm.weight"] = sd[src + "input_layernorm.weight"]
        out[dst + "post_attention_layernorm.weight"] = sd[src + "pre_mlp_layernorm.weight"]
    if not tied:
        out["lm_head.weight"] = sd["output_layer.weight"]
    config = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": vocab,
        "hidden_size": hidden, "intermediate_size": ffn, "num_hidden_layers": n_layers,
        "num_attention_heads": heads, "num_key_value_heads": groups, "head_dim": head_dim,
        "hidden_act": "silu", "max_position_embeddings": int(flags.get("seq_length", 2048)),
        "rms_norm_eps": float(flags.get("layernorm_epsilon", 1e-5)),
        "rope_theta": float(flags.get("rotary_base", 10000)),
        "rope_parameters": {"rope_type": "default", "rope_theta": float(flags.get("rotary_base", 10000))},
        "attention_bias": has_bias, "mlp_bias": has_bias, "attention_dropout": 0.0,
        "tie_word_embeddings": tied,
    }
    return config, out


def convert_state_dict(state_dict: Mapping[str, Any], flags: Mapping[str, Any], vocab: int
                       ) -> Tuple[str, dict, Dict[str, torch.Tensor]]:
    """(architecture, config dict, transformers state dict) of a merged TP=1/PP=1 state dict."""
    arch = hf_architecture(flags)
    sd = {k: v for k, v in state_dict.items() if isinstance(v, torch.Tensor) and not k.endswith("_extra_state")}
    config, weights = (_gpt2 if arch == "gpt2" else _llama)(sd, flags, vocab)
    return arch, config, {k: v.detach().to(torch.float32).contiguous().clone() for k, v in weights.items()}


def _write_tokenizer(meta: Mapping[str, Any], out_dir: str, max_length: int) -> Optional[str]:
    """Tokenizer files for ``out_dir``; returns what was written, or None (with the reason printed)."""
    tok = meta.get("tokenizer") or {}
    kind = tok.get("tokenizer_type")
    if kind == "SentencePieceTokenizer":
        model_path = tok.get("tokenizer_model")
        if not model_path or not os.path.isfile(model_path):
            raise ExportError(f"the checkpoint's tokenizer model {model_path!r} is not a file: pass "
                              "--tokenizer-model PATH to export it (or --no-tokenizer)")
        return _write_sentencepiece(model_path, out_dir, max_length)
    if kind == "HuggingFaceTokenizer" and tok.get("tokenizer_model"):
        from transformers import AutoTokenizer

        AutoTokenizer.from_pretrained(tok["tokenizer_model"]).save_pretrained(out_dir)
        return "copied Hugging Face tokenizer"
    print(f"note: no tokenizer written (the checkpoint's tokenizer is {kind or 'not recorded'}; only "
          "SentencePiece and Hugging Face tokenizers are exported)")
    return None


def _write_sentencepiece(model_path: str, out_dir: str, max_length: int) -> str:
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import SpmConverter, import_protobuf

    proto = import_protobuf().ModelProto()
    with open(model_path, "rb") as f:
        proto.ParseFromString(f.read())
    if proto.trainer_spec.model_type == 2:  # BPE: {piece: id}, merges ranked by piece score
        vocab: Any = {p.piece: i for i, p in enumerate(proto.pieces)}
    elif proto.trainer_spec.model_type == 1:  # unigram: [(piece, score)]
        vocab = [(p.piece, p.score) for p in proto.pieces]
    else:
        raise ExportError(f"{model_path}: only BPE and unigram SentencePiece models can be exported")
    backend = SpmConverter.build_tokenizer_from_spm_proto(proto, vocab)
    spec = proto.trainer_spec

    def piece(i: int) -> Optional[str]:
        return proto.pieces[i].piece if 0 <= i < len(proto.pieces) else None

    fast = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token=piece(spec.bos_id), eos_token=piece(spec.eos_id),
        unk_token=piece(spec.unk_id), pad_token=piece(spec.pad_id), model_max_length=max_length,
        clean_up_tokenization_spaces=False)
    fast.save_pretrained(out_dir)
    shutil.copyfile(model_path, os.path.join(out_dir, "tokenizer.model"))  # the original, for reference
    return "tokenizer.json (from SentencePiece)"


def export_to_hf(load_dir: str, out_dir: str, iteration: Optional[int] = None,
                 tokenizer_model: Optional[str] = None, write_tokenizer: bool = True) -> Dict[str, Any]:
    """Write ``out_dir`` as a transformers model directory (config.json, model.safetensors,
    generation_config.json, tokenizer files). The directory is built under ``out_dir.partial`` and
    renamed into place, so a failed export leaves nothing that looks complete. Returns a summary."""
    from safetensors.torch import save_file

    from megatron.data import paths
    from megatron.data.tokenizers import SentencePieceTokenizer

    try:  # before any work: a directory that cannot become the export
        paths.check_output_dir("--to-hf", out_dir, "a new or empty directory for the transformers model", new=True)
        if os.path.exists(out_dir + ".partial") and not os.path.isdir(out_dir + ".partial"):
            raise paths.PathError(f"--to-hf {out_dir}: {out_dir}.partial, where the export is staged, is a file; "
                                  "move it away or give another directory")
    except paths.PathError as e:
        raise ExportError(str(e)) from None
    state_dict, meta, iteration = read_merged_state_dict(load_dir, iteration)
    flags = dict(meta["model_flags"])
    vocab = int(meta.get("padded_vocab_size") or state_dict["embedding.word_embeddings.weight"].shape[0])
    arch, config, weights = convert_state_dict(state_dict, flags, vocab)
    if tokenizer_model is not None:
        meta = dict(meta, tokenizer=dict(meta.get("tokenizer") or {}, tokenizer_model=tokenizer_model))
    tok = meta.get("tokenizer") or {}
    special = {}
    if tok.get("tokenizer_type") == "SentencePieceTokenizer" and tok.get("tokenizer_model"):
        import sentencepiece as spm

        if os.path.isfile(tok["tokenizer_model"]):
            try:  # the one-line reason when the model file is not a SentencePiece model
                SentencePieceTokenizer(tok["tokenizer_model"])
            except ValueError as e:
                raise ExportError(str(e)) from None
            sp = spm.SentencePieceProcessor(model_file=tok["tokenizer_model"])
            special = {"bos_token_id": sp.bos_id(), "eos_token_id": sp.eos_id(), "pad_token_id": sp.pad_id()}
            special = {k: v for k, v in special.items() if v >= 0}
    config.update(special, torch_dtype="float32", dtype="float32")

    out_dir = os.path.abspath(out_dir)
    partial = out_dir + ".partial"
    if os.path.isdir(partial):  # left by an export that was killed
        shutil.rmtree(partial)
    was_empty_dir = os.path.isdir(out_dir)
    with paths.removed_on_failure(os.path.dirname(out_dir)):  # and any parent directory made for it
        os.makedirs(partial)
        try:
            # Tied weights are stored once (transformers re-ties them on load).
            save_file(weights, os.path.join(partial, "model.safetensors"), metadata={"format": "pt"})
            with open(os.path.join(partial, "config.json"), "w") as f:
                json.dump(config, f, indent=1, sort_keys=True)
            with open(os.path.join(partial, "generation_config.json"), "w") as f:
                json.dump(special, f, indent=1, sort_keys=True)
            tokenizer = _write_tokenizer(meta, partial, int(flags.get("seq_length", 1024))) if write_tokenizer else None
            if os.path.isdir(out_dir):
                os.rmdir(out_dir)  # empty (checked above): never removes anything
            os.rename(partial, out_dir)
        except BaseException:  # nothing of a failed export stays behind
            shutil.rmtree(partial, ignore_errors=True)
            if was_empty_dir and not os.path.exists(out_dir):
                os.mkdir(out_dir)  # the empty directory the user gave, as it was
            raise
    return {"out_dir": out_dir, "architecture": arch, "iteration": iteration, "tokenizer": tokenizer,
            "parameters": sum(v.numel() for v in weights.values())}
