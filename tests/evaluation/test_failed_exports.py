"""A Hugging Face export or a checkpoint conversion that fails part-way leaves the disk as it was:
no ``.partial`` staging directory, no parent directory made for it, the empty directory the user
gave still there (issue 26). The failure is injected after real files were written."""

import errno
import os
import sys
import types

import pytest


def _tree(root):
    return sorted(os.path.relpath(os.path.join(dp, n), root) for dp, ds, fs in os.walk(root) for n in ds + fs)


@pytest.fixture
def safetensors_or_stand_in(monkeypatch):
    """The real safetensors, or (it is an optional extra) a ``save_file`` writing real bytes."""
    try:
        import safetensors.torch  # noqa: F401
        return
    except ImportError:
        pass
    import torch

    mod = types.ModuleType("safetensors.torch")

    def save_file(tensors, path, metadata=None):
        torch.save(dict(tensors), path)

    mod.save_file = save_file
    monkeypatch.setitem(sys.modules, "safetensors", types.ModuleType("safetensors"))
    monkeypatch.setitem(sys.modules, "safetensors.torch", mod)


def test_failed_hf_export_leaves_nothing(eval_runtime, trained_ckpt, safetensors_or_stand_in, tmp_path, monkeypatch):
    from megatron.evaluation import hf_export

    seen = {}

    def fail_after_the_weights(meta, out_dir, max_length):  # the weights and config.json are on disk by now
        seen["staged"] = sorted(os.listdir(out_dir))
        raise OSError(errno.EIO, "injected write failure")

    empty = tmp_path / "empty"
    empty.mkdir()
    before = _tree(tmp_path)
    with monkeypatch.context() as m:  # mid-write, into a directory whose parents do not exist yet
        m.setattr(hf_export, "_write_tokenizer", fail_after_the_weights)
        with pytest.raises(OSError, match="injected"):
            hf_export.export_to_hf(trained_ckpt, str(tmp_path / "new" / "deeper" / "hf"))
    assert {"model.safetensors", "config.json"} <= set(seen["staged"])
    assert _tree(tmp_path) == before

    real_rename = os.rename

    def rename_fails(src, dst):
        if src.endswith(".partial"):
            raise OSError(errno.EXDEV, "injected rename failure")
        return real_rename(src, dst)

    with monkeypatch.context() as m:  # at the final rename, into the empty directory given
        m.setattr(os, "rename", rename_fails)
        with pytest.raises(OSError, match="injected"):
            hf_export.export_to_hf(trained_ckpt, str(empty), write_tokenizer=False)
    assert _tree(tmp_path) == before and os.path.isdir(empty)

    # Without a failure the same export completes (the injection points are on the real path).
    out = hf_export.export_to_hf(trained_ckpt, str(empty), write_tokenizer=False)
    assert sorted(os.listdir(out["out_dir"])) == ["config.json", "generation_config.json", "model.safetensors"]


def test_failed_conversion_leaves_nothing(eval_runtime, trained_ckpt, tmp_path, monkeypatch):
    from megatron.checkpoint import files
    from megatron.evaluation.checkpoint_loader import write_merged_checkpoint

    seen = {}

    def manifest_fails(directory, manifest):  # every shard is written when the manifest comes
        seen["staged"] = sorted(os.listdir(directory))
        raise OSError(errno.EIO, "injected write failure")

    with monkeypatch.context() as m:
        m.setattr(files, "write_manifest", manifest_fails)
        with pytest.raises(OSError, match="injected"):
            write_merged_checkpoint(trained_ckpt, str(tmp_path / "new" / "converted"))
    assert any(n.endswith(".distcp") for n in seen["staged"]), seen
    assert _tree(tmp_path) == []
