"""tools/analyze_data.py on a small two-prefix blend: the per-sequence index equals a direct
computation, for any worker count and chunk size, and an interrupted run resumes from its parts."""

import os

import numpy as np
import pytest

from megatron.curriculum.analyzer import analyze
from megatron.curriculum.metrics import difficulty_path, token_counts_path


def _write(prefix, seqs):
    import torch
    from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder

    builder = IndexedDatasetBuilder(prefix + ".bin", dtype=np.uint16)
    for s in seqs:
        builder.add_item(torch.tensor(s, dtype=torch.int64))
        builder.end_document()
    builder.finalize(prefix + ".idx")


@pytest.fixture()
def blend(tmp_path):
    rng = np.random.default_rng(0)
    # skewed token ids (small ids common), lengths 0..40 (an empty sequence included)
    seqs = {p: [np.minimum(rng.geometric(0.08, size=n), 299) for n in rng.integers(0, 40, size=k)]
            for p, k in (("a", 37), ("b", 23))}
    prefixes = {}
    for name, s in seqs.items():
        prefixes[name] = str(tmp_path / name)
        _write(prefixes[name], s)
    return prefixes, seqs


def _direct(seqs):
    allt = np.concatenate([np.concatenate(s) for s in seqs.values()]).astype(np.int64)
    counts = np.bincount(allt)
    p = counts / counts.sum()
    return counts, {k: np.array([-np.log(p[np.asarray(t, dtype=np.int64)]).mean() if len(t) else 0.0 for t in s])
                    for k, s in seqs.items()}


@pytest.mark.parametrize("workers, chunk", [(1, 1000), (2, 5)])
def test_index_equals_direct_computation(blend, workers, chunk):
    prefixes, seqs = blend
    analyze(list(prefixes.values()), workers=workers, chunk_sequences=chunk)
    counts, rarity = _direct(seqs)
    for name, prefix in prefixes.items():
        np.testing.assert_allclose(np.load(difficulty_path(prefix, "vocab_rarity")), rarity[name], rtol=1e-12)
        np.testing.assert_array_equal(np.load(difficulty_path(prefix, "seqlen")), [len(t) for t in seqs[name]])
        np.testing.assert_array_equal(np.load(token_counts_path(prefix)), counts)
        assert not os.path.exists(prefix + ".analyze_parts")


def test_an_interrupted_run_resumes_from_its_parts(blend, monkeypatch):
    import megatron.curriculum.analyzer as an

    prefixes, seqs = blend
    paths = list(prefixes.values())
    calls = []
    real = an._rarity_chunk

    def dies_after_three(job):
        if len(calls) == 3:
            raise KeyboardInterrupt("killed")
        calls.append(job)
        return real(job)

    monkeypatch.setattr(an, "_rarity_chunk", dies_after_three)
    with pytest.raises(KeyboardInterrupt):
        analyze(paths, workers=1, chunk_sequences=5)
    parts = paths[0] + ".analyze_parts"
    done = sorted(os.path.join(parts, f) for f in os.listdir(parts) if f.startswith("rarity_"))
    assert len(done) == 3
    monkeypatch.setattr(an, "_rarity_chunk", real)
    recomputed = []
    monkeypatch.setattr(an, "_save_atomic", lambda path, arr, real_save=an._save_atomic: (recomputed.append(path), real_save(path, arr)))
    analyze(paths, workers=1, chunk_sequences=5)
    assert recomputed and not set(recomputed) & set(done)  # finished chunks were not redone
    _, rarity = _direct(seqs)
    np.testing.assert_allclose(np.load(difficulty_path(paths[0], "vocab_rarity")), rarity["a"], rtol=1e-12)


def test_cli_writes_files_and_reports_rate(blend, capsys):
    import importlib.util

    prefixes, _ = blend
    spec = importlib.util.spec_from_file_location("analyze_data", os.path.join(os.path.dirname(__file__), "..", "..", "tools", "analyze_data.py"))
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    tool.main(["--data-path", "0.5", prefixes["a"], "0.5", prefixes["b"], "--metric", "vocab_rarity"])
    out = capsys.readouterr().out
    assert "60 sequences" in out and "sequences/s" in out
    assert os.path.isfile(difficulty_path(prefixes["b"], "vocab_rarity"))
