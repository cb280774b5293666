"""Per-sample difficulty of GPT training samples against a direct computation, the seqlen batch
transforms, and the resume check."""

import numpy as np
import pytest
import torch

from megatron.curriculum.batch import apply_seqlen
from megatron.curriculum.config import CurriculumConfig
from megatron.curriculum.metrics import gpt_sample_values, sequence_rarity, token_cost
from megatron.curriculum.resume import CurriculumChanged, check_curriculum, curriculum_record


def test_gpt_sample_values_equal_the_token_weighted_mean_over_each_window():
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 30, size=12)
    values = rng.random(12)
    docs = rng.permutation(np.concatenate([np.arange(12), np.arange(12)]))  # two epochs, shuffled
    seq = 10  # windows of seq + 1 tokens, sharing one token, as megatron-core's sample index
    per_token = np.concatenate([np.full(lengths[d], values[d]) for d in docs])
    starts = np.arange(0, len(per_token) - seq - 1, seq)
    C = np.concatenate([[0], np.cumsum(lengths[docs])])
    pos = [(int(np.searchsorted(C, a, side="right") - 1), int(a - C[np.searchsorted(C, a, side="right") - 1]))
           for a in np.append(starts, starts[-1] + seq)]
    sample_index = np.array(pos)
    shuffle = rng.permutation(len(starts))
    got = gpt_sample_values(values, lengths, docs, sample_index, shuffle)
    want = [per_token[starts[i]:starts[i] + seq + 1].mean() for i in shuffle]
    np.testing.assert_allclose(got, want, rtol=1e-12)


def test_rarity_is_the_mean_neg_log_frequency():
    counts = np.array([6, 3, 1, 0])
    cost = token_cost(counts)
    assert cost[0] == pytest.approx(-np.log(6 / 10)) and cost[3] == pytest.approx(np.log(10))  # unseen: as if seen once
    assert sequence_rarity([0, 2], cost) == pytest.approx((np.log(10 / 6) + np.log(10)) / 2)
    assert sequence_rarity([0, 0], cost) < sequence_rarity([1, 2], cost)  # common tokens are easier


def _batch(b=2, s=16):
    tokens = torch.arange(b * s).view(b, s)
    return {"tokens": tokens, "labels": tokens + 1, "loss_mask": torch.ones(b, s),
            "position_ids": torch.arange(s).expand(b, s), "sample_id": torch.tensor([5, 9])}


def test_truncate_keeps_the_first_tokens_and_reshape_keeps_all_tokens_as_rows():
    t = apply_seqlen(_batch(), "seqlen_truncate", 4)
    assert t["tokens"].tolist() == [[0, 1, 2, 3], [16, 17, 18, 19]] and t["labels"].shape == (2, 4)
    assert t["sample_id"].tolist() == [5, 9]
    r = apply_seqlen(_batch(), "seqlen_reshape", 4)
    assert r["tokens"].shape == (8, 4) and r["tokens"].flatten().tolist() == list(range(32))
    assert (r["position_ids"] == torch.arange(4)).all()
    assert r["sample_id"].tolist() == [80, 81, 82, 83, 144, 145, 146, 147]  # unique rows
    r6 = apply_seqlen(_batch(), "seqlen_reshape", 6)  # 16 = 2 rows of 6 + a dropped tail of 4
    assert r6["tokens"].tolist()[:2] == [list(range(6)), list(range(6, 12))]
    assert apply_seqlen(_batch(), "seqlen_truncate", 16)["tokens"].shape == (2, 16)


def test_resume_refuses_a_silent_change_and_names_the_flag():
    cfg = CurriculumConfig(metric="seqlen_truncate", min_difficulty=8, total_steps=10, step_increment=8, seed=1)
    saved = curriculum_record(cfg)
    assert check_curriculum(saved, cfg) == []
    assert check_curriculum(None, CurriculumConfig()) == []
    changed = CurriculumConfig(metric="seqlen_truncate", min_difficulty=16, total_steps=10, step_increment=8, seed=1)
    with pytest.raises(CurriculumChanged, match="--curriculum-min: checkpoint 8, this run 16"):
        check_curriculum(saved, changed)
    with pytest.raises(CurriculumChanged, match="--curriculum-metric"):
        check_curriculum(saved, CurriculumConfig())  # a forgotten flag
    changed.allow_change = True
    assert len(check_curriculum(saved, changed)) == 1
