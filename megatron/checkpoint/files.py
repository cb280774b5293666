"""The checkpoint directory: names, the tracker, the manifest (written last: what makes a
checkpoint complete, with every file's size and CRC-32), atomic writes, pruning.

    SAVE/latest_checkpointed_iteration.txt    the newest committed checkpoint
    SAVE/iter_0000100/manifest.json           written last: config, layout, counters, files
    SAVE/iter_0000100/*.distcp, .metadata,    megatron-core dist_checkpointing (torch_dist):
        common.pt, metadata.json              each rank writes only its own shards

Nothing here knows about models or process groups.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import signal
import zlib
from typing import Any, Dict, Iterable, List, Optional

TRACKER = "latest_checkpointed_iteration.txt"
MANIFEST = "manifest.json"
LEGACY_METADATA = "metadata.json"  # the per-rank format's record (megatron-core writes its own metadata.json now)
FORMAT = "torch_dist"
_CHUNK = 8 << 20
_ITER_RE = re.compile(r"^iter_(\d+)$")


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used for this run; the message says why and what to do."""


class CheckpointDamaged(CheckpointError):
    """A file of the checkpoint is missing, truncated, altered or unreadable (an older one may still load)."""


def iter_dir(root: str, iteration: int) -> str:
    return os.path.join(root, f"iter_{iteration:07d}")


def maybe_crash(stage: str, iteration: int) -> None:
    """Fault injection for the kill-and-resume tests: MEGATRON_LTD_CRASH_AT=<stage>:<iteration>."""
    spec = os.environ.get("MEGATRON_LTD_CRASH_AT")
    only_rank = os.environ.get("MEGATRON_LTD_CRASH_RANK")  # kill one rank only (the job must follow)
    if only_rank is not None and only_rank != os.environ.get("RANK", "0"):
        return
    if spec and spec == f"{stage}:{iteration}":
        os.kill(os.getpid(), signal.SIGKILL)


def fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


def atomic_write_text(path: str, text: str) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    fsync_dir(os.path.dirname(path) or ".")


def is_disk_full(error: BaseException) -> bool:
    """ENOSPC anywhere in the chain, or in the text of an error a writer process sent back."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if "No space left on device" in str(error) or "[Errno 28]" in str(error):
            return True
        error = error.__cause__ or error.__context__
    return False


# -------------------------------------------------------------------------------- checksums


def crc32_file(path: str) -> int:
    crc = 0
    with open(path, "rb") as f:
        while True:
            block = f.read(_CHUNK)
            if not block:
                return crc
            crc = zlib.crc32(block, crc)


def describe_files(directory: str, names: Iterable[str]) -> Dict[str, Dict[str, int]]:
    """{relative name: {"size", "crc32"}} for the given files under ``directory``."""
    return {rel: {"size": os.path.getsize(os.path.join(directory, rel)), "crc32": crc32_file(os.path.join(directory, rel))}
            for rel in names}


def all_files(directory: str) -> List[str]:
    out = []
    for dirpath, _, names in os.walk(directory):
        out += [os.path.relpath(os.path.join(dirpath, n), directory) for n in names]
    return sorted(out)


def check_file(directory: str, rel: str, expected: Dict[str, int], content: bool = True) -> None:
    """Raise CheckpointDamaged naming the file when it is missing, has another size, or (with
    ``content``) another CRC-32 than recorded at save time."""
    path = os.path.join(directory, rel)
    if not os.path.isfile(path):
        raise CheckpointDamaged(f"{path} is missing")
    actual = os.path.getsize(path)
    if actual != expected["size"]:
        what = "empty (0 bytes)" if actual == 0 else f"truncated ({actual:,} of {expected['size']:,} bytes)" \
            if actual < expected["size"] else f"longer than saved ({actual:,} of {expected['size']:,} bytes)"
        raise CheckpointDamaged(f"{path} is {what}")
    if content and "crc32" in expected and crc32_file(path) != expected["crc32"]:
        raise CheckpointDamaged(f"{path} is altered (its CRC-32 differs from the one recorded at save time)")


# --------------------------------------------------------------------------------- manifest


def write_manifest(directory: str, manifest: Dict[str, Any]) -> None:
    atomic_write_text(os.path.join(directory, MANIFEST), json.dumps(manifest, indent=1, sort_keys=True))


def is_legacy(directory: str) -> bool:
    """A checkpoint of the retired per-rank format (mp_rank_TT_PPP/model_optim_rng.pt)."""
    return not os.path.isfile(os.path.join(directory, MANIFEST)) and os.path.isdir(os.path.join(directory, "mp_rank_00_000"))


def record_path(directory: str) -> str:
    return os.path.join(directory, LEGACY_METADATA if is_legacy(directory) else MANIFEST)


def read_manifest(root: str, iteration: int) -> Dict[str, Any]:
    """The record of a complete checkpoint (its manifest; for the per-rank format, its metadata.json)."""
    d = iter_dir(root, iteration)
    path = record_path(d)
    if not os.path.isfile(path):
        raise CheckpointError(
            f"checkpoint {d} is missing or incomplete (no {MANIFEST}); it may have been deleted. "
            f"Fix {os.path.join(root, TRACKER)} to name a complete iteration ({sorted(complete_iterations(root))}).")
    try:
        with open(path) as f:
            meta = json.load(f)
    except (OSError, ValueError) as e:
        raise CheckpointDamaged(f"{path} is damaged ({type(e).__name__}: {e})") from None
    if not isinstance(meta, dict) or not meta.get("complete"):
        raise CheckpointDamaged(f"{path} does not mark the checkpoint complete")
    meta.setdefault("format", "legacy" if is_legacy(d) else FORMAT)
    return meta


def complete_iterations(root: str) -> List[int]:
    out = []
    for name in os.listdir(root) if os.path.isdir(root) else []:
        m = _ITER_RE.match(name)
        if m and os.path.isfile(record_path(os.path.join(root, name))):
            out.append(int(m.group(1)))
    return out


def latest_iteration(root: str) -> Optional[int]:
    """The tracker's iteration, or None when the directory holds no checkpoint yet."""
    path = os.path.join(root, TRACKER)
    if not os.path.isfile(path):
        return None
    text = open(path).read().strip()
    try:
        return int(text)
    except ValueError:
        raise CheckpointError(f"{path} is corrupt (expected an iteration number, found {text[:40]!r})") from None


def holds_checkpoints(root: str) -> bool:
    """True when ``root`` holds a tracker or any iteration directory (another run's checkpoints)."""
    if not os.path.isdir(root):
        return False
    return any(n == TRACKER or n.startswith("iter_") for n in os.listdir(root))


def prune(root: str, keep_last: int, written: int) -> List[int]:
    """Keep the checkpoint just written and the ``keep_last - 1`` newest older complete ones.
    Newer directories (left by a run that was resumed from an older checkpoint) are not counted
    and not deleted: the resumed run replaces each when it saves that iteration again."""
    if keep_last < 1:
        raise ValueError(f"--keep-last-checkpoints must be >= 1, got {keep_last}")
    older = sorted(it for it in complete_iterations(root) if it < written)
    doomed = older[: max(len(older) - (keep_last - 1), 0)]
    for it in doomed:
        shutil.rmtree(iter_dir(root, it), ignore_errors=True)
    return doomed
