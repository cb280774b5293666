"""Runtime plumbing shared by training, evaluation and tests: device choice and CPU mode.

Importing it silences megatron-core's import-time notices that TransformerEngine / apex are
absent: both are optional here and the fallbacks are the intended path on CPU. Every entry
script and tool imports it before anything that loads megatron.core, so `--help` and CPU runs
start quietly; a GPU run says once which optional accelerations are missing
(`acceleration_notice`, printed by `megatron.runtime.device.select_device`).
"""

import importlib.util
import warnings
from typing import Callable, List, Optional

warnings.filterwarnings("ignore", message=r".*(Transformer Engine|Apex).*(not installed|Falling back).*")
warnings.filterwarnings("ignore", message=r".*Apex is not installed.*")
warnings.filterwarnings("ignore", message=r".*full scope is deprecated.*")  # megatron-core's own default

# Optional packages megatron-core uses for fused kernels on GPUs, and what their absence costs.
OPTIONAL_ACCELERATIONS = (
    ("transformer_engine", "TransformerEngine (fused attention/LayerNorm kernels, FP8)"),
    ("apex", "apex (fused Adam and multi-tensor kernels)"),
)


def missing_accelerations(find_spec: Callable[[str], object] = importlib.util.find_spec) -> List[str]:
    """Descriptions of the optional accelerations that are not installed."""
    missing = []
    for module, what in OPTIONAL_ACCELERATIONS:
        try:
            found = find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            missing.append(what)
    return missing


def acceleration_notice(use_gpu: bool, find_spec: Callable[[str], object] = importlib.util.find_spec) -> Optional[str]:
    """One line naming the missing optional accelerations, for GPU runs only (on CPU they could
    not be used anyway); None when nothing is missing or the run is on CPU."""
    if not use_gpu:
        return None
    missing = missing_accelerations(find_spec)
    if not missing:
        return None
    return "[runtime] not installed, using megatron-core's PyTorch fallbacks: " + "; ".join(missing)
