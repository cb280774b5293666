"""Generate argparse flags from typed dataclasses, and build the dataclasses back from the args.

Each field may carry ``metadata={"flag": "--num-layers", "help": "..."}`` (default flag: the field
name with dashes). Booleans become ``store_true`` flags, or ``store_false`` when
``metadata["negate"]`` names the flag that turns them off (``--no-load-optim`` style).
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import typing
from typing import Any, Dict, Type, TypeVar

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
        value = float(text)
        if not value.is_integer():
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        return int(value)


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
        group.add_argument(_flag(field), default=default, **kw)
        for alias in field.metadata.get("aliases", ()):
            group.add_argument(alias, dest=field.name, default=argparse.SUPPRESS, type=kw.get("type"), help=argparse.SUPPRESS)
    return group


def dataclass_from_args(cls: Type[T], args: argparse.Namespace) -> T:
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if f.metadata.get("cli", True) and hasattr(args, f.name)}
    return cls(**values)

