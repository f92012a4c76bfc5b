"""`vla <command> --help`: every option of a command's config, with its description and default.

Built from the config dataclasses themselves (the comment above each field is its description),
so help cannot drift from what the parser accepts. Imports nothing heavy: `--help` answers fast.
"""

from __future__ import annotations

import dataclasses
import re
import shutil
import textwrap
import types
import typing
from dataclasses import MISSING

from draccus.wrappers.docstring import get_attribute_docstring


@dataclasses.dataclass(frozen=True)
class Option:
    flag: str  # --dotted.name
    type: str
    description: str
    default: str


def _type_name(tp) -> str:
    origin = typing.get_origin(tp)
    if origin is None:
        return getattr(tp, "__name__", str(tp))
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if origin in (typing.Union, types.UnionType):
        return "|".join(_type_name(a) for a in args) + ("|None" if len(args) < len(typing.get_args(tp)) else "")
    return f"{getattr(origin, '__name__', str(origin))}[{', '.join(_type_name(a) for a in args)}]"


def _first_sentence(text: str) -> str:
    text = " ".join(text.split())
    match = re.search(r"(?<!e\.g)(?<!i\.e)(?<!etc)\.\s+(?=[A-Z(`])", text)
    return text[: match.start() + 1] if match else text


def _description(cls, name: str) -> str:
    doc = get_attribute_docstring(cls, name)
    return _first_sentence(doc.comment_above or doc.comment_inline or doc.docstring_below or "")


def _default(f: dataclasses.Field) -> object:
    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING:
        return f.default_factory()
    return MISSING


def options(cls, prefix: str = "", defaults: object = None) -> list[Option]:
    """Every command-line option of a config dataclass, nested groups as dotted flags."""
    hints = typing.get_type_hints(cls)
    found = []
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        tp = hints[f.name]
        default = getattr(defaults, f.name) if defaults is not None else _default(f)
        if dataclasses.is_dataclass(tp):
            found += options(tp, f"{prefix}{f.name}.", default if default is not MISSING else None)
            continue
        shown = "required" if default is MISSING else ("from the preset" if default is None and "preset" in
                                                       {g.name for g in dataclasses.fields(cls)} else repr(default))
        found.append(Option(f"--{prefix}{f.name}", _type_name(tp), _description(cls, f.name), shown))
    return found


def format_help(command: str, summary: str, config_cls) -> str:
    width = min(shutil.get_terminal_size((100, 24)).columns, 120)
    lines = [f"usage: vla {command} [--config FILE.yaml] [--OPTION=VALUE ...]", "", summary, "",
             "options:"]
    rows = [("-h, --help", "print this help and exit"),
            ("--config FILE.yaml", "base values from a YAML file (a run's config.yaml too); the options below "
                                   "override them")]
    # "\0" keeps "(default:" and its value on one line through the wrapping
    rows += [(f"{o.flag} {o.type}", f"{o.description} (default:\0{o.default})".lstrip()) for o in options(config_cls)]
    column = min(max(len(flag) for flag, _ in rows) + 4, 40)
    for flag, text in rows:
        wrapped = [w.replace("\0", " ") for w in textwrap.wrap(text, max(30, width - column))] or [""]
        if len(flag) + 4 > column:
            lines.append(f"  {flag}")
            lines += [" " * column + w for w in wrapped]
        else:
            lines.append(f"  {flag:<{column - 2}}{wrapped[0]}")
            lines += [" " * column + w for w in wrapped[1:]]
    lines += ["", "Nested options are dotted (--env.task=lift); lists are written [a,b]."]
    return "\n".join(lines)
