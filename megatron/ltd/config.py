"""Random-LTD settings: one typed dataclass, its command-line flags, and its validation.

The flags keep the names Megatron-DeepSpeed users know (``--random-ltd-*``). Every check in
:meth:`RandomLTDConfig.validate` raises a ``ValueError`` that names the offending flag and
suggests a value that would pass.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from typing import List, Optional, Sequence

# Sequence-parallel default: TP sizes 1, 2, 4 and 8 all divide it, so they all drop the same tokens.
SEQUENCE_PARALLEL_STRATA = 8

__all__ = ["RandomLTDConfig", "SEQUENCE_PARALLEL_STRATA", "add_random_ltd_args", "random_ltd_config_from_args", "parse_layer_list"]


@dataclass
class RandomLTDConfig:
    """What random-LTD does, independent of the model it is applied to.

    Numeric fields declare the range of their ``--random-ltd-*`` flag in their metadata, enforced
    when the command line is parsed (:func:`megatron.training.cli.check_ranges`); :meth:`validate`
    checks the settings against the model.

    Attributes:
        enabled: turn token dropping on.
        layers: GLOBAL 0-based layer numbers (numbered across pipeline stages) that drop tokens.
            ``None`` means every layer but the first and the last.
        min_seq: kept length at step 0 of the MSLG ramp.
        max_seq: kept length at the end of the ramp; ``None`` means the full sequence length.
        require_steps: length of the ramp in optimizer steps (required unless ``constant_k``).
        seq_step: the ramp's increment; kept lengths are aligned down to multiples of it.
        constant_k: keep exactly this many tokens at every step (finetuning, benchmarks);
            overrides the ramp.
        seed: seed of the index plan; ``None`` means "use the training --seed".
        strata: the index plan cuts the sequence into this many equal segments and keeps ``k/strata``
            tokens of each (see :mod:`megatron.ltd.sampler`). ``None``: 1 (a uniform subset of the
            whole sequence, as in the paper) without sequence parallelism, and
            :data:`SEQUENCE_PARALLEL_STRATA` with it, a number every supported TP size divides, so
            the dropped tokens do not depend on the TP size. Give the same value to runs that must
            drop the same tokens with and without sequence parallelism.
        kernel: gather/scatter implementation: ``torch`` ops, ``triton`` kernels, or ``auto``
            (= torch, the faster where measured). Same values either way.
    """

    enabled: bool = False
    layers: Optional[List[int]] = None
    min_seq: int = field(default=128, metadata={"ge": 1})
    max_seq: Optional[int] = field(default=None, metadata={"ge": 1})
    require_steps: Optional[int] = field(default=None, metadata={"ge": 1})
    seq_step: int = field(default=16, metadata={"ge": 1})
    constant_k: Optional[int] = field(default=None, metadata={"ge": 1})
    seed: Optional[int] = field(default=None, metadata={"ge": 0, "lt": 2**32})
    strata: Optional[int] = field(default=None, metadata={"ge": 1})
    kernel: str = "auto"

    # ------------------------------------------------------------------ derived values
    def resolved_max_seq(self, seq_length: int) -> int:
        """The ramp's end: ``max_seq`` or, when unset, the full sequence length."""
        return seq_length if self.max_seq is None else self.max_seq

    def resolved_strata(self, sequence_parallel: bool = False) -> int:
        """Strata of the index plan (see ``strata``); never depends on the TP size."""
        if self.strata is not None:
            return int(self.strata)
        return SEQUENCE_PARALLEL_STRATA if sequence_parallel else 1

    def resolve_layers(self, num_layers: int) -> List[int]:
        """Sorted GLOBAL layer numbers that drop tokens (default: all but first and last)."""
        if self.layers is None:
            return list(range(1, num_layers - 1))
        return sorted(int(layer) for layer in self.layers)

    # ------------------------------------------------------------------ validation
    def validate(
        self,
        seq_length: int,
        num_layers: int,
        tensor_model_parallel_size: int = 1,
        sequence_parallel: bool = False,
    ) -> None:
        """Raise ``ValueError`` naming the flag of the first inconsistent setting.

        Does nothing when random-LTD is disabled (its flags are then ignored).
        """
        if not self.enabled:
            return
        if self.kernel not in _KERNELS:
            raise ValueError(f"--random-ltd-kernel {self.kernel!r}: choose one of {', '.join(_KERNELS)}")
        s, tp = int(seq_length), int(tensor_model_parallel_size)
        if s <= 0 or num_layers <= 0:
            raise ValueError(f"random-LTD needs a positive seq length and layer count, got {s}, {num_layers}")

        # ---- layers
        if self.layers is not None:
            if len(self.layers) == 0:
                raise ValueError(
                    "--random-ltd-layers is empty: list at least one layer, e.g. "
                    f"--random-ltd-layers {' '.join(map(str, range(1, max(num_layers - 1, 2))))}"
                )
            seen = set()
            for layer in self.layers:
                if not 0 <= layer < num_layers:
                    raise ValueError(
                        f"--random-ltd-layers: layer {layer} is out of range for a model with "
                        f"{num_layers} layers (GLOBAL 0-based numbers in [0, {num_layers - 1}], "
                        f"e.g. --random-ltd-layers {min(1, num_layers - 1)})"
                    )
                if layer in seen:
                    raise ValueError(f"--random-ltd-layers: layer {layer} is listed twice; list each layer once")
                seen.add(layer)
        elif num_layers < 3:
            raise ValueError(
                f"--random-ltd-layers: the default (all layers but the first and last) is empty for "
                f"{num_layers} layers; name the layers explicitly, e.g. --random-ltd-layers 0"
            )

        # ---- constant-k mode: the ramp's flags are not used
        if self.constant_k is not None:
            k = self.constant_k
            if not 0 < k <= s:
                raise ValueError(
                    f"--random-ltd-constant-k ({k}) must be in [1, seq length {s}], e.g. "
                    f"--random-ltd-constant-k {max(s // 2, 1)}"
                )
            self._validate_strata(s, tp, sequence_parallel, (("--random-ltd-constant-k", k),))
            return

        # ---- MSLG ramp
        mx = self.resolved_max_seq(s)
        if self.seq_step is None or self.seq_step <= 0:
            raise ValueError(f"--random-ltd-seq-step ({self.seq_step}) must be positive, e.g. --random-ltd-seq-step 16")
        if self.min_seq is None or self.min_seq <= 0:
            raise ValueError(
                f"--random-ltd-min-seq ({self.min_seq}) must be positive, e.g. --random-ltd-min-seq {min(128, s)}"
            )
        if mx <= 0:
            raise ValueError(f"--random-ltd-max-seq ({mx}) must be positive, e.g. --random-ltd-max-seq {s}")
        if mx > s:
            raise ValueError(
                f"--random-ltd-max-seq ({mx}) exceeds the sequence length ({s}), e.g. --random-ltd-max-seq {s}"
            )
        if self.min_seq > mx:
            raise ValueError(
                f"--random-ltd-min-seq ({self.min_seq}) must be <= --random-ltd-max-seq ({mx}), e.g. "
                f"--random-ltd-min-seq {max(mx // 16, 1)}"
            )
        if self.seq_step > mx:
            raise ValueError(
                f"--random-ltd-seq-step ({self.seq_step}) does not fit in --random-ltd-max-seq ({mx}), "
                f"e.g. --random-ltd-seq-step {min(16, mx)}"
            )
        if self.require_steps is None or self.require_steps <= 0:
            raise ValueError(
                f"--random-ltd-require-steps ({self.require_steps}) must be a positive number of steps, "
                "e.g. --random-ltd-require-steps 200000"
            )
        # The ramp produces min, multiples of seq_step, and max: each must split evenly into the strata.
        self._validate_strata(s, tp, sequence_parallel, (("--random-ltd-min-seq", self.min_seq),
                                                         ("--random-ltd-seq-step", self.seq_step),
                                                         ("--random-ltd-max-seq", mx)))

    def _validate_strata(self, s: int, tp: int, sequence_parallel: bool, kept_values) -> None:
        n = self.resolved_strata(sequence_parallel)
        given = "--random-ltd-strata" if self.strata is not None else f"the sequence-parallel default of {n} strata"
        if n <= 0:
            raise ValueError(f"--random-ltd-strata ({n}) must be positive, e.g. --random-ltd-strata 1")
        if sequence_parallel and tp > 1 and n % tp:
            raise ValueError(
                f"{given} ({n}) must be a multiple of --tensor-model-parallel-size ({tp}) under "
                f"--sequence-parallel (each rank's shard keeps whole strata), e.g. --random-ltd-strata {tp}"
            )
        for flag, value in (("--seq-length", s),) + tuple(kept_values):
            if value % n:
                raise ValueError(
                    f"{flag} ({value}) must be divisible by {given} ({n}): each of the {n} segments keeps "
                    f"k/{n} tokens; e.g. {flag} {_down(value, n) or n}"
                    + ("" if self.strata is not None else ", or set --random-ltd-strata to a smaller multiple of the TP size")
                )


_KERNELS = ("auto", "torch", "triton")  # megatron.ltd.ops.KERNELS (not imported: config stays torch-free)


def _down(value: int, multiple: int) -> int:
    return value - value % multiple


# ---------------------------------------------------------------------- command line
def parse_layer_list(values: Optional[Sequence[str]]) -> Optional[List[int]]:
    """``["1", "2,3", "4,"]`` -> ``[1, 2, 3, 4]``; accepts space- and comma-separated ints."""
    if values is None:
        return None
    if isinstance(values, str):
        values = [values]
    out: List[int] = []
    for chunk in values:
        for item in str(chunk).replace(",", " ").split():
            try:
                out.append(int(item))
            except ValueError:
                raise ValueError(
                    f"--random-ltd-layers: {item!r} is not an integer layer number, e.g. --random-ltd-layers 1 2 3"
                ) from None
    return out


def add_random_ltd_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the "random-LTD" argument group to ``parser`` and return the parser."""
    group = parser.add_argument_group("random-LTD")
    group.add_argument("--random-ltd", action="store_true", help="Enable random and layerwise token dropping.")
    group.add_argument(
        "--random-ltd-layers", nargs="+", default=None, metavar="LAYER",
        help="GLOBAL 0-based layers that drop tokens, space- or comma-separated "
             "(default: all but the first and last).",
    )
    group.add_argument("--random-ltd-min-seq", type=int, default=128,
                       help="Kept tokens per sample at the start of the ramp.")
    group.add_argument("--random-ltd-max-seq", type=int, default=None,
                       help="Kept tokens per sample at the end of the ramp (default: --seq-length).")
    group.add_argument("--random-ltd-require-steps", type=int, default=None,
                       help="Iterations over which the kept length grows from min to max.")
    group.add_argument("--random-ltd-seq-step", type=int, default=16,
                       help="Increment of the kept length; values are aligned down to it.")
    group.add_argument("--random-ltd-constant-k", type=int, default=None,
                       help="Keep exactly this many tokens at every step (overrides the ramp).")
    group.add_argument("--random-ltd-seed", type=int, default=None,
                       help="Seed of the token-dropping plan (default: --seed).")
    group.add_argument("--random-ltd-strata", type=int, default=None,
                       help="Cut each sequence into this many equal segments, each keeping k/strata tokens "
                            f"(default: 1, or {SEQUENCE_PARALLEL_STRATA} with --sequence-parallel; "
                            "any TP size dividing it drops the same tokens).")
    group.add_argument("--random-ltd-kernel", choices=_KERNELS, default="auto",
                       help="Gather/scatter implementation: torch ops, Triton kernels (CUDA), or auto "
                            "(= torch: the faster of the two where measured, docs/performance.md).")
    return parser


def random_ltd_config_from_args(args: argparse.Namespace) -> RandomLTDConfig:
    """Build the config from parsed flags; the seed falls back to ``args.seed`` when present."""
    seed = getattr(args, "random_ltd_seed", None)
    if seed is None:
        seed = getattr(args, "seed", None)
    return RandomLTDConfig(
        enabled=bool(getattr(args, "random_ltd", False)),
        layers=parse_layer_list(getattr(args, "random_ltd_layers", None)),
        min_seq=getattr(args, "random_ltd_min_seq", 128),
        max_seq=getattr(args, "random_ltd_max_seq", None),
        require_steps=getattr(args, "random_ltd_require_steps", None),
        seq_step=getattr(args, "random_ltd_seq_step", 16),
        constant_k=getattr(args, "random_ltd_constant_k", None),
        seed=seed,
        strata=getattr(args, "random_ltd_strata", None),
        kernel=getattr(args, "random_ltd_kernel", "auto"),
    )
