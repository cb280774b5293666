"""Repository-wide checks: nothing points outside a user's clone, and every dependency is pinned."""

import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Spelled in two pieces so this file does not contain what it looks for.
OUTSIDE_REF = "../" + "shared"


def tracked_files():
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True, timeout=60).stdout
    except (OSError, subprocess.CalledProcessError) as e:
        pytest.skip(f"not a git checkout ({e})")
    return [p for p in out.decode().split("\0") if p]


def test_no_tracked_file_refers_outside_the_clone():
    files = tracked_files()
    assert "README.md" in files
    offenders = []
    for rel in files:
        path = os.path.join(ROOT, rel)
        if not os.path.isfile(path):  # deleted in the working tree but still tracked
            continue
        with open(path, "rb") as f:
            data = f.read()
        for i, line in enumerate(data.split(b"\n"), 1):
            if OUTSIDE_REF.encode() in line:
                offenders.append(f"{rel}:{i}")
    assert not offenders, f"files refer to {OUTSIDE_REF}, which a user's clone does not have: {offenders}"


# ------------------------------------------------------------------ pins
def _setup_requirements():
    """install_requires and every extra of setup.py, read without running setup()."""
    import setuptools

    captured = {}
    real = setuptools.setup
    setuptools.setup = lambda **kw: captured.update(kw)
    cwd = os.getcwd()
    try:
        os.chdir(ROOT)
        with open(os.path.join(ROOT, "setup.py")) as f:
            exec(compile(f.read(), "setup.py", "exec"), {"__name__": "__main__", "__file__": "setup.py"})
    finally:
        os.chdir(cwd)
        setuptools.setup = real
    reqs = list(captured["install_requires"])
    for extra in captured.get("extras_require", {}).values():
        reqs += list(extra)
    return reqs


def _canon(name):
    return re.sub(r"[-_.]+", "-", name).lower()


def _pins(path):
    pins = {}
    with open(path) as f:
        for line in f:
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            m = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;]+)", line)
            assert m, f"constraints.txt: {line!r} is not an exact pin NAME==VERSION"
            pins[_canon(m.group(1))] = m.group(2)
    return pins


def test_every_requirement_has_an_exact_pin_that_satisfies_setup_py():
    from packaging.requirements import Requirement

    pins = _pins(os.path.join(ROOT, "constraints.txt"))
    missing, outside = [], []
    for text in _setup_requirements():
        req = Requirement(text)
        name = _canon(req.name)
        if name == "torch":  # a range on purpose: a GPU machine keeps its own build
            assert name not in pins, "torch must not be pinned in constraints.txt"
            continue
        if name not in pins:
            missing.append(req.name)
        elif req.specifier and pins[name] not in req.specifier:
            outside.append(f"{req.name}=={pins[name]} (setup.py wants {req.specifier})")
    assert not missing, f"no pin in constraints.txt for {missing}"
    assert not outside, f"pins outside setup.py's ranges: {outside}"


def test_installed_versions_match_the_pins():
    """In an environment built by scripts/setup_env.sh, what is installed is what is pinned."""
    from importlib import metadata

    if os.environ.get("MEGATRON_LTD_PINNED_ENV") != "1":
        pytest.skip("not an environment built from constraints.txt by scripts/setup_env.sh")
    pins = _pins(os.path.join(ROOT, "constraints.txt"))
    wrong = []
    for name, version in pins.items():
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue  # pinned for an extra this environment did not install
        if not os.path.realpath(str(dist.locate_file(""))).startswith(os.path.realpath(sys.prefix)):
            continue  # a system package seen through --system-site-packages, not installed by us
        got = dist.version
        if got != version:
            wrong.append(f"{name}: installed {got}, pinned {version}")
    assert not wrong, wrong
    assert sys.version_info >= (3, 10)
