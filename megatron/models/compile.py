"""``--compile``: ``torch.compile`` of each transformer layer.

What is compiled is, for a full-length layer, the stock layer's forward (norms, attention, MLP,
residuals), and for a dropping layer the gather, that forward on the kept tokens and the scatter as
one graph (:func:`megatron.ltd.layer.native_dropping_forward`: native operators, whose gradient
terms the compiler fuses). The kept tokens' row numbers are an ordinary graph input, made outside
by the pure index plan, so nothing random is ever captured. The kept length is a dynamic
dimension: after the first recompile (torch marks a size dynamic once it changes) one graph serves every length of the MSLG ramp, so the ramp does not recompile at each
increment. ``--compile-mode reduce-overhead`` adds CUDA graphs (torch's cudagraph trees: one graph
per distinct kept length, all in one shared memory pool), which is what removes launch overhead
on a host-bound GPU step; the ramp has at most ``(s - min) / seq_step + 1`` lengths.

With tensor parallelism each layer's graph is cut at megatron-core's collectives (asynchronous
all-gather / reduce-scatter, which dynamo does not trace): still compiled, in a few pieces.

Dropout inside a compiled graph draws from inductor's own generator, so with dropout on the
masks differ from the eager run's (resuming a compiled run exactly is not tested); losses equal the
eager path's with dropout off. On CPU, megatron's RNG tracker fork around dropout is also cut out
of the graph (dynamo prints a one-time graph-break note about ``Tensor.item()``).

On CPU the compiled layers run inductor's C++ code (a compiler is needed: gcc/clang); CUDA graphs
are a GPU feature and torch skips them on CPU tensors, so ``reduce-overhead`` there is the plain
compiled path. tests/training/test_compile.py holds the losses to the eager path's.
"""

from __future__ import annotations

import functools
import warnings
from typing import Iterable

import torch

__all__ = ["MODES", "compile_layers", "compile_notice", "check_compiler"]

MODES = ("default", "reduce-overhead", "max-autotune-no-cudagraphs")


class _WarningsOutsideCompile:
    """Stands for the ``warnings`` module inside the megatron-core modules a layer's forward runs
    through: ``warn`` is skipped while dynamo traces (a warning call with a category argument
    would otherwise split each layer's graph in pieces) and behaves as usual in eager code."""

    def __getattr__(self, name):
        return getattr(warnings, name)

    @staticmethod
    def warn(message, category=None, stacklevel=1, source=None):
        if not torch.compiler.is_compiling():
            warnings.warn(message, category, stacklevel + 1, source)


# The megatron-core modules whose warnings sit on a layer's forward path (deprecation notes on
# process groups, CUDA_DEVICE_MAX_CONNECTIONS advice).
_WARNING_MODULES = ("megatron.core.utils", "megatron.core.tensor_parallel.layers", "megatron.core.transformer.mlp",
                    "megatron.core.transformer.transformer_layer", "megatron.core.transformer.attention")


def _quiet_traced_warnings() -> None:
    import importlib

    for name in _WARNING_MODULES:
        module = importlib.import_module(name)
        if getattr(module, "warnings", None) is warnings:
            module.warnings = _WarningsOutsideCompile()


def _configure_dynamo(num_layers: int) -> None:
    import torch._dynamo as dynamo

    # One cache entry per layer instance (their modules differ) times a static and a dynamic
    # length: room for all of them, or dynamo falls back to eager past its default limit of 8.
    limit = max(8, 4 * num_layers)
    dynamo.config.cache_size_limit = max(dynamo.config.cache_size_limit, limit)
    if hasattr(dynamo.config, "accumulated_cache_size_limit"):
        dynamo.config.accumulated_cache_size_limit = max(dynamo.config.accumulated_cache_size_limit, 4 * limit)
    _quiet_traced_warnings()
    # megatron-core's tensor-parallel linear warns once (advice to set CUDA_DEVICE_MAX_CONNECTIONS=1,
    # which the launchers do) and marks that on a function attribute, a write dynamo cannot trace:
    # mark it as given.
    from megatron.core.tensor_parallel import layers as tp_layers

    tp_layers.linear_with_grad_accumulation_and_async_allreduce.warned = True


def compile_layers(modules: Iterable[torch.nn.Module], mode: str = "default") -> int:
    """Compile every ``TransformerLayer`` in ``modules`` (see the module doc); returns how many."""
    from megatron.core.transformer.transformer_layer import TransformerLayer

    from megatron.ltd.layer import RandomLTDTransformerLayer

    if mode not in MODES:
        raise ValueError(f"--compile-mode {mode!r}: choose one of {', '.join(MODES)}")
    layers = [m for module in modules for m in module.modules() if isinstance(m, TransformerLayer)]
    _configure_dynamo(len(layers))
    from megatron.ltd.layer import native_dropping_forward

    for layer in layers:
        dense = torch.compile(functools.partial(TransformerLayer.forward, layer), mode=mode, dynamic=None)
        if isinstance(layer, RandomLTDTransformerLayer):
            layer.dense_forward = dense  # full length: the stock forward
            if layer.ltd_row is not None:  # dropping: gather + layer + scatter in one graph
                layer.dropping_forward = torch.compile(functools.partial(native_dropping_forward, layer), mode=mode,
                                                       dynamic=None)
        else:
            layer.forward = dense
    return len(layers)


def check_compiler(use_gpu: bool) -> None:
    """On CPU inductor writes C++: refuse ``--compile`` up front when no compiler is on PATH."""
    import shutil

    if use_gpu:
        return
    if not any(shutil.which(c) for c in ("c++", "g++", "clang++")):
        raise ValueError("--compile on CPU needs a C++ compiler (torch.compile's inductor builds C++ kernels): "
                         "install g++ (e.g. apt-get install g++) or drop --compile")


def compile_notice(mode: str, use_gpu: bool) -> str:
    """The one line the trainer prints about what --compile does on this device."""
    line = f"[compile] torch.compile of each transformer layer, mode {mode!r}; the first steps compile"
    if mode == "reduce-overhead":
        line += (" (CUDA graphs: one per kept length, in one shared pool)" if use_gpu
                 else "; CUDA graphs need a GPU, so on CPU this is the compiled path without them")
    return line
