"""Shared plumbing for console scripts: user mistakes become one line on stderr, not tracebacks; flags
made from a config dataclass, with each field's docstring as its help.

    >>> parser = argparse.ArgumentParser()
    >>> add_config_flags(parser, ServeConfig)                  # --port, --max-batch-frames, ...
    >>> ServeConfig(**flag_values(ServeConfig, parser.parse_args(["--port", "0"]))).port
    0
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import functools
import inspect
import itertools
import socket
import sys
import textwrap
import types
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pvae.errors import PVAEError

#: Exit code for a user error (bad input, missing file, ...), as argparse uses.
EXIT_USER_ERROR = 2
#: Exit code after Ctrl-C, as shells report SIGINT.
EXIT_INTERRUPTED = 130


def run_cli(prog: str, main: Callable[[Sequence[str] | None], int | None], argv: Sequence[str] | None) -> int:
    """Run ``main(argv)``; map ``PVAEError`` to ``prog: error: ...`` and exit code 2."""
    try:
        return int(main(argv) or 0)
    except PVAEError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now (the OS picks it), for a server this command
    starts in another process. In-process servers bind port 0 and report the port instead."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


# ----------------------------------------------------------------------------- config flags


@dataclass(frozen=True)
class Flag:
    """How one config field becomes a flag, where the rules of :func:`add_config_flags` do not fit."""

    name: str | None = None
    """The flag, e.g. ``"--duration"`` for ``duration_s`` (default: ``--`` + prefix + the field name with dashes)."""
    parse: Callable[[str], Any] | None = None
    """Text -> value (needed for tuples of anything but int, float or str; ``'off'`` -> None, ...)."""
    format: Callable[[Any], str] | None = None
    """Value -> text, for the default shown in ``--help`` (the inverse of ``parse``; tuples: comma-joined)."""
    help: str | None = None
    """Help text instead of the field's docstring; ``{doc}`` in it stands for the docstring."""
    negatable: bool = True
    """A bool field: ``--x/--no-x``; False: one flag that flips the default (``--x``, or ``--no-x`` for a
    field that defaults to True)."""
    repeat: bool = False
    """A tuple field given one item per flag (``--server-arg A --server-arg B``); ``parse`` reads one item."""


def _escape(text: str) -> str:
    return text.replace("%", "%%")


@functools.cache
def field_docs(cls: type) -> Mapping[str, str]:
    """The docstrings of a dataclass's fields (the string literal right after a field, base classes
    included), read from the source once per class."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError):  # no source (a class made at run time): no docstrings
            continue
        body = next(node for node in tree.body if isinstance(node, ast.ClassDef)).body
        for a, b in itertools.pairwise(body):
            if (isinstance(a, ast.AnnAssign) and isinstance(a.target, ast.Name) and isinstance(b, ast.Expr)
                    and isinstance(b.value, ast.Constant) and isinstance(b.value.value, str)):
                docs[a.target.id] = " ".join(b.value.value.split())  # one line, as --help prints it
    return types.MappingProxyType(docs)


def _comma_separated(item: Callable[[str], Any]) -> Callable[[str], tuple[Any, ...]]:
    def parse(text: str) -> tuple[Any, ...]:
        return tuple(item(part) for part in text.split(",")) if text else ()

    parse.__name__ = f"comma-separated {getattr(item, '__name__', 'item')}"  # argparse names it in errors
    return parse


def _user_errors_as_argparse(parse: Callable[[str], Any], flag: str) -> Callable[[str], Any]:
    """``parse`` with a ConfigError (a ValueError argparse would report as 'invalid value') turned into
    argparse's own error, so its message reaches the user."""
    @functools.wraps(parse)  # argparse names the function in its errors
    def wrapped(text: str) -> Any:
        try:
            return parse(text)
        except PVAEError as exc:
            raise argparse.ArgumentTypeError(str(exc).removeprefix(f"{flag}: ")) from None

    return wrapped


def _field_type(cls: type, name: str, hint: Any) -> tuple[Any, tuple[Any, ...] | None]:
    """(argparse ``type``, ``choices``) of a field annotated ``hint``; TypeError if it needs a ``Flag.parse``."""
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1:
            return _field_type(cls, name, rest[0])
    elif typing.get_origin(hint) is typing.Literal:
        return (None if isinstance(args[0], str) else type(args[0])), args
    elif typing.get_origin(hint) is tuple:
        items = {a for a in args if a is not Ellipsis}
        if len(items) == 1 and (item := items.pop()) in (int, float, str):
            return _comma_separated(item), None
    elif hint in (int, float, str, Path):
        return hint, None
    raise TypeError(f"{cls.__name__}.{name}: no flag for a field of type {hint!r}; give Flag(parse=...)")


def _default_text(value: Any, flag: Flag) -> Any:
    if flag.format is not None:
        return flag.format(value)
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value)
    return value


def add_config_flags(
    parser: argparse.ArgumentParser,
    cls: type,
    *,
    defaults: Any = None,
    flags: Mapping[str, Flag] | None = None,
    exclude: Iterable[str] = (),
    prefix: str = "",
    group: str | None = None,
    suppress: bool = False,
    show_defaults: bool = True,
) -> None:
    """One flag per field of the dataclass ``cls``: ``max_batch_frames`` -> ``--max-batch-frames``, with
    the field's docstring as its help; :func:`flag_values` reads them back.

    - bool: ``--x/--no-x``; Literal: its values are the choices; ``X | None``: as X; int, float, str,
      Path: parsed as such; a tuple of int, float or str: comma-separated; any other type needs
      ``flags[name].parse``. ``flags`` also renames a flag, replaces its help, or makes a tuple repeatable.
    - ``defaults``: an instance of ``cls`` whose values are the defaults (default: the class's own).
    - ``suppress``: an absent flag leaves no attribute (``default=argparse.SUPPRESS``), so its value can
      be layered over another config (a preset); the help still shows the value of ``defaults``.
    - ``show_defaults``: help ends in ``(default: ...)``.
    - ``prefix``: put before every flag name and destination (``prefix="server-"``: ``--server-port``).
    - ``group``: the flags go into an argument group of this title.

    Every field's help is its docstring; a field with none is a TypeError (unless ``flags`` gives the
    help), so no flag goes without one.
    """
    flags = flags or {}
    skip = set(exclude)
    unknown = (set(flags) | skip) - {f.name for f in dataclasses.fields(cls)}
    if unknown:
        raise TypeError(f"{cls.__name__} has no field {', '.join(sorted(unknown))}")
    docs = field_docs(cls)
    hints = typing.get_type_hints(cls)
    target: argparse.ArgumentParser | argparse._ArgumentGroup = (
        parser if group is None else parser.add_argument_group(group))
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        spec = flags.get(f.name, Flag())
        doc = docs.get(f.name)
        if doc is None and (spec.help is None or "{doc}" in spec.help):
            raise TypeError(f"{cls.__name__}.{f.name} has no docstring (the string literal after the field), "
                            "which its flag's --help shows; write one")
        text = _escape(doc or "") if spec.help is None else _escape(spec.help).replace("{doc}", _escape(doc or ""))
        if defaults is not None:
            value = getattr(defaults, f.name)
        elif f.default is not dataclasses.MISSING:
            value = f.default
        elif f.default_factory is not dataclasses.MISSING:
            value = f.default_factory()
        else:
            value = dataclasses.MISSING
        hint = hints[f.name]
        flag = spec.name or "--" + (prefix + f.name).replace("_", "-")
        kwargs: dict[str, Any] = {"dest": prefix.replace("-", "_") + f.name}
        if spec.name is not None:  # the metavar argparse would derive from the flag, not from the field
            kwargs["metavar"] = spec.name.lstrip("-").replace("-", "_").upper()
        if hint is bool and not spec.negatable:
            kwargs["action"] = "store_false" if value else "store_true"
            if spec.name is None and value:
                flag = "--no-" + flag.removeprefix("--")
            kwargs.pop("metavar", None)
        elif hint is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
            kwargs.pop("metavar", None)
        else:
            kind, choices = (spec.parse, None) if spec.parse is not None else _field_type(cls, f.name, hint)
            if spec.repeat:
                kwargs["action"] = "append"
                if spec.parse is None:  # one item per flag: the tuple's item type
                    kind, choices = _field_type(cls, f.name, typing.get_args(hint)[0])
            if kind is not None:
                kwargs["type"] = _user_errors_as_argparse(kind, flag) if spec.parse is not None else kind
            if choices is not None:
                kwargs["choices"] = choices
                kwargs.pop("metavar", None)
        if suppress:
            kwargs["default"] = argparse.SUPPRESS
            if show_defaults and value is not dataclasses.MISSING:
                text += _escape(f" (default: {_default_text(value, spec)})")
        elif value is dataclasses.MISSING:
            kwargs["required"] = True
        else:
            # A tuple's default is given as text, which argparse parses like the user's.
            kwargs["default"] = list(value) if spec.repeat else _default_text(value, spec)
            if show_defaults:
                text += " (default: %(default)s)"
        target.add_argument(flag, help=text, **kwargs)


def flag_values(cls: type, args: argparse.Namespace, prefix: str = "") -> dict[str, Any]:
    """The values of ``cls``'s fields among parsed flags (those added by :func:`add_config_flags`; with
    ``suppress``, only the flags given), ready for ``cls(**values)`` or ``dataclasses.replace``."""
    given = vars(args)
    values = {}
    for f in dataclasses.fields(cls):
        dest = prefix.replace("-", "_") + f.name
        if dest in given:
            value = given[dest]
            values[f.name] = tuple(value) if isinstance(value, list) else value
    return values
