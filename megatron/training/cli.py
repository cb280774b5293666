"""Generate argparse flags from typed dataclasses, and build the dataclasses back from the args.

Each field may carry ``metadata={"flag": "--num-layers", "help": "..."}`` (default flag: the field
name with dashes). Booleans become ``store_true`` flags, or ``store_false`` when
``metadata["negate"]`` names the flag that turns them off (``--no-load-optim`` style).

Numeric fields declare their range in the same metadata: ``ge``/``gt``/``le``/``lt`` bounds and
``off``, a value outside them that means "turned off" (``metadata={"gt": 1, "off": 0}``), and an
optional ``hint`` printed with the error. The range is attached to the generated flag
(:func:`attach_ranges` does the same for flags that a module adds by hand from its own dataclass)
and :func:`check_ranges` enforces every range in one place, right after parsing.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import re
import typing
from typing import Any, Dict, Optional, Type, TypeVar

T = TypeVar("T")


def _flag(field: dataclasses.Field) -> str:
    return field.metadata.get("flag", "--" + field.name.replace("_", "-"))


def _base_type(tp) -> Any:
    origin = typing.get_origin(tp)
    if origin is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return _base_type(args[0])
    return tp


def parse_int(text: str) -> int:
    """An integer flag that also takes ``3e9`` / ``300_000`` notation (token budgets)."""
    try:
        return int(text.replace("_", ""))
    except ValueError:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if not value.is_integer():
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        return int(value)


RANGE_KEYS = ("ge", "gt", "le", "lt", "off")


@dataclasses.dataclass(frozen=True)
class Range:
    """A numeric flag's allowed values: every given bound holds (and the value is finite), or the
    value is ``off`` (e.g. 0 for "no limit")."""

    ge: Optional[float] = None
    gt: Optional[float] = None
    le: Optional[float] = None
    lt: Optional[float] = None
    off: Optional[float] = None
    hint: Optional[str] = dataclasses.field(default=None, compare=False)  # printed after the range

    @classmethod
    def of(cls, metadata) -> Optional["Range"]:
        kw = {k: metadata[k] for k in RANGE_KEYS if k in metadata}
        return cls(**kw, hint=metadata.get("hint")) if kw else None

    def contains(self, value) -> bool:
        if self.off is not None and value == self.off:
            return True
        if isinstance(value, float) and not math.isfinite(value):
            return False
        return ((self.ge is None or value >= self.ge) and (self.gt is None or value > self.gt)
                and (self.le is None or value <= self.le) and (self.lt is None or value < self.lt))

    def __str__(self) -> str:
        low = (f"[{_num(self.ge)}" if self.ge is not None else f"({_num(self.gt)}") if (self.ge, self.gt) != (None, None) else None
        high = (f"{_num(self.le)}]" if self.le is not None else f"{_num(self.lt)})") if (self.le, self.lt) != (None, None) else None
        if low and high:
            text = f"in {low}, {high}"
        elif low:
            text = (">= " if self.ge is not None else "> ") + low[1:]
        elif high:
            text = ("<= " if self.le is not None else "< ") + high[:-1]
        else:
            text = "finite"
        return text + (f" (or {_num(self.off)} = off)" if self.off is not None else "")


def _num(x) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


def attach_ranges(parser: argparse.ArgumentParser, cls: Type, dest_prefix: str = "",
                  dest_to_field: Optional[Dict[str, str]] = None) -> None:
    """Give the flags with ``dest == dest_prefix + field name`` the range their field declares
    (for flags added by hand from a dataclass, e.g. ``--random-ltd-min-seq`` from ``min_seq``);
    ``dest_to_field`` names the field where a flag's dest is not derived from it."""
    ranges = {dest_prefix + f.name: Range.of(f.metadata) for f in dataclasses.fields(cls)}
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for dest, name in (dest_to_field or {}).items():
        ranges[dest] = Range.of(fields[name].metadata)
    for action in parser._actions:
        if ranges.get(action.dest) is not None:
            action.range = ranges[action.dest]


def numeric_actions(parser: argparse.ArgumentParser):
    """The parser's flags that take numbers (the ones that must declare a range)."""
    return [a for a in parser._actions if a.option_strings and a.type in (int, float, parse_int)]


def check_ranges(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """The one place ranges are enforced: raise ValueError naming the first flag out of range."""
    for action in parser._actions:
        rng = getattr(action, "range", None)
        value = getattr(args, action.dest, None)
        if rng is None or value is None:
            continue
        for v in value if isinstance(value, list) else [value]:
            if not rng.contains(v):
                raise ValueError(f"{action.option_strings[0]} must be {rng}, got {_num(v)}"
                                 + (f" ({rng.hint})" if rng.hint else ""))


class OneLineErrorParser(argparse.ArgumentParser):
    """argparse's exit code 2 and ``prog: error: ...``, without the many-line usage block above it
    (``--help`` prints the usage): one line naming the cause."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Each default printed once; none for on/off flags (``--no-load-optim`` "default: True" read as
    "on") or for defaults of None."""

    def _get_help_string(self, action):
        if action.nargs == 0 or action.default is None or action.default is argparse.SUPPRESS:
            return action.help
        if "%(default)" in (action.help or "") or "default:" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


# argparse takes "-1e-3" for an option (its negative-number pattern has no exponent), so
# `--lr -1e-3` failed with "expected one argument" instead of the value check.
NEGATIVE_NUMBER = re.compile(r"^-(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")


def add_dataclass_args(parser: argparse.ArgumentParser, cls: Type, title: str) -> argparse._ArgumentGroup:
    group = parser.add_argument_group(title)
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        if not field.metadata.get("cli", True):
            continue
        tp = _base_type(hints[field.name])
        help_text = field.metadata.get("help", "")
        default = field.default if field.default is not dataclasses.MISSING else field.default_factory()  # type: ignore[misc]
        kw: Dict[str, Any] = {"dest": field.name, "help": help_text}
        if tp is bool:
            if "negate" in field.metadata:
                group.add_argument(field.metadata["negate"], action="store_false", default=default, **kw)
            else:
                group.add_argument(_flag(field), action="store_true", default=default, **kw)
            continue
        if typing.get_origin(tp) in (list, typing.List):
            (elem,) = typing.get_args(tp)
            kw.update(nargs="+", type=elem)
        else:
            kw["type"] = parse_int if tp is int else tp
        if "choices" in field.metadata:
            kw["choices"] = field.metadata["choices"]
        action = group.add_argument(_flag(field), default=default, **kw)
        action.range = Range.of(field.metadata)
        if "path" in field.metadata:  # checked by megatron.data.paths.check_paths
            from megatron.data.paths import as_path_kind

            action.path_kind = as_path_kind(field.metadata["path"])
        for alias in field.metadata.get("aliases", ()):
            alias_action = group.add_argument(alias, dest=field.name, default=argparse.SUPPRESS, type=kw.get("type"),
                                              help=argparse.SUPPRESS)
            alias_action.range = action.range
    return group


def dataclass_from_args(cls: Type[T], args: argparse.Namespace) -> T:
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if f.metadata.get("cli", True) and hasattr(args, f.name)}
    return cls(**values)

