"""The main job (examples/quickstart.py --preset tiny): three runs, each stopped by its own
layer-averaged token budget with the LR decaying over it, one table, one plot; the corpus is a
deterministic function of the source packages' versions."""

from __future__ import annotations

import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "examples"))

import quickstart  # noqa: E402


def _rows(path, kind):
    return [r for r in map(json.loads, open(path)) if r["kind"] == kind]


def test_runs_are_set_by_their_budget_alone(tmp_path):
    from megatron.training.arguments import parse_pretrain_config

    p = quickstart.PRESETS["default"]
    for name in ("t", "v"):  # dataset prefixes the parser checks exist (empty stand-ins: nothing is read)
        for ext in (".bin", ".idx"):
            (tmp_path / (name + ext)).write_bytes(b"")
    (tmp_path / "x").write_bytes(b"")  # --tokenizer-model must exist (NullTokenizer never reads it)
    data = {"tokenizer_type": "NullTokenizer", "tokenizer_model": str(tmp_path / "x"), "train_prefix": str(tmp_path / "t"),
            "valid_prefix": str(tmp_path / "v")}
    for name, (ltd, fraction) in quickstart.RUNS.items():
        args = quickstart.train_args(p, data, "/tmp/x", ltd, fraction, seed=1)
        assert "--train-iters" not in args and "--lr-decay-tokens" not in args
        budget = int(args[args.index("--train-layer-averaged-tokens") + 1])
        assert budget == round(p["tokens"] * fraction)
        cfg = parse_pretrain_config(args + ["--vocab-size", "128"], world_size=1)
        assert cfg.random_ltd.enabled == ltd
        assert cfg.lr.lr_schedule_unit == "layer-averaged-tokens"
        assert cfg.training.train_layer_averaged_tokens == budget
    # The 2/3 run ramps the kept length over 2/3 of the steps of the full-budget run.
    assert quickstart.ramp_steps(p, 2 / 3) == round(quickstart.ramp_steps(p, 1.0) * 2 / 3)


def test_tiny_main_job_trains_three_runs_to_their_budgets(tmp_path, capsys):
    out = tmp_path / "qs"
    quickstart.main(["--preset", "tiny", "--out-dir", str(out), "--skip-eval"])
    printed = capsys.readouterr().out
    p = quickstart.PRESETS["tiny"]
    report = json.load(open(out / "report.json"))
    s = report["summary"]
    assert list(s) == ["baseline", "random-ltd", "random-ltd-2/3"]
    one_step = p["gbs"] * p["seq"]  # a step never does more than this many layer-averaged tokens
    for name, (ltd, fraction) in quickstart.RUNS.items():
        budget = round(p["tokens"] * fraction)
        assert budget <= s[name]["layer_averaged_tokens"] < budget + one_step, name
        summary = _rows(out / quickstart.RUN_DIRS[name] / "metrics.jsonl", "summary")[-1]
        assert summary["layer_averaged_tokens"] == s[name]["layer_averaged_tokens"]
    # Random-LTD's dropping layers see fewer tokens per step: the same budget takes more steps.
    assert s["random-ltd"]["iterations"] > s["baseline"]["iterations"] > s["random-ltd-2/3"]["iterations"]
    assert s["baseline"]["raw_tokens"] == s["baseline"]["layer_averaged_tokens"]
    # One table with each run's ratios to the baseline, and the plot.
    table = printed[printed.index("final valid loss"):]
    for name in s:
        ratio = s[name]["layer_averaged_tokens"] / s["baseline"]["layer_averaged_tokens"]
        line = next(ln for ln in table.splitlines() if ln.startswith(name + " "))
        assert f"{s[name]['final_valid_loss']:.4f}" in line and f"{ratio:.3f}" in line
    assert os.path.getsize(report["plot"]) > 10_000
    # The corpus fingerprint is printed and compared with the recorded one.
    assert f"corpus sha256: {report['corpus_sha256']}" in printed
    from megatron.data.sample_corpus import CorpusConfig, source_versions

    recorded = json.load(open(quickstart.EXPECTED_FILE))["tiny"]
    if source_versions(CorpusConfig(max_bytes=p["corpus_bytes"])) == recorded["sources"]:
        assert report["corpus_sha256"] == recorded["corpus_sha256"]  # same versions: same corpus
        assert report["corpus_matches_record"]
    else:
        assert "WARNING: this corpus is not the one" in printed and not report["corpus_matches_record"]


def test_corpus_difference_names_the_package():
    from megatron.data.sample_corpus import compare_with_expected

    rec = {"corpus_sha256": "a" * 64, "sources": {"numpy": "2.4.6", "torch": "2.13.0+cpu"}}
    assert compare_with_expected("a" * 64, {"numpy": "9.9"}, rec) == []
    lines = compare_with_expected("b" * 64, {"numpy": "2.4.6", "torch": "2.11.0"}, rec)
    assert "differs" in lines[0] and lines[1:] == ["  torch: installed 2.11.0, recorded 2.13.0+cpu"]


def test_corpus_is_a_function_of_the_sources(tmp_path):
    """The same sources give the same bytes, whatever the worker count and output directory."""
    from megatron.data.sample_corpus import CorpusConfig, build_sample_corpus, corpus_checksum

    cfg = CorpusConfig(max_bytes=60_000, packages=("packaging", "jinja2"))
    a = build_sample_corpus(str(tmp_path / "a"), cfg)
    from megatron.data import sample_corpus

    docs = sample_corpus.collect_documents(cfg, workers=2)
    assert docs == sample_corpus.collect_documents(cfg, workers=1)
    b = build_sample_corpus(str(tmp_path / "b"), cfg)
    assert corpus_checksum(a) == corpus_checksum(b)
    assert corpus_checksum(a) != corpus_checksum(build_sample_corpus(str(tmp_path / "c"), CorpusConfig(
        max_bytes=60_000, packages=("jinja2", "packaging"))))  # the order of the sources is part of it
