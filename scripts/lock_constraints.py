#!/usr/bin/env python
"""Regenerate constraints.txt (and scripts/torch-cpu-constraints.txt) from a fresh environment.

    python3 -m venv /tmp/lockenv
    /tmp/lockenv/bin/pip install torch==2.13.0
    /tmp/lockenv/bin/pip install -e ".[test,hf,eval]"        # no -c: resolve today's newest
    /tmp/lockenv/bin/python scripts/lock_constraints.py        # rewrites both files

constraints.txt pins, to the versions installed in the environment that runs this script, every
requirement of setup.py (install_requires and all extras) and everything they pull in, except
torch and the packages only torch needs: those stay free so that a machine with its own torch (a
GPU box) keeps it. scripts/torch-cpu-constraints.txt pins torch's own dependencies for the CPU
build the setup script installs on machines without torch.
"""

from __future__ import annotations

import os
import re
import sys
from importlib import metadata

from packaging.markers import default_environment
from packaging.requirements import Requirement

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TORCH = "torch"


def canon(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def setup_requirements() -> list[str]:
    import setuptools

    captured: dict = {}
    real = setuptools.setup
    setuptools.setup = lambda **kw: captured.update(kw)
    cwd = os.getcwd()
    try:
        os.chdir(ROOT)
        with open("setup.py") as f:
            exec(compile(f.read(), "setup.py", "exec"), {"__name__": "__main__", "__file__": "setup.py"})
    finally:
        os.chdir(cwd)
        setuptools.setup = real
    reqs = list(captured["install_requires"])
    for extra in captured.get("extras_require", {}).values():
        reqs += extra
    return reqs


def applies(req: Requirement, extras: set[str]) -> bool:
    if req.marker is None:
        return True
    env = default_environment()
    return any(req.marker.evaluate(dict(env, extra=e)) for e in (extras or {""}))


def closure(roots: list[Requirement], stop: set[str]) -> set[str]:
    """Installed distributions reachable from ``roots`` (not descending into ``stop``)."""
    seen: dict[str, set[str]] = {}
    todo = [(canon(r.name), set(r.extras)) for r in roots]
    while todo:
        name, extras = todo.pop()
        if name in stop:
            continue
        if name in seen and extras <= seen[name]:
            continue
        seen.setdefault(name, set()).update(extras)
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            raise SystemExit(f"{name} is required but not installed in {sys.prefix}: install the project first")
        for text in dist.requires or []:
            req = Requirement(text)
            if applies(req, seen[name]):
                todo.append((canon(req.name), set(req.extras)))
    return set(seen)


def version(name: str) -> str:
    return metadata.version(name)


def main() -> None:
    roots = [Requirement(r) for r in setup_requirements()]
    project = closure([r for r in roots if canon(r.name) != TORCH], stop={TORCH})
    # Triton rides with the CPU torch (its interpreter runs the fused kernels' tests on CPU).
    torch_deps = closure([Requirement(TORCH), Requirement("triton")], stop=set()) - {TORCH}
    torch_only = torch_deps - project
    header = (
        "# Exact versions for `pip install -c constraints.txt -e .[test,hf]` (scripts/setup_env.sh).\n"
        "# Every requirement of setup.py and everything it pulls in, except torch and the packages\n"
        "# only torch needs (a machine with its own torch keeps it). Regenerate with\n"
        "# scripts/lock_constraints.py in a fresh environment; do not edit by hand.\n"
        f"# Resolved with Python {sys.version_info.major}.{sys.version_info.minor} and torch {version(TORCH)}.\n"
    )
    with open(os.path.join(ROOT, "constraints.txt"), "w") as f:
        f.write(header)
        for name in sorted(project):
            f.write(f"{name}=={version(name)}\n")
    with open(os.path.join(ROOT, "scripts", "torch-cpu-constraints.txt"), "w") as f:
        f.write("# torch's own dependencies, pinned for the CPU torch the setup script installs on a\n"
                "# machine without torch. Written by scripts/lock_constraints.py.\n")
        for name in sorted(torch_only):
            f.write(f"{name}=={version(name)}\n")
    print(f"constraints.txt: {len(project)} pins; torch-cpu-constraints.txt: {len(torch_only)} pins "
          f"({', '.join(sorted(torch_only))})")


if __name__ == "__main__":
    main()
