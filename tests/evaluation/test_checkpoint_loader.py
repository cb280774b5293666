"""Loading saved checkpoints for inference: TP/PP merging, conversion, and refusals."""

import json
import os
import shutil

import pytest
import torch

from megatron.evaluation.checkpoint_loader import (
    CheckpointError,
    load_for_inference,
    read_merged_state_dict,
)
from megatron.checkpoint import iter_dir
from tests.evaluation.ckpt_utils import body_full_state, body_train_and_save, corpus_tokens, make_corpus
from tests.multirank import run_multirank


def _probe():
    ids = corpus_tokens(make_corpus(4, seed=42))
    return torch.tensor([ids[:48], ids[48:96], ids[96:144]])


def test_random_ltd_checkpoint_loads_strictly_into_baseline(loaded, trained):
    meta = loaded.metadata
    assert meta["random_ltd"]["enabled"] and meta["layout"] == {"tp": 1, "pp": 1, "dp": 1, "vpp": None}
    from megatron.ltd.layer import RandomLTDTransformerLayer

    assert not any(isinstance(m, RandomLTDTransformerLayer) for m in loaded.model.modules())
    assert not loaded.model.training
    saved = trained[1]
    for k, v in loaded.model.state_dict().items():
        if isinstance(v, torch.Tensor):
            assert torch.equal(v, saved[k]), k


def test_tp2_checkpoint_merged_gives_tp2_logits(eval_runtime, tmp_path):
    ckpt = str(tmp_path / "tp2")
    probe = _probe()
    out = run_multirank(body_train_and_save, world_size=2, tp=2,
                        kwargs={"out_dir": ckpt, "steps": 15, "probe": probe.tolist(), "seed": 3})
    tp2_logits = out[0]["logits"]
    assert torch.equal(tp2_logits, out[1]["logits"])
    merged = load_for_inference(ckpt)
    assert merged.padded_vocab_size == out[0]["vocab"] == tp2_logits.shape[-1]
    logits = merged.logits(probe)
    assert torch.allclose(logits, tp2_logits, rtol=1e-4, atol=1e-4), float((logits - tp2_logits).abs().max())

    # The converter writes the same weights as a TP=1/PP=1 checkpoint, atomically, tracker last.
    from megatron.evaluation.cli import convert_main

    dst = str(tmp_path / "merged")
    assert convert_main(["--load", ckpt, "--save", dst]) == 0
    assert open(os.path.join(dst, "latest_checkpointed_iteration.txt")).read().strip() == "15"
    assert not [n for n in os.listdir(dst) if n.endswith(".partial")]
    meta = json.load(open(os.path.join(iter_dir(dst, 15), "manifest.json")))
    assert meta["layout"]["tp"] == 1 and meta["converted_from"]["layout"]["tp"] == 2
    again = load_for_inference(dst)
    assert torch.equal(again.logits(probe), logits)
    # A directory that holds checkpoints is never converted into: its tracker would move.
    other = str(tmp_path / "other")
    assert convert_main(["--load", ckpt, "--save", other]) == 0
    os.rename(os.path.join(other, "iter_0000015"), os.path.join(other, "iter_0000099"))
    with open(os.path.join(other, "latest_checkpointed_iteration.txt"), "w") as f:
        f.write("99")
    assert convert_main(["--load", ckpt, "--save", other]) == 2
    assert sorted(os.listdir(other)) == ["iter_0000099", "latest_checkpointed_iteration.txt"]
    assert open(os.path.join(other, "latest_checkpointed_iteration.txt")).read() == "99"


def test_tp2_pp2_untied_merge_equals_single_rank_model(tmp_path):
    flags = {"untie_embeddings_and_output_weights": True, "num_layers": 4}
    ckpt = str(tmp_path / "tp2pp2")
    run_multirank(body_train_and_save, world_size=4, tp=2, pp=2,
                  kwargs={"out_dir": ckpt, "steps": 0, "flags": flags, "deterministic": True, "seed": 5})
    ref = run_multirank(body_full_state, world_size=1, kwargs={"flags": flags, "seed": 5, "vocab_tp": 2})[0]
    merged, meta, it = read_merged_state_dict(ckpt)
    assert meta["layout"]["pp"] == 2 and it == 1
    assert set(merged) - {k for k in merged if k.endswith("_extra_state")} == set(ref)
    for k, v in ref.items():
        assert torch.equal(merged[k], v), k
    assert "decoder.layers.3.mlp.linear_fc1.weight" in merged and "output_layer.weight" in merged


def test_tied_pp2_drops_output_copy(tmp_path):
    ckpt = str(tmp_path / "pp2")
    run_multirank(body_train_and_save, world_size=2, pp=2,
                  kwargs={"out_dir": ckpt, "steps": 0, "deterministic": True, "seed": 2, "flags": {"num_layers": 4}})
    ref = run_multirank(body_full_state, world_size=1, kwargs={"seed": 2, "flags": {"num_layers": 4}})[0]
    merged, _, _ = read_merged_state_dict(ckpt)
    assert "output_layer.weight" not in merged
    for k, v in ref.items():
        assert torch.equal(merged[k], v), k


def test_missing_damaged_and_mismatched_checkpoints_are_refused(eval_runtime, trained_ckpt, tmp_path):
    with pytest.raises(CheckpointError, match="is not a directory"):
        load_for_inference(str(tmp_path / "nowhere"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="holds no checkpoint"):
        load_for_inference(str(tmp_path / "empty"))

    broken = tmp_path / "broken"
    shutil.copytree(trained_ckpt, broken)
    it = int(open(broken / "latest_checkpointed_iteration.txt").read())
    shard = broken / f"iter_{it:07d}" / "__0_0.distcp"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=f"{shard} is altered"):
        load_for_inference(str(broken))
    shard.write_bytes(bytes(data[: len(data) // 2]))
    with pytest.raises(CheckpointError, match=f"{shard} is truncated"):
        load_for_inference(str(broken))
    shard.unlink()
    with pytest.raises(CheckpointError, match=f"{shard} is missing"):
        load_for_inference(str(broken))
    os.remove(broken / f"iter_{it:07d}" / "manifest.json")
    with pytest.raises(CheckpointError, match="missing or incomplete"):
        load_for_inference(str(broken))

    with pytest.raises(CheckpointError) as e:
        load_for_inference(trained_ckpt, model_flags={"num_layers": 5, "hidden_size": 64, "swiglu": True,
                                                      "seq_length": 32})
    msg = str(e.value)
    assert "--num-layers: checkpoint has 3, you passed 5" in msg and "--swiglu" in msg
    assert "--hidden-size" not in msg and "--seq-length" not in msg
    # Matching flags and an evaluation window change are accepted.
    ok = load_for_inference(trained_ckpt, model_flags={"num_layers": 3}, seq_length=32)
    assert ok.seq_length == 32


def test_checkpoint_in_the_retired_per_rank_format_is_read_and_converted_once(loaded, trained, tmp_path):
    from megatron.checkpoint import ResumeOptions, load
    from megatron.evaluation.cli import convert_main
    from tests.evaluation.ckpt_utils import write_legacy_checkpoint

    old, new = str(tmp_path / "old"), str(tmp_path / "new")
    meta = {k: v for k, v in loaded.metadata.items() if k not in ("files", "format", "complete")}
    write_legacy_checkpoint(old, 7, trained[1], meta)
    # Training refuses it with the way out; the evaluation loader reads it; the converter writes it anew.
    with pytest.raises(CheckpointError, match="retired per-rank format.*convert_checkpoint.py --load"):
        load(old, [], None, None, {}, {}, ResumeOptions())
    probe = _probe()
    expected = loaded.logits(probe)
    assert torch.equal(load_for_inference(old).logits(probe), expected)
    assert convert_main(["--load", old, "--save", new]) == 0
    converted = load_for_inference(new)
    assert converted.metadata["format"] == "torch_dist" and converted.metadata["converted_from"]["format"] == "legacy"
    assert torch.equal(converted.logits(probe), expected)
