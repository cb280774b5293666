"""Curriculum learning inside the real Trainer (in-process, one rank): exact token accounting and
the LR at --min-lr on the last step with random-LTD on, kill-and-resume mid-curriculum (sequence
length and the vocab-rarity sampler over an analyzed corpus), and the resume and flag checks."""

import os

import numpy as np
import pytest

from megatron.curriculum import CurriculumChanged, CurriculumStarved, difficulty
from megatron.training.arguments import ConfigError, parse_pretrain_config
from tests.training.inprocess import TINY, train, trainer_runtime  # noqa: F401 (fixture)
from tests.training.run_utils import read_metrics

pytestmark = pytest.mark.usefixtures("trainer_runtime")

LTD = ["--random-ltd", "--random-ltd-layers", "1", "--random-ltd-min-seq", "8", "--random-ltd-seq-step", "8",
       "--random-ltd-require-steps", "6"]
SEQLEN = ["--curriculum-metric", "seqlen_truncate", "--curriculum-min", "8", "--curriculum-step-increment", "8",
          "--curriculum-steps", "5"]
NO_DROPOUT = ["--hidden-dropout", "0.0", "--attention-dropout", "0.0"]


def _rows(path):
    return read_metrics(path)


def test_budget_is_exact_and_lr_ends_at_min_lr_with_curriculum_and_random_ltd(tmp_path):
    m = str(tmp_path / "m.jsonl")
    budget = 1500  # layer-averaged tokens; the curriculum makes early steps far cheaper than 4 x 32
    summary, out = train(TINY + LTD + SEQLEN + ["--train-layer-averaged-tokens", str(budget), "--lr-schedule-unit",
                                                "layer-averaged-tokens", "--metrics-file", m])
    rows = _rows(m)
    assert "curriculum seqlen_truncate fixed_linear (8 -> 32 tokens by 8 until step 5" in out
    seq = [r["seq_length"] for r in rows]
    assert seq[:6] == [8, 8, 16, 16, 24, 32]  # the pacing, walked by the trainer
    assert all(r["kept_length"] <= r["seq_length"] for r in rows)  # random-LTD never exceeds it
    assert rows[-1]["lr"] == pytest.approx(1e-4, rel=1e-9)  # --min-lr on the last iteration
    assert summary["layer_averaged_tokens"] >= budget > summary["layer_averaged_tokens"] - 4 * 32
    # tokens counted as the work done: each step adds gbs x its truncated length
    assert summary["raw_tokens"] == sum(4 * s for s in seq)
    layer_tokens = sum(4 * (s * 1 + r["kept_length"] * 1) for s, r in zip(seq, rows))  # 2 layers, 1 drops
    assert summary["layer_tokens"] == layer_tokens and summary["layer_averaged_tokens"] == layer_tokens // 2


def _resume_matches(tmp_path, args, n=8, stop=4):
    full, part1, part2 = (str(tmp_path / f"{x}.jsonl") for x in ("full", "p1", "p2"))
    ck = str(tmp_path / "ck")
    train(args + ["--train-iters", str(n), "--metrics-file", full])
    train(args + ["--train-iters", str(n), "--save", ck, "--exit-interval", str(stop), "--metrics-file", part1])
    train(args + ["--train-iters", str(n), "--load", ck, "--save", ck, "--metrics-file", part2])
    want = [r["loss"] for r in _rows(full)]
    got = [r["loss"] for r in _rows(part1)] + [r["loss"] for r in _rows(part2)]
    assert len(got) == n and got == want  # bit for bit: same samples, same lengths, same drops
    return ck


def test_kill_and_resume_mid_curriculum_is_exact_and_a_changed_curriculum_is_refused(tmp_path):
    args = TINY + NO_DROPOUT + LTD + SEQLEN
    ck = _resume_matches(tmp_path, args)
    changed = [a if a != "5" else "7" for a in args]  # --curriculum-steps 5 -> 7
    mid = os.path.join(ck, "iter_0000004")
    with pytest.raises(CurriculumChanged, match="--curriculum-steps: checkpoint 5, this run 7"):
        train(changed + ["--train-iters", "8", "--load", mid])
    without = TINY + NO_DROPOUT + LTD
    with pytest.raises(CurriculumChanged, match="--curriculum-metric: checkpoint 'seqlen_truncate', this run None"):
        train(without + ["--train-iters", "8", "--load", mid])
    summary, out = train(changed + ["--train-iters", "8", "--load", mid, "--curriculum-allow-change"])
    assert summary["iterations"] == 8 and "curriculum changed (--curriculum-allow-change)" in out


@pytest.fixture(scope="module")
def analyzed_corpus(tmp_path_factory):
    """A small indexed corpus (Zipf-like token ids, documents of varied length), analyzed."""
    import torch
    from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder

    from megatron.curriculum.analyzer import analyze

    prefix = str(tmp_path_factory.mktemp("corpus") / "docs")
    rng = np.random.default_rng(0)
    builder = IndexedDatasetBuilder(prefix + ".bin", dtype=np.uint16)
    for _ in range(300):
        scale = rng.choice([0.5, 0.1, 0.03])  # easy (common ids) to hard (rare ids) documents
        doc = np.minimum(rng.geometric(scale, size=rng.integers(8, 60)), 126) + 1
        builder.add_item(torch.tensor(np.append(doc, 0), dtype=torch.int64))
        builder.end_document()
    builder.finalize(prefix + ".idx")
    analyze([prefix], ["vocab_rarity"])
    return prefix


def test_vocab_rarity_sampler_starts_easy_and_resumes_exactly(tmp_path, analyzed_corpus):
    data = [a for a in TINY if a != "--mock-data"]
    args = data + NO_DROPOUT + ["--train-data-path", analyzed_corpus, "--valid-data-path", analyzed_corpus,
                                "--tokenizer-type", "NullTokenizer", "--curriculum-metric", "vocab_rarity",
                                "--curriculum-min", "20", "--curriculum-steps", "6", "--curriculum-step-increment", "10"]
    _resume_matches(tmp_path, args)
    # the first steps' losses sit on the easy fifth of the data: lower than a baseline's
    easy = [r["loss"] for r in _rows(str(tmp_path / "full.jsonl"))][:2]
    base = str(tmp_path / "base.jsonl")
    train([a for a in args if not a.startswith("--curriculum") and a not in ("vocab_rarity", "20", "6", "10")]
          + ["--train-iters", "2", "--metrics-file", base])
    assert max(easy) < min(r["loss"] for r in _rows(base))
    # a limit that admits fewer samples than a global batch stops the build, with the count
    starving = [a if a != "20" else "1" for a in args]
    with pytest.raises(CurriculumStarved, match=r"admits \d+ of the \d+ training samples, fewer than one global batch \(4\)"):
        train(starving + ["--train-iters", "2", "--global-batch-size", "4"])


@pytest.mark.parametrize("extra, message", [
    (["--curriculum-min", "8"], "given without --curriculum-metric"),
    (SEQLEN[:-2] + ["--curriculum-steps", "0"], "--curriculum-steps"),
    (["--curriculum-metric", "seqlen_truncate", "--curriculum-min", "4", "--curriculum-step-increment", "4",
      "--curriculum-steps", "5"] + LTD + ["--random-ltd-strata", "8"], r"multiples of the random-LTD strata \(8\).* give 4"),
])
def test_bad_curriculum_flags_are_refused_before_any_work(extra, message):
    with pytest.raises(ConfigError, match=message):
        parse_pretrain_config(TINY + ["--train-iters", "2"] + extra, world_size=1)


def test_pacing_of_the_parsed_config():
    cfg = parse_pretrain_config(TINY + ["--train-iters", "2"] + SEQLEN + ["--curriculum-schedule", "fixed_root"], world_size=1)
    assert [difficulty(t, cfg.curriculum, 32) for t in range(6)] == [8, 16, 16, 24, 24, 32]
