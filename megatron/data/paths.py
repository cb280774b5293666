"""Path flags: each command-line flag that takes a path declares what kind of path, and every
declared path is checked in one place, right after parsing and before any work starts.

A wrong kind of path (a regular file where a directory is expected, a directory where a file is
expected, a non-empty directory where a new one is needed, a location whose parent cannot be
created, an unwritable location, a missing input) gets one line naming the flag, the path and what
to give instead. The checks only look: nothing is created, so a refused command leaves the disk as
it was.

Declaring: ``declare(parser.add_argument("--save"), OUTPUT_DIR, "a directory for checkpoints")``,
``declare_all(parser, {dest: kind})`` for flags added elsewhere, or ``metadata={"path": OUTPUT_DIR}``
on a dataclass field whose flag :func:`megatron.training.cli.add_dataclass_args` generates. Every
flag that takes a string declares a kind (:data:`TEXT` for strings that are not paths), so
``tests/test_path_flags.py`` can walk them all and fails for a new string flag without one.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from dataclasses import dataclass
from typing import Dict, Iterator, List, NoReturn, Optional, Sequence, Tuple, Union

INPUT_FILE = "input-file"  # an existing regular file
INPUT_DIR = "input-dir"  # an existing directory
INPUT_PATH = "input-path"  # an existing file or directory (e.g. a Hugging Face tokenizer directory)
INPUT_DATASET = "input-dataset"  # indexed-dataset prefixes (.bin/.idx pairs), or a weighted blend of them
OUTPUT_FILE = "output-file"  # a file to write (its directory is created if missing)
OUTPUT_DIR = "output-dir"  # a directory to write into (created if missing; may hold files)
OUTPUT_NEW_DIR = "output-new-dir"  # a directory to fill: new or empty
OUTPUT_PREFIX = "output-prefix"  # a file-name prefix ({prefix}.model, {prefix}_text_document.bin, ...)
TEXT = "text"  # not a path
KINDS = (INPUT_FILE, INPUT_DIR, INPUT_PATH, INPUT_DATASET, OUTPUT_FILE, OUTPUT_DIR, OUTPUT_NEW_DIR, OUTPUT_PREFIX, TEXT)

_DEFAULT_WHAT = {
    INPUT_FILE: "an existing file", INPUT_DIR: "an existing directory", INPUT_PATH: "an existing file or directory",
    INPUT_DATASET: "the prefix of a .bin/.idx pair written by tools/preprocess_data.py",
    OUTPUT_FILE: "a file path", OUTPUT_DIR: "a directory (it is created if missing)",
    OUTPUT_NEW_DIR: "a new or empty directory", OUTPUT_PREFIX: "a file prefix", TEXT: "",
}

# A value holding this is a template filled in later (--curriculum-difficulty-file '{prefix}.npy').
TEMPLATE = "{prefix}"


class PathError(ValueError):
    """A path flag given the wrong kind of path (one line: the flag, the path, what to give)."""


@dataclass(frozen=True)
class PathKind:
    kind: str
    what: str = ""  # what to give instead, e.g. "a directory written by --save"
    after: Optional[str] = None  # the path follows this separator in the value (--run NAME=PATH)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown path kind {self.kind!r} (one of {', '.join(KINDS)})")


Spec = Union[str, Tuple[str, str], PathKind]


def as_path_kind(spec: Spec) -> PathKind:
    if isinstance(spec, PathKind):
        return spec
    if isinstance(spec, tuple):
        return PathKind(*spec)
    return PathKind(spec)


def declare(action: argparse.Action, kind: str, what: str = "", after: Optional[str] = None) -> argparse.Action:
    """Mark ``action`` (what ``add_argument`` returned) as taking paths of ``kind``."""
    action.path_kind = PathKind(kind, what, after)
    return action


def declare_all(parser: argparse.ArgumentParser, kinds: Dict[str, Spec]) -> None:
    """Mark the flags of ``parser`` with these dests: ``{dest: kind or (kind, what) or PathKind}``."""
    by_dest = {a.dest: a for a in parser._actions}
    for dest, spec in kinds.items():
        if dest not in by_dest:
            raise KeyError(f"no flag with dest {dest!r} to declare a path kind for")
        by_dest[dest].path_kind = as_path_kind(spec)


def kind_of(action: argparse.Action) -> Optional[PathKind]:
    return getattr(action, "path_kind", None)


def string_actions(parser: argparse.ArgumentParser) -> List[argparse.Action]:
    """The flags that take free strings: each must declare a path kind (TEXT when not a path)."""
    return [a for a in parser._actions
            if a.option_strings and a.nargs != 0 and a.type in (None, str) and not a.choices
            and not isinstance(a, (argparse._HelpAction, argparse._VersionAction))]


# ------------------------------------------------------------------------------------------ checks


def _nearest_existing(path: str) -> str:
    path = os.path.abspath(path)
    while not os.path.lexists(path):
        path = os.path.dirname(path)
    return path


def _creatable(flag: str, given: str, path: str, what: str) -> None:
    """``path`` (for the flag's value ``given``) does not exist: its nearest existing ancestor must
    be a writable directory, so that it can be created."""
    base = _nearest_existing(path)
    if not os.path.isdir(base):
        raise PathError(f"{flag} {given}: {base} is a file, not a directory, so nothing can be created under it; "
                        f"give {what} whose parent is a directory")
    if not os.access(base, os.W_OK | os.X_OK):
        raise PathError(f"{flag} {given}: {base} is not writable; choose a location you can write to")


def check_input_file(flag: str, path: str, what: str = "") -> None:
    what = what or _DEFAULT_WHAT[INPUT_FILE]
    if os.path.isdir(path):
        raise PathError(f"{flag} {path} is a directory, not a file: give {what}")
    if not os.path.exists(path):
        raise PathError(f"{flag} {path} does not exist: give {what}")
    if not os.access(path, os.R_OK):
        raise PathError(f"{flag} {path} is not readable: fix its permissions or give another file")


def check_input_dir(flag: str, path: str, what: str = "") -> None:
    what = what or _DEFAULT_WHAT[INPUT_DIR]
    if os.path.exists(path) and not os.path.isdir(path):
        raise PathError(f"{flag} {path} is a file, not a directory: give {what}")
    if not os.path.isdir(path):
        raise PathError(f"{flag} {path}: no such directory (give {what})")
    if not os.access(path, os.R_OK | os.X_OK):
        raise PathError(f"{flag} {path} is not readable: fix its permissions or give another directory")


def check_input_path(flag: str, path: str, what: str = "") -> None:
    if not os.path.exists(path):
        raise PathError(f"{flag} {path} does not exist: give {what or _DEFAULT_WHAT[INPUT_PATH]}")


def check_output_dir(flag: str, path: str, what: str = "", new: bool = False) -> None:
    """A directory to write into (``new``: one that is new or empty, so nothing in it is replaced)."""
    what = what or _DEFAULT_WHAT[OUTPUT_NEW_DIR if new else OUTPUT_DIR]
    if os.path.exists(path) and not os.path.isdir(path):
        raise PathError(f"{flag} {path} is a file, not a directory: give {what}")
    if not os.path.exists(path):
        _creatable(flag, path, path, "a path")
        return
    if not os.access(path, os.W_OK | os.X_OK):
        raise PathError(f"{flag} {path} is not writable; choose a directory you can write to")
    if new:
        entries = sorted(os.listdir(path))
        if entries:
            shown = ", ".join(entries[:3]) + (", ..." if len(entries) > 3 else "")
            raise PathError(f"{flag} {path} is not empty ({len(entries)} {'entry' if len(entries) == 1 else 'entries'}: "
                            f"{shown}): give {what}; "
                            "nothing in an existing directory is replaced")


def check_output_file(flag: str, path: str, what: str = "") -> None:
    what = what or _DEFAULT_WHAT[OUTPUT_FILE]
    if os.path.isdir(path) or path.endswith(("/", os.sep)):
        raise PathError(f"{flag} {path} is a directory, not a file: give {what} (a file inside it, for example)")
    if os.path.exists(path):
        if not os.access(path, os.W_OK):
            raise PathError(f"{flag} {path} is not writable; choose another file or fix its permissions")
        return
    _creatable(flag, path, path, "a path")


def check_output_prefix(flag: str, prefix: str, what: str = "") -> None:
    """A prefix the output file names are made from: not a directory, and creatable."""
    if prefix.endswith(("/", os.sep)) or os.path.isdir(prefix):
        name = os.path.join(prefix, "corpus")
        raise PathError(f"{flag} {prefix!r} names a directory; give a file prefix such as {name!r}"
                        + (f" ({what})" if what else ""))
    parent = os.path.dirname(os.path.abspath(prefix))
    if os.path.isdir(parent):
        if not os.access(parent, os.W_OK | os.X_OK):
            raise PathError(f"{flag} {prefix}: {parent} is not writable; choose a location you can write to")
    else:
        _creatable(flag, prefix, parent, "a prefix")


def check_input_dataset(flag: str, values: Union[str, Sequence[str]], what: str = "") -> None:
    """Each prefix of a prefix list or a ``w1 p1 w2 p2`` blend names a .bin/.idx pair."""
    from megatron.data.config import parse_blend

    try:
        blend = parse_blend(values, flag)
    except ValueError:
        return  # a malformed blend is refused with its own message when the data config is built
    for prefix in (blend[0] if blend else []):
        if os.path.isfile(prefix + ".bin") and os.path.isfile(prefix + ".idx"):
            continue
        if os.path.isdir(prefix):
            found = sorted(n[:-4] for n in os.listdir(prefix) if n.endswith(".idx"))
            example = os.path.join(prefix, found[0] if found else "corpus_text_document")
            raise PathError(f"{flag} {prefix} is a directory; give a dataset prefix, the path of a .bin/.idx pair "
                            f"without the extension (e.g. {example})")
        stem, ext = os.path.splitext(prefix)
        if ext in (".bin", ".idx") and os.path.isfile(stem + ".bin") and os.path.isfile(stem + ".idx"):
            raise PathError(f"{flag} {prefix}: give the dataset prefix without the extension ({stem})")
        missing = [p for p in (prefix + ".bin", prefix + ".idx") if not os.path.isfile(p)]
        raise PathError(f"{flag} {prefix} is not an indexed dataset: missing {', '.join(missing)} (give "
                        f"{what or _DEFAULT_WHAT[INPUT_DATASET]}, without the extension)")


_CHECKS = {INPUT_FILE: check_input_file, INPUT_DIR: check_input_dir, INPUT_PATH: check_input_path,
           OUTPUT_FILE: check_output_file, OUTPUT_DIR: check_output_dir, OUTPUT_PREFIX: check_output_prefix}


def check(flag: str, value, spec: Spec) -> None:
    """Check one flag's value (a string or, for ``nargs`` flags, a list) against its kind."""
    spec = as_path_kind(spec)
    if value is None or spec.kind == TEXT:
        return
    values = list(value) if isinstance(value, (list, tuple)) else [value]
    if spec.kind == INPUT_DATASET:
        check_input_dataset(flag, values, spec.what)
        return
    for v in values:
        if spec.after and spec.after not in str(v):
            continue  # not NAME=PATH: the tool's own message says what the value should look like
        path = str(v).split(spec.after, 1)[-1] if spec.after else str(v)
        if TEMPLATE in path:
            continue
        if spec.kind == OUTPUT_NEW_DIR:
            check_output_dir(flag, path, spec.what, new=True)
        else:
            _CHECKS[spec.kind](flag, path, spec.what)


def check_paths(parser: argparse.ArgumentParser, args: argparse.Namespace,
                skip_when_given: Optional[Dict[str, str]] = None) -> None:
    """The one place path flags are checked: raise :class:`PathError` for the first wrong one.
    ``skip_when_given``: {dest: other dest} for a flag that is unused when the other is given
    (--results-dir under --results-json)."""
    skip = {dest for dest, other in (skip_when_given or {}).items() if getattr(args, other, None) is not None}
    for action in parser._actions:
        spec = kind_of(action)
        if spec is None or action.dest in skip or not action.option_strings:
            continue
        value = getattr(args, action.dest, None)
        if value is None or value is argparse.SUPPRESS:
            continue
        check(action.option_strings[0], value, spec)


@contextlib.contextmanager
def removed_on_failure(path: str) -> Iterator[None]:
    """Directories that a write creates for ``path`` (the missing ones above it, and ``path``
    itself) are removed again, when still empty, if the write fails: a failed write leaves no
    empty directories behind either. The write removes its own staged files."""
    made = []
    d = os.path.abspath(path)
    while not os.path.lexists(d):
        made.append(d)
        d = os.path.dirname(d)
    try:
        yield
    except BaseException:
        for d in made:  # deepest first
            try:
                os.rmdir(d)  # only ever removes an empty directory
            except OSError:
                pass
        raise


def fail(prog: str, error: BaseException, code: int = 2) -> NoReturn:
    """``prog: error: MESSAGE`` on one line, then exit (2: an input to fix)."""
    print(f"{prog}: error: {error}", file=sys.stderr, flush=True)
    sys.exit(code)


def exit_code(main):
    """Decorator for a tool's ``main(argv) -> int``: the ``SystemExit`` of a refused flag (argparse's
    or :func:`parse_checked`'s) becomes its return value, so a caller in-process gets the code."""
    import functools

    @functools.wraps(main)
    def run(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except SystemExit as e:
            return e.code
    return run


def parse_checked(parser: argparse.ArgumentParser, argv: Optional[Sequence[str]] = None,
                  known: bool = False, skip_when_given: Optional[Dict[str, str]] = None):
    """``parser.parse_args`` (or ``parse_known_args``), then :func:`check_paths`; a wrong path
    exits 2 with one line, before the caller does anything (``SystemExit``, as argparse's own
    errors: a ``main`` that returns its exit code catches it, see :func:`exit_code`)."""
    parsed = parser.parse_known_args(argv) if known else parser.parse_args(argv)
    try:
        check_paths(parser, parsed[0] if known else parsed, skip_when_given)
    except PathError as e:
        fail(parser.prog, e)
    return parsed
