"""Start-up validation: each bad flag or combination is refused with a message naming the flags;
good ones build typed configs."""

import pytest

from megatron.training.arguments import ConfigError, parse_pretrain_config

BASE = ["--mock-data", "--num-layers", "4", "--hidden-size", "64", "--num-attention-heads", "4",
        "--seq-length", "64", "--micro-batch-size", "2", "--train-iters", "10"]


def parse(*extra, world_size=1):
    return parse_pretrain_config(BASE + list(extra), world_size=world_size)


def test_good_flags_build_typed_configs():
    cfg = parse("--tensor-model-parallel-size", "2", "--sequence-parallel", "--global-batch-size", "8",
                "--random-ltd", "--random-ltd-min-seq", "16", "--random-ltd-require-steps", "5",
                "--train-layer-tokens", "3e5", "--lr-schedule-unit", "layer-tokens", world_size=4)
    assert cfg.parallel.tensor_model_parallel_size == 2 and cfg.training.global_batch_size == 8
    assert cfg.training.train_layer_tokens == 300000  # 3e5 notation accepted for integer budgets
    assert cfg.random_ltd.enabled and cfg.random_ltd.resolve_layers(4) == [1, 2]
    assert cfg.random_ltd.seed == cfg.training.seed
    assert cfg.tokenizer.tokenizer_type == "NullTokenizer"  # mock data needs no tokenizer files


@pytest.mark.parametrize("extra,world,needle", [
    (["--bf16", "--fp16"], 1, "--bf16 and --fp16"),
    (["--sequence-parallel"], 1, "--sequence-parallel needs --tensor-model-parallel-size > 1"),
    (["--tensor-model-parallel-size", "2"], 3, "launch a multiple of 2"),
    (["--tensor-model-parallel-size", "3"], 3, "--num-attention-heads 4 is not divisible by --tensor-model-parallel-size 3"),
    (["--pipeline-model-parallel-size", "3"], 3, "--num-layers 4 is not divisible by --pipeline-model-parallel-size 3"),
    (["--global-batch-size", "7"], 2, "--global-batch-size 7 is not divisible"),
    (["--random-ltd-min-seq", "16"], 1, "without --random-ltd"),
    (["--random-ltd", "--random-ltd-min-seq", "80", "--random-ltd-require-steps", "5"], 1, "--random-ltd-min-seq"),
    (["--random-ltd", "--random-ltd-max-seq", "128", "--random-ltd-require-steps", "5"], 1, "--random-ltd-max-seq"),
    (["--random-ltd", "--random-ltd-min-seq", "16"], 1, "--random-ltd-require-steps"),
    (["--save-interval", "5"], 1, "--save-interval needs --save"),
    (["--load", "/nonexistent/dir"], 1, "--load /nonexistent/dir"),
    (["--recompute-method", "uniform"], 1, "--recompute-method needs --recompute-granularity full"),
    (["--lr-warmup-tokens", "100"], 1, "--lr-schedule-unit"),
    (["--lr", "1e-4", "--min-lr", "1e-3"], 1, "--min-lr"),
    (["--num-layers-per-virtual-pipeline-stage", "1"], 1, "needs --pipeline-model-parallel-size > 1"),
])
def test_bad_combinations_name_the_flags(extra, world, needle):
    with pytest.raises(ConfigError) as err:
        parse(*extra, world_size=world)
    assert needle in str(err.value)


def test_training_length_is_required():
    with pytest.raises(ConfigError, match="--train-iters"):
        parse_pretrain_config([a for a in BASE if a not in ("--train-iters", "10")], world_size=1)


def test_sequence_parallel_kept_lengths_must_split_over_tp():
    with pytest.raises(ConfigError, match="divisible"):
        # A ramp in steps of 2 produces kept lengths that 4 shards cannot split evenly.
        parse("--tensor-model-parallel-size", "4", "--sequence-parallel", "--random-ltd", "--random-ltd-min-seq", "16",
              "--random-ltd-seq-step", "2", "--random-ltd-require-steps", "5", world_size=4)
