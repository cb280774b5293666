"""The shell launchers in examples/gpt: syntax, and every flag they pass is accepted by the trainer.

Each launcher prints its full command with DRY_RUN=1; the pretrain_gpt.py part of that command is
parsed and validated with :func:`parse_pretrain_config` at the world size the launcher asks torchrun
for. Paths that the parser checks (tokenizer files, the --load directory) point at temp files.
The small CPU launcher also runs for real, on a tiny mock-data model for 3 iterations.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Tuple

import pytest

from megatron.training.arguments import ConfigError, parse_pretrain_config
from megatron.training.lr_schedule import run_length, schedule_lengths

ROOT = Path(__file__).resolve().parents[2]
GPT = ROOT / "examples" / "gpt"
BASELINE = GPT / "pretrain_gpt_1.3b_baseline.sh"
RANDOM_LTD = GPT / "pretrain_gpt_1.3b_random_ltd.sh"
SLURM = GPT / "slurm_pretrain_gpt_1.3b.sbatch"
SMALL = GPT / "pretrain_gpt_small_cpu.sh"
LAUNCHERS = [BASELINE, RANDOM_LTD, SLURM, SMALL]

# Variables of the calling shell that would change what a launcher prints.
_LAUNCHER_VARS = (
    "TP", "PP", "MODE", "BUDGET", "NNODES", "NODE_RANK", "GPUS_PER_NODE", "MASTER_ADDR", "MASTER_PORT",
    "DATA_PATH", "DATA_PREFIX", "TOKENIZER_MODEL", "VOCAB_FILE", "MERGE_FILE", "CHECKPOINT_DIR", "OUTPUT_DIR",
    "EXTRA_ARGS", "MICRO_BATCH", "GLOBAL_BATCH", "LR", "TRAIN_ITERS", "NPROC", "RECOMPUTE", "ROOT",
    "SEQUENCE_PARALLEL", "DIST_OPT", "LTD_LAYERS", "DECAY_TOKENS",
)


def _env(**overrides: str) -> Dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_") and k not in _LAUNCHER_VARS}
    env["PYTHON"] = sys.executable  # the small CPU launcher runs pretrain_gpt.py with it
    env.update({k: str(v) for k, v in overrides.items()})
    return env


def run_launcher(script: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(script)], env=_env(DRY_RUN="1", **env), capture_output=True, text=True,
                          timeout=60, cwd=str(ROOT))


def dry_run(script: Path, **env: str) -> Tuple[List[str], List[str], int]:
    """(launcher argv before pretrain_gpt.py, pretrain_gpt.py argv, world size)."""
    proc = run_launcher(script, **env)
    assert proc.returncode == 0, proc.stderr
    words = shlex.split(proc.stdout.strip().splitlines()[-1])
    entry = next(i for i, w in enumerate(words) if w.endswith("pretrain_gpt.py"))
    assert Path(words[entry]).resolve() == ROOT / "pretrain_gpt.py"
    head, args = words[:entry], words[entry + 1:]
    if head[0] == "torchrun":
        world = int(_value(head, "--nproc-per-node")) * int(_value(head, "--nnodes", "1"))
    else:
        assert head == [sys.executable], head
        world = 1
    return head, args, world


def _value(argv: List[str], flag: str, default=None):
    return argv[argv.index(flag) + 1] if flag in argv else default


@pytest.fixture()
def files(tmp_path):
    """Stand-ins for the files and directories the parser checks: tokenizer files that parse, and
    dataset prefixes (DATA/pile_text_document, DATA/a_text_document, ..., DATA/x) whose .bin/.idx exist."""
    import sentencepiece as spm

    paths = {name: tmp_path / name for name in ("tok.model", "vocab.json", "merges.txt")}
    spm.SentencePieceTrainer.train(sentence_iterator=iter(["the cat sat on the mat"] * 20),
                                   model_prefix=str(tmp_path / "tok"), vocab_size=15, minloglevel=2)
    paths["vocab.json"].write_text(json.dumps({"a": 0, "b": 1, "ab": 2}))
    paths["merges.txt"].write_text("#version: 0.2\na b\n")
    data = tmp_path / "data"
    data.mkdir()
    for name in ("pile_text_document", "a_text_document", "b_text_document", "x"):
        for ext in (".bin", ".idx"):
            (data / (name + ext)).write_bytes(b"")
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    return {"TOKENIZER_MODEL": str(paths["tok.model"]), "VOCAB_FILE": str(paths["vocab.json"]),
            "MERGE_FILE": str(paths["merges.txt"]), "CHECKPOINT_DIR": str(ckpt), "OUTPUT_DIR": str(tmp_path / "out"),
            "DATA": str(data)}


# ---------------------------------------------------------------------- syntax
@pytest.mark.parametrize("script", LAUNCHERS, ids=lambda p: p.name)
def test_bash_syntax(script):
    proc = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


# ---------------------------------------------------------------------- GPT-3 1.3B baseline
def test_baseline_recipe(files):
    head, args, world = dry_run(BASELINE, DATA_PATH=f"{files['DATA']}/pile_text_document",
                                TOKENIZER_MODEL=files["TOKENIZER_MODEL"], CHECKPOINT_DIR=files["CHECKPOINT_DIR"], OUTPUT_DIR=files["OUTPUT_DIR"])
    assert world == 8
    cfg = parse_pretrain_config(args, world_size=world)
    m, t, lr = cfg.model, cfg.training, cfg.lr
    assert (m.num_layers, m.hidden_size, m.num_attention_heads, m.seq_length) == (24, 2048, 16, 2048)
    assert m.init_method_std == 0.013
    assert (t.global_batch_size, t.adam_beta1, t.adam_beta2, t.weight_decay, t.clip_grad) == (512, 0.9, 0.95, 0.1, 1.0)
    assert (lr.lr, lr.min_lr, lr.lr_decay_style, lr.lr_schedule_unit) == (2e-4, 1e-6, "cosine", "tokens")
    assert (lr.lr_warmup_tokens, lr.lr_decay_tokens, t.train_tokens) == (3 * 10**9, None, 300 * 10**9)
    run = run_length(cfg)  # the decay spans the exact run: 286,103 steps of 2**20 tokens
    assert run.iterations == 286103 and schedule_lengths(cfg, run)[1] == 286103 * 2**20
    assert cfg.precision.bf16 and not cfg.random_ltd.enabled
    assert cfg.checkpoint.save == cfg.checkpoint.load == files["CHECKPOINT_DIR"]
    assert cfg.tokenizer.tokenizer_type == "SentencePieceTokenizer"
    assert cfg.data.blend == ([f"{files['DATA']}/pile_text_document"], None)


def test_baseline_multinode_3d_parallel(files):
    head, args, world = dry_run(
        BASELINE, DATA_PATH=f"0.3 {files['DATA']}/a_text_document 0.7 {files['DATA']}/b_text_document", VOCAB_FILE=files["VOCAB_FILE"],
        MERGE_FILE=files["MERGE_FILE"], CHECKPOINT_DIR=files["CHECKPOINT_DIR"], OUTPUT_DIR=files["OUTPUT_DIR"],
        NNODES="4", NODE_RANK="2", MASTER_ADDR="node-0", MASTER_PORT="29500", TP="2", PP="2",
        SEQUENCE_PARALLEL="1", RECOMPUTE="full", MICRO_BATCH="2", EXTRA_ARGS="--exit-interval 100",
    )
    assert (_value(head, "--nnodes"), _value(head, "--node-rank"), _value(head, "--master-addr"),
            _value(head, "--master-port")) == ("4", "2", "node-0", "29500")
    assert world == 32
    cfg = parse_pretrain_config(args, world_size=world)
    p = cfg.parallel
    assert (p.tensor_model_parallel_size, p.pipeline_model_parallel_size, p.sequence_parallel) == (2, 2, True)
    assert cfg.training.recompute_granularity == "full" and cfg.training.exit_interval == 100
    assert cfg.tokenizer.tokenizer_type == "GPT2BPETokenizer"
    assert cfg.data.blend == ([f"{files['DATA']}/a_text_document", f"{files['DATA']}/b_text_document"], [0.3, 0.7])


def test_baseline_refuses_missing_inputs(files):
    proc = run_launcher(BASELINE, TOKENIZER_MODEL=files["TOKENIZER_MODEL"])
    assert proc.returncode != 0 and "DATA_PATH" in proc.stderr
    proc = run_launcher(BASELINE, DATA_PATH="/data/x")
    assert proc.returncode != 0 and "TOKENIZER_MODEL" in proc.stderr


# ---------------------------------------------------------------------- GPT-3 1.3B random-LTD
# BUDGET -> (lr, ramp iterations, iterations to reach the budget at global batch 512)
BUDGETS = {"300B": (2e-4, 200000, 372757), "200B": (3e-4, 133333, 248505), "150B": (4e-4, 100000, 186379)}


@pytest.mark.parametrize("budget", sorted(BUDGETS))
def test_random_ltd_recipe(budget, files):
    head, args, world = dry_run(RANDOM_LTD, BUDGET=budget, DATA_PATH=f"{files['DATA']}/pile_text_document",
                                TOKENIZER_MODEL=files["TOKENIZER_MODEL"], CHECKPOINT_DIR=files["CHECKPOINT_DIR"],
                                OUTPUT_DIR=files["OUTPUT_DIR"])
    cfg = parse_pretrain_config(args, world_size=world)
    lr_value, ramp, iters = BUDGETS[budget]
    tokens = int(budget[:-1]) * 10**9
    m, t, lr, ltd = cfg.model, cfg.training, cfg.lr, cfg.random_ltd
    assert (m.num_layers, m.hidden_size, m.seq_length, t.global_batch_size) == (24, 2048, 2048, 512)
    assert (lr.lr, lr.min_lr, lr.lr_schedule_unit) == (lr_value, 1e-6, "layer-averaged-tokens")
    assert (lr.lr_warmup_tokens, lr.lr_decay_tokens) == (3 * 10**9, None)  # decay: the exact run
    assert t.train_layer_tokens == tokens * 24 and t.train_iters is None  # the budget flag alone
    assert ltd.enabled and ltd.resolve_layers(24) == list(range(1, 23))
    assert (ltd.min_seq, ltd.resolved_max_seq(2048), ltd.seq_step, ltd.require_steps) == (128, 2048, 16, ramp)
    # The trainer's exact run reaches the budget at the header's iteration, and the LR decays over
    # the layer-averaged tokens of exactly that run.
    run = run_length(cfg)
    assert run.iterations == iters and run.stopped_by.startswith("--train-layer-tokens")
    assert schedule_lengths(cfg, run) == (3 * 10**9, run.amount("layer-averaged-tokens"))
    assert run.amount("layer-tokens") >= tokens * 24 > run.amount("layer-tokens") - 512 * 2048 * 24


def _iterations_to_budget(gbs, num_layers, ltd_layers, ramp, budget_layer_tokens, seq=2048):
    """Iterations until the layer-token counter reaches the budget, one step at a time."""
    from megatron.ltd.config import RandomLTDConfig
    from megatron.ltd.schedule import kept_length
    from megatron.training.lr_schedule import StepWork

    cfg = RandomLTDConfig(enabled=True, layers=ltd_layers, min_seq=128, seq_step=16, require_steps=ramp)
    n_ltd = len(cfg.resolve_layers(num_layers))
    done = it = 0
    while done < budget_layer_tokens:
        done += StepWork.of(gbs, seq, kept_length(it, cfg, seq), num_layers, n_ltd).layer_tokens
        it += 1
    return it


def test_random_ltd_run_length_matches_a_step_by_step_count(files):
    """The header's 372,757, and a non-default case, counted one step at a time."""
    assert _iterations_to_budget(512, 24, None, 200000, 300 * 10**9 * 24) == BUDGETS["300B"][2]
    _, args, world = dry_run(RANDOM_LTD, BUDGET="150B", GLOBAL_BATCH="1024", LTD_LAYERS="1,2,3",
                             LTD_REQUIRE_STEPS="50000", DATA_PATH=f"{files['DATA']}/x", TOKENIZER_MODEL=files["TOKENIZER_MODEL"],
                             CHECKPOINT_DIR=files["CHECKPOINT_DIR"], OUTPUT_DIR=files["OUTPUT_DIR"])
    cfg = parse_pretrain_config(args, world_size=world)
    assert run_length(cfg).iterations == _iterations_to_budget(1024, 24, [1, 2, 3], 50000, 150 * 10**9 * 24)


def test_random_ltd_overrides(files):
    _, args, world = dry_run(RANDOM_LTD, BUDGET="200B", DATA_PATH=f"{files['DATA']}/x", TOKENIZER_MODEL=files["TOKENIZER_MODEL"],
                             CHECKPOINT_DIR=files["CHECKPOINT_DIR"], OUTPUT_DIR=files["OUTPUT_DIR"], DECAY_TOKENS="1000000000",
                             LTD_LAYERS="2 3 4", LR="1e-4", TP="4", SEQUENCE_PARALLEL="1", GPUS_PER_NODE="4")
    cfg = parse_pretrain_config(args, world_size=world)
    assert cfg.random_ltd.resolve_layers(24) == [2, 3, 4] and cfg.lr.lr == 1e-4
    assert cfg.lr.lr_decay_tokens == 10**9 and cfg.parallel.sequence_parallel
    assert cfg.random_ltd.resolved_strata(True) == 8  # TP 4 divides the default strata
    proc = run_launcher(RANDOM_LTD, BUDGET="100B", DATA_PATH=f"{files['DATA']}/x", TOKENIZER_MODEL=files["TOKENIZER_MODEL"])
    assert proc.returncode != 0 and "BUDGET" in proc.stderr


# ---------------------------------------------------------------------- SLURM
def test_slurm_launches_either_mode(files, tmp_path):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    scontrol = bindir / "scontrol"
    scontrol.write_text("#!/usr/bin/env bash\nprintf 'gpu-node-07\\ngpu-node-08\\n'\n")
    scontrol.chmod(0o755)
    common = dict(DATA_PATH=f"{files['DATA']}/x", TOKENIZER_MODEL=files["TOKENIZER_MODEL"], CHECKPOINT_DIR=files["CHECKPOINT_DIR"],
                  OUTPUT_DIR=files["OUTPUT_DIR"], SLURM_SUBMIT_DIR=str(ROOT), SLURM_JOB_NUM_NODES="2",
                  SLURM_JOB_NODELIST="gpu-node-[07-08]", SLURM_GPUS_ON_NODE="4",
                  PATH=f"{bindir}{os.pathsep}{os.environ['PATH']}")
    for mode, unit in (("baseline", "tokens"), ("random_ltd", "layer-averaged-tokens")):
        proc = run_launcher(SLURM, MODE=mode, **common)
        assert proc.returncode == 0, proc.stderr
        srun = shlex.split(next(line for line in proc.stderr.splitlines() if line.startswith("srun")))
        assert _value(srun, "--nodes") == "2" and srun[-1].endswith(f"pretrain_gpt_1.3b_{mode}.sh")
        head, args, world = dry_run(SLURM, MODE=mode, **common)
        assert _value(head, "--master-addr") == "gpu-node-07" and _value(head, "--node-rank") == "0"
        assert world == 8
        cfg = parse_pretrain_config(args, world_size=world)
        assert cfg.lr.lr_schedule_unit == unit
        assert cfg.fault.exit_signal_handler  # SLURM's --signal makes every rank save and exit 0
    proc = run_launcher(SLURM, MODE="other", **common)
    assert proc.returncode != 0 and "MODE" in proc.stderr


# ---------------------------------------------------------------------- small CPU model
@pytest.mark.parametrize("mode", ["baseline", "random_ltd"])
def test_small_cpu_dry_run(mode, files, tmp_path):
    prefix = tmp_path / "corpus_text_document"
    for ext in (".bin", ".idx"):  # the parser checks that the pair exists
        prefix.with_suffix(ext).write_bytes(b"")
    _, args, world = dry_run(SMALL, MODE=mode, DATA_PREFIX=str(prefix), TOKENIZER_MODEL=files["TOKENIZER_MODEL"],
                             OUTPUT_DIR=files["OUTPUT_DIR"])
    assert world == 1
    cfg = parse_pretrain_config(args, world_size=world)
    assert cfg.parallel.cpu and cfg.data.blend == ([str(prefix)], None)
    assert cfg.random_ltd.enabled == (mode == "random_ltd")
    if mode == "random_ltd":
        assert cfg.random_ltd.resolve_layers(cfg.model.num_layers) == [1, 2, 3, 4]
        assert cfg.random_ltd.require_steps == 105  # 70% of 150 iterations
    # torchrun with two ranks, tensor-parallel, synthetic data
    head, args, world = dry_run(SMALL, MODE=mode, DATA_PREFIX="mock", NPROC="2", TP="2", OUTPUT_DIR=files["OUTPUT_DIR"])
    assert head[:2] == ["torchrun", "--standalone"] and world == 2
    cfg = parse_pretrain_config(args, world_size=world)
    assert cfg.data.mock_data and cfg.parallel.tensor_model_parallel_size == 2


def test_small_cpu_needs_data(tmp_path):
    proc = subprocess.run(["bash", str(SMALL)], env=_env(DATA_PREFIX=str(tmp_path / "missing")),
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode != 0 and "build_sample_corpus" in proc.stderr


def test_small_cpu_runs(tmp_path):
    """Three real iterations of a tiny random-LTD model on synthetic tokens."""
    out = tmp_path / "run"
    env = _env(MODE="random_ltd", DATA_PREFIX="mock", VOCAB_SIZE="128", NUM_LAYERS="3", HIDDEN="32", HEADS="2",
               SEQ_LEN="32", MICRO_BATCH="2", GLOBAL_BATCH="4", TRAIN_ITERS="3", LTD_MIN_SEQ="8", LTD_SEQ_STEP="8",
               LOG_INTERVAL="1", EVAL_INTERVAL="3", EVAL_ITERS="1", OUTPUT_DIR=str(out),
               EXTRA_ARGS="--no-progress", OMP_NUM_THREADS="1", PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    proc = subprocess.run(["bash", str(SMALL)], env=env, capture_output=True, text=True, timeout=120, cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "stopped by --train-iters 3" in proc.stdout
    assert "kept 8/32" in proc.stdout  # random-LTD was on at the first step
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert any(r.get("kind") == "valid" or "valid" in json.dumps(r) for r in records)
    assert (out / "checkpoints").is_dir() and any((out / "checkpoints").iterdir())


def test_config_error_is_raised_for_a_bad_flag(files):
    """Guard for the test itself: a launcher flag the parser rejects would fail, not pass silently."""
    _, args, world = dry_run(BASELINE, DATA_PATH=f"{files['DATA']}/x", TOKENIZER_MODEL=files["TOKENIZER_MODEL"],
                             CHECKPOINT_DIR=files["CHECKPOINT_DIR"], OUTPUT_DIR=files["OUTPUT_DIR"], MICRO_BATCH="3")
    with pytest.raises(ConfigError, match="global-batch-size"):
        parse_pretrain_config(args, world_size=world)
