"""Load any saved GPT checkpoint for inference at TP=1/PP=1 on one device.

A checkpoint in the current format (megatron-core ``dist_checkpointing``, see
:mod:`megatron.checkpoint`) is read straight into a TP=1/PP=1 model: megatron-core's sharded
state dicts put every shard where it belongs (SwiGLU, GQA, tied weights included).

A checkpoint of the retired per-rank format holds one ``mp_rank_TT_PPP/model_optim_rng.pt`` per
(tp, pp) rank. Merging them into one state dict takes two rules:

* **Tensor parallelism.** A parameter listed in the rank file's ``tp_partition_dims`` is a shard:
  the full tensor is the concatenation of the shards of tp ranks 0..tp-1 along that dim.
  megatron-core lays out the fused QKV grouped per query group, so plain concatenation is right.
  SwiGLU's fc1 is not: each rank holds [gate shard; up shard], so the merge concatenates the
  gate halves, then the up halves (what a TP=1 model computes silu(gate) * up from). Everything else
  (norms, row-parallel biases, position embeddings) is replicated: rank 0's copy is used.
* **Pipeline parallelism.** Stage ``p`` numbers its layers from 0; its ``layer_offsets`` entry is
  the global index of its first layer, so ``decoder.layers.{i}.`` becomes
  ``decoder.layers.{i + offset}.``. Embeddings live on the first stage, the final norm and the
  output layer on the last. With tied embeddings the last stage's ``output_layer.weight`` is a
  copy of the word embeddings that a single-stage model does not have: it is dropped.

Virtual pipeline stages (a list of model chunks per rank, one offset each) merge the same way.
The merged state is loaded **strictly** into a model built from the checkpoint's own model flags
with random-LTD off (random-LTD layers have the stock layers' keys, so nothing else changes).
"""

from __future__ import annotations

import dataclasses
import os
import re
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple

import torch

from megatron.checkpoint.files import (
    TRACKER,
    CheckpointError,
    check_file,
    complete_iterations,
    holds_checkpoints,
    iter_dir,
    latest_iteration,
    read_manifest,
)

read_metadata = read_manifest  # the name the evaluation CLI and launchers use


def rank_dir_name(tp_rank: int, pp_rank: int) -> str:
    """A rank directory of the retired per-rank format."""
    return f"mp_rank_{tp_rank:02d}_{pp_rank:03d}"

__all__ = [
    "CheckpointError",
    "LoadedModel",
    "EVAL_ONLY_FLAGS",
    "ensure_inference_runtime",
    "resolve_iteration",
    "check_model_flags",
    "merge_rank_states",
    "read_merged_state_dict",
    "load_for_inference",
    "write_merged_checkpoint",
]

# Model flags that do not change what the weights mean: an evaluation may set them freely.
# --seq-length is the evaluation window (bounded by --max-position-embeddings for learned
# positions); dropout is always off at evaluation; the init std only matters before training.
EVAL_ONLY_FLAGS = ("seq_length", "hidden_dropout", "attention_dropout", "init_method_std")

_LAYER_RE = re.compile(r"^(decoder\.layers\.)(\d+)(\..*)$")
_RANK_FILE = "model_optim_rng.pt"
_SWIGLU_FC1 = ("mlp.linear_fc1.weight", "mlp.linear_fc1.bias")


# --------------------------------------------------------------------------------------- runtime


def ensure_inference_runtime(force_cpu: bool = False):
    """Make sure torch.distributed and megatron-core's model-parallel groups exist at TP=1/PP=1
    in this process (a single process needs no launcher). Returns the :class:`DeviceInfo`."""
    from megatron.core import parallel_state as ps

    from megatron.runtime.device import init_distributed, select_device, set_seed

    if ps.model_parallel_is_initialized():
        tp, pp = ps.get_tensor_model_parallel_world_size(), ps.get_pipeline_model_parallel_world_size()
        if tp != 1 or pp != 1:
            raise RuntimeError(
                f"evaluation runs the merged model at TP=1/PP=1, but this process already has "
                f"TP={tp}, PP={pp} groups; evaluate in a fresh process"
            )
        return select_device(force_cpu)
    info = init_distributed(1, 1, force_cpu=force_cpu)
    set_seed(1234)
    return info


# ----------------------------------------------------------------------------------- checkpoint


def resolve_iteration(load_dir: str, iteration: Optional[int] = None) -> int:
    """The iteration to read: ``iteration`` if given, else the tracker's; clear errors otherwise."""
    if not load_dir or not os.path.isdir(load_dir):
        raise CheckpointError(f"--load {load_dir!r} is not a directory")
    if iteration is None:
        iteration = latest_iteration(load_dir)
        if iteration is None:
            found = sorted(complete_iterations(load_dir))
            hint = f" (complete iterations found: {found}; pick one with --iteration)" if found else ""
            raise CheckpointError(f"--load {load_dir!r} holds no checkpoint: {TRACKER} is missing{hint}")
    return int(iteration)


def check_model_flags(saved_flags: Mapping[str, Any], given_flags: Optional[Mapping[str, Any]]) -> None:
    """Refuse when a flag the user passed differs from the checkpoint's, naming every difference.
    Flags in :data:`EVAL_ONLY_FLAGS` are not compared; unknown names are an error too."""
    if not given_flags:
        return
    diffs, unknown = [], []
    for name, value in given_flags.items():
        if name in EVAL_ONLY_FLAGS:
            continue
        if name not in saved_flags:
            unknown.append(name)
        elif saved_flags[name] != value:
            diffs.append(f"--{name.replace('_', '-')}: checkpoint has {saved_flags[name]!r}, you passed {value!r}")
    if unknown:
        raise CheckpointError("the checkpoint records no model flag named " + ", ".join(unknown))
    if diffs:
        raise CheckpointError(
            "checkpoint model flags differ from the flags you passed:\n  " + "\n  ".join(diffs)
            + "\nDrop those flags (the checkpoint's own values are used) or load the right checkpoint."
        )


def _load_rank_file(path: str) -> Dict[str, Any]:
    if not os.path.isfile(path):
        raise CheckpointError(f"{path} is missing: the checkpoint is damaged or was not fully copied")
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # noqa: BLE001 - a truncated or garbled file raises many kinds of errors
        raise CheckpointError(f"{path} cannot be read ({type(e).__name__}: {e}): the checkpoint is damaged") from e
    if not isinstance(state, dict) or "model" not in state:
        raise CheckpointError(f"{path} holds no 'model' entry: not a Megatron-LTD checkpoint, or damaged")
    return state


def _chunks(state: Dict[str, Any]) -> List[Tuple[Dict[str, Any], Dict[str, int], int]]:
    """(state dict, tp partition dims, layer offset) per model chunk of one rank file."""
    models = state["model"]
    models = models if isinstance(models, list) else [models]
    dims = state.get("tp_partition_dims") or [{} for _ in models]
    offsets = state.get("layer_offsets") or [0 for _ in models]
    if not (len(models) == len(dims) == len(offsets)):
        raise CheckpointError("rank file has inconsistent model / tp_partition_dims / layer_offsets lengths")
    return list(zip(models, dims, offsets))


def _shift_layer(name: str, offset: int) -> str:
    m = _LAYER_RE.match(name)
    if not m or offset == 0:
        return name
    return f"{m.group(1)}{int(m.group(2)) + offset}{m.group(3)}"


def merge_rank_states(rank_states: Mapping[Tuple[int, int], Dict[str, Any]], tp: int, pp: int,
                      tied_embeddings: bool = True, dims_out: Optional[Dict[str, int]] = None,
                      swiglu: bool = False) -> Dict[str, Any]:
    """Merge per-(tp_rank, pp_rank) rank-file dicts into one TP=1/PP=1 GPT state dict.
    ``dims_out`` (optional) receives {merged key: partition dim} of the TP-sharded parameters."""
    merged: Dict[str, Any] = {}
    for pp_rank in range(pp):
        per_tp = [_chunks(rank_states[(t, pp_rank)]) for t in range(tp)]
        for chunk_idx, (sd0, dims, offset) in enumerate(per_tp[0]):
            for name, value in sd0.items():
                if name in dims and tp > 1:
                    parts = [per_tp[t][chunk_idx][0][name] for t in range(tp)]
                    if swiglu and name.endswith(_SWIGLU_FC1):
                        halves = [p.chunk(2, dim=dims[name]) for p in parts]
                        parts = [h[0] for h in halves] + [h[1] for h in halves]
                    value = torch.cat(parts, dim=dims[name])
                key = _shift_layer(name, offset)
                if dims_out is not None and name in dims:
                    dims_out[key] = int(dims[name])
                if key in merged and key != "output_layer._extra_state":
                    raise CheckpointError(f"parameter {key} appears on two pipeline stages: layer offsets are wrong")
                merged[key] = value
    if tied_embeddings:
        merged.pop("output_layer.weight", None)
        if dims_out is not None:
            dims_out.pop("output_layer.weight", None)
    return merged


def read_merged_state_dict(load_dir: str, iteration: Optional[int] = None,
                           dims_out: Optional[Dict[str, int]] = None) -> Tuple[Dict[str, Any], Dict[str, Any], int]:
    """(merged TP=1/PP=1 state dict, metadata, iteration) of a saved run, in either format."""
    iteration = resolve_iteration(load_dir, iteration)
    meta = read_metadata(load_dir, iteration)
    for key in ("model_flags", "layout"):
        if key not in meta:
            raise CheckpointError(f"{iter_dir(load_dir, iteration)}/metadata.json has no {key!r}: damaged checkpoint")
    if meta.get("model_type", "gpt") != "gpt":
        raise CheckpointError(f"only GPT checkpoints can be evaluated zero-shot (this one is {meta.get('model_type')!r})")
    d = iter_dir(load_dir, iteration)
    if meta["format"] != "legacy":
        return _read_dist_state_dict(d, meta), meta, iteration
    layout = meta["layout"]
    tp, pp = int(layout.get("tp", 1)), int(layout.get("pp", 1))
    states = {(t, p): _load_rank_file(os.path.join(d, rank_dir_name(t, p), _RANK_FILE))
              for t in range(tp) for p in range(pp)}
    tied = not meta["model_flags"].get("untie_embeddings_and_output_weights", False)
    swiglu = bool(meta["model_flags"].get("swiglu", False))
    return merge_rank_states(states, tp, pp, tied_embeddings=tied, dims_out=dims_out, swiglu=swiglu), meta, iteration


def _model_config(meta: Dict[str, Any], overrides: Optional[Mapping[str, Any]] = None):
    from megatron.training.config import ModelConfig

    known = {f.name for f in dataclasses.fields(ModelConfig)}
    flags = {k: v for k, v in meta["model_flags"].items() if k in known}
    flags.update(hidden_dropout=0.0, attention_dropout=0.0, **(overrides or {}))
    try:
        return ModelConfig(**flags)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"cannot build the model from the checkpoint's flags: {e}") from e


def _read_dist_state_dict(d: str, meta: Dict[str, Any]) -> Dict[str, Any]:
    """Every file checked against the manifest (size and CRC-32), then the weights read into a
    TP=1/PP=1 fp32 model on the host; its state dict."""
    from megatron.checkpoint import load_weights
    from megatron.training.config import ParallelConfig
    from megatron.training.gpt import gpt_model_from_flags
    from megatron.training.model_setup import transformer_config

    for rel, expected in sorted((meta.get("files") or {}).items()):
        check_file(d, rel, expected)
    ensure_inference_runtime()
    tcfg = transformer_config(_model_config(meta), ParallelConfig(), use_gpu=False)
    tcfg.perform_initialization = False  # every weight comes from the checkpoint
    model = gpt_model_from_flags(_model_config(meta), tcfg, int(meta["padded_vocab_size"]))
    try:
        load_weights(model, d)
    except Exception as e:  # noqa: BLE001 - a checkpoint that does not fit is named, whatever megatron-core raised
        raise CheckpointError(f"cannot read the weights of {d} into the model its flags describe: {e}") from e
    return dict(model.state_dict())


# ---------------------------------------------------------------------------------------- model


@dataclasses.dataclass
class LoadedModel:
    """A GPT model ready for inference, with what is needed to feed it."""

    model: torch.nn.Module
    model_config: Any  # megatron.training.config.ModelConfig (the checkpoint's, eval-only flags applied)
    metadata: Dict[str, Any]
    iteration: int
    device: torch.device
    padded_vocab_size: int
    tokenizer: Any = None  # megatron.data.tokenizers.Tokenizer, when one could be built
    load_dir: str = ""

    @property
    def seq_length(self) -> int:
        return int(self.model_config.seq_length)

    @torch.no_grad()
    def logits(self, tokens: torch.Tensor) -> torch.Tensor:
        """[b, s] token ids (right-padded is fine: the model is causal) -> [b, s, vocab] float32."""
        tokens = tokens.to(self.device)
        b, s = tokens.shape
        position_ids = torch.arange(s, device=self.device).unsqueeze(0).expand(b, s)
        out = self.model(tokens, position_ids, None)
        return out.float()


def _tokenizer_from_metadata(meta: Dict[str, Any], override=None):
    from megatron.data.tokenizers import TokenizerConfig, build_tokenizer

    if override is not None:
        cfg = override
    else:
        saved = meta.get("tokenizer")
        if not saved:
            return None
        cfg = TokenizerConfig(**saved)
    return build_tokenizer(cfg)


def load_for_inference(
    load_dir: str,
    iteration: Optional[int] = None,
    model_flags: Optional[Mapping[str, Any]] = None,
    tokenizer_config=None,
    seq_length: Optional[int] = None,
    dtype: torch.dtype = torch.float32,
    force_cpu: bool = False,
    build_tokenizer: bool = True,
) -> LoadedModel:
    """Load the checkpoint under ``load_dir`` (its tracker's iteration unless ``iteration``) as one
    TP=1/PP=1 GPT model in eval mode, random-LTD off, on the GPU if one is used, else the CPU.

    ``model_flags``: flags the user passed ({field name: value}); any that differs from the
    checkpoint's is refused with the names. ``seq_length``: the evaluation window (default: the
    checkpoint's). ``tokenizer_config``: replaces the saved tokenizer (e.g. a moved model file).
    """
    from megatron.training.gpt import gpt_model_from_flags
    from megatron.training.config import ModelConfig, ParallelConfig, PrecisionConfig
    from megatron.training.model_setup import transformer_config

    state_dict, meta, iteration = read_merged_state_dict(load_dir, iteration)
    saved_flags = dict(meta["model_flags"])
    check_model_flags(saved_flags, model_flags)
    known = {f.name for f in dataclasses.fields(ModelConfig)}
    flags = {k: v for k, v in saved_flags.items() if k in known}
    flags.update(hidden_dropout=0.0, attention_dropout=0.0)
    if seq_length is not None:
        flags["seq_length"] = int(seq_length)
    try:
        model_cfg = ModelConfig(**flags)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"cannot build the model from the checkpoint's flags: {e}") from e

    info = ensure_inference_runtime(force_cpu)
    precision = PrecisionConfig(bf16=dtype == torch.bfloat16, fp16=dtype == torch.float16)
    tcfg = transformer_config(model_cfg, ParallelConfig(), precision, use_gpu=info.use_gpu)
    tcfg.perform_initialization = False  # every weight comes from the checkpoint
    vocab = meta.get("padded_vocab_size")
    if vocab is None:
        word = state_dict.get("embedding.word_embeddings.weight")
        if word is None:
            raise CheckpointError("checkpoint has neither padded_vocab_size nor word embeddings: damaged")
        vocab = int(word.shape[0])
    model = gpt_model_from_flags(model_cfg, tcfg, int(vocab))
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as e:
        raise CheckpointError(
            f"checkpoint {iter_dir(load_dir, iteration)} does not fit the model its flags describe "
            f"(damaged, or saved by a different model definition):\n{e}"
        ) from e
    model = model.to(device=info.device, dtype=dtype).eval()
    tokenizer = _tokenizer_from_metadata(meta, tokenizer_config) if build_tokenizer else None
    return LoadedModel(model=model, model_config=model_cfg, metadata=meta, iteration=iteration,
                       device=info.device, padded_vocab_size=int(vocab), tokenizer=tokenizer,
                       load_dir=load_dir)


# ------------------------------------------------------------------------------------ conversion


def write_merged_checkpoint(load_dir: str, save_dir: str, iteration: Optional[int] = None) -> str:
    """Write ``load_dir``'s checkpoint (either format, any layout) under ``save_dir`` as a TP=1/PP=1
    checkpoint of the current format, weights only (resume it with --finetune or --no-load-optim):
    the one-time conversion of checkpoints written in the retired per-rank format. Refused when
    ``save_dir`` already holds checkpoints (another run's, whose tracker it would move). Atomic
    like every save. Returns the new iteration directory."""
    from megatron.checkpoint import Saver

    if holds_checkpoints(save_dir):
        raise CheckpointError(f"--save {save_dir} already holds checkpoints (a tracker or iter_* directories); "
                              "converting into it could replace them or move its tracker: give an empty or new directory")
    loaded = load_for_inference(load_dir, iteration, build_tokenizer=False, force_cpu=True)
    meta = dict(loaded.metadata)
    for key in ("files", "complete", "saved_at", "save_seconds", "state_bytes", "world_size", "format", "format_version"):
        meta.pop(key, None)
    meta.update(layout={"tp": 1, "pp": 1, "dp": 1, "vpp": None}, distributed_optimizer=False,
                converted_from={"load": os.path.abspath(load_dir), "layout": loaded.metadata.get("layout"),
                                "format": loaded.metadata.get("format")})
    trainer_state = {"counters": meta["counters"]} if "counters" in meta else {}
    from megatron.data.paths import removed_on_failure

    # The Saver removes its staging directory when the write fails, this the directories made for it.
    with removed_on_failure(save_dir):
        return Saver(save_dir, say=lambda _: None).save(loaded.iteration, [loaded.model], None, None, trainer_state, meta)


def iter_layer_keys(state_dict: Mapping[str, Any]) -> Iterable[int]:
    """Global layer indices present in a merged state dict (sorted, for checks and tests)."""
    return sorted({int(m.group(2)) for k in state_dict if (m := _LAYER_RE.match(k))})
