"""Every command refuses abbreviated flags: `--epoch 3` must not silently mean `--epochs 3`; flags made
from a config dataclass by ``pvae.cli.add_config_flags``."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pytest

from pvae.bench.train import main as bench_train_main
from pvae.cli import Flag, add_config_flags, field_docs, flag_values
from pvae.clients.cli import main as client_main
from pvae.errors import ConfigError
from pvae.export.cli import main as export_main
from pvae.serving.server import main as serve_main
from pvae.training.evaluate import main as eval_main
from pvae.training.study.report import main as report_main
from pvae.training.train import main as train_main

CASES: list[tuple[str, Callable[[Sequence[str] | None], int], list[str], str]] = [
    ("pvae-train", train_main, ["--out", "/nonexistent/pvae-test-run", "--epoch", "3"], "--epoch"),
    ("pvae-eval", eval_main, ["--max-sample", "5"], "--max-sample"),
    ("pvae-bench-train", bench_train_main, ["--real-epoch", "2"], "--real-epoch"),
    ("pvae-report", report_main, ["--qui"], "--qui"),
    ("pvae-export", export_main, ["model.pt", "--format", "onnx"], "--format"),
    ("pvae-serve", serve_main, ["--metrics-p", "0"], "--metrics-p"),
    ("pvae-client stream", client_main, ["stream", "--source", "synthetic", "--fram", "3"], "--fram"),
]


@pytest.mark.parametrize(("name", "entry", "argv", "flag"), CASES, ids=[c[0] for c in CASES])
def test_abbreviated_flags_are_refused(name: str, entry: Callable[[Sequence[str] | None], int], argv: list[str],
                                       flag: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        entry(argv)
    assert exited.value.code == 2, name
    err = capsys.readouterr().err
    assert "unrecognized arguments" in err and flag in err, err


def test_train_help_shows_the_chosen_presets_values(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        train_main(["--help"])
    quick = " ".join(capsys.readouterr().out.split())
    assert "(default: None)" not in quick
    assert "Passes over the training set. (default: 15)" in quick
    with pytest.raises(SystemExit):
        train_main(["--preset", "default-model", "--help"])
    default_model = " ".join(capsys.readouterr().out.split())
    assert "Passes over the training set. (default: 300)" in default_model
    assert "(default: exact)" in default_model and "(default: paper)" in default_model


# ----------------------------------------------------------------------------- pvae.cli.add_config_flags

Color = Literal["red", "green"]


@dataclass(frozen=True)
class _Base:
    name: str = "x"
    """A name, 100% made up."""


@dataclass(frozen=True)
class _Example(_Base):
    count: int = 3
    """How many."""
    ratio: float = 0.5
    """A ratio."""
    where: Path = Path("out")
    """A directory."""
    limit: int | None = None
    """An optional limit."""
    color: Color = "red"
    """A colour."""
    fast: bool = False
    """Go fast."""
    check: bool = True
    """Check things."""
    shape: tuple[int, int] = (16, 16)
    """Height and width."""
    sizes: tuple[tuple[int, int], ...] = ((4, 5),)
    """Frame sizes."""
    extra: tuple[str, ...] = ()
    """More arguments."""


@dataclass(frozen=True)
class _Undocumented:
    documented: int = 1
    """Has one."""
    bare: int = 2


@dataclass(frozen=True)
class _Required:
    size: int
    """No default."""


@dataclass(frozen=True)
class _Odd:
    table: dict[str, int] | None = None
    """A mapping no flag can hold."""


def _sizes(text: str) -> tuple[tuple[int, int], ...]:
    try:
        return tuple((int(h), int(w)) for h, w in (item.split("x") for item in text.split(",")))
    except ValueError:
        raise ConfigError(f"--sizes: expected HxW[,HxW...], got {text!r}") from None


def _sizes_text(sizes: tuple[tuple[int, int], ...]) -> str:
    return ",".join(f"{h}x{w}" for h, w in sizes)


SIZES = Flag(parse=_sizes, format=_sizes_text)


def _parser(**kwargs: Any) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="example", allow_abbrev=False)
    add_config_flags(parser, _Example, **{"flags": {"sizes": SIZES}, **kwargs})
    return parser


def _actions(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {option: action for action in parser._actions for option in action.option_strings}


def _help(parser: argparse.ArgumentParser) -> str:
    return " ".join(parser.format_help().split())


def test_each_kind_of_field_becomes_its_flag() -> None:
    parser = _parser()
    actions = _actions(parser)
    assert actions["--count"].type is int and actions["--ratio"].type is float and actions["--where"].type is Path
    assert actions["--name"].type is str and actions["--limit"].type is int  # X | None: as X
    assert actions["--color"].choices == ("red", "green") and actions["--color"].type is None
    assert isinstance(actions["--fast"], argparse.BooleanOptionalAction) and "--no-fast" in actions
    args = parser.parse_args(["--count", "7", "--ratio", "0.25", "--where", "a/b", "--limit", "9", "--color", "green",
                              "--fast", "--no-check", "--shape", "8,4", "--sizes", "1x2,3x4", "--extra", "a,b",
                              "--name", "y"])
    assert _Example(**flag_values(_Example, args)) == _Example(
        name="y", count=7, ratio=0.25, where=Path("a/b"), limit=9, color="green", fast=True, check=False, shape=(8, 4),
        sizes=((1, 2), (3, 4)), extra=("a", "b"))
    assert _Example(**flag_values(_Example, parser.parse_args([]))) == _Example()


def test_help_is_the_field_docstring_with_the_default() -> None:
    text = _help(_parser())
    assert "--count COUNT How many. (default: 3)" in text
    assert "A name, 100% made up. (default: x)" in text  # base-class fields, and % is not a format
    assert "--shape SHAPE Height and width. (default: 16,16)" in text  # tuples shown as they are typed
    assert "--sizes SIZES Frame sizes. (default: 4x5)" in text  # ... or by Flag.format
    assert "--limit LIMIT An optional limit. (default: None)" in text
    assert "(default" not in _help(_parser(show_defaults=False))
    defaults = _help(_parser(defaults=_Example(count=11, shape=(2, 3))))
    assert "How many. (default: 11)" in defaults and "Height and width. (default: 2,3)" in defaults


def test_suppress_leaves_absent_flags_out_so_they_layer_over_a_preset() -> None:
    preset = _Example(count=11, fast=True)
    parser = _parser(suppress=True, defaults=preset)
    assert flag_values(_Example, parser.parse_args([])) == {}
    assert flag_values(_Example, parser.parse_args(["--no-fast", "--shape", "1,2"])) == {"fast": False, "shape": (1, 2)}
    assert "How many. (default: 11)" in _help(parser)  # the help shows the preset's values


def test_flag_names_prefixes_exclusions_and_groups() -> None:
    parser = argparse.ArgumentParser(prog="example", allow_abbrev=False)
    add_config_flags(parser, _Example, prefix="ex-", exclude=("ratio", "where", "sizes"), group="example",
                     flags={"count": Flag(name="--n"), "check": Flag(negatable=False), "fast": Flag(negatable=False),
                            "extra": Flag(name="--extra-arg", repeat=True), "limit": Flag(help="{doc} ('off': none)")})
    actions = _actions(parser)
    assert "--ex-ratio" not in actions and "--ratio" not in actions and "--ex-sizes" not in actions
    assert actions["--n"].dest == "ex_count" and actions["--n"].metavar == "N"
    assert actions["--ex-shape"].dest == "ex_shape"
    assert "--no-ex-check" in actions and "--ex-check" not in actions  # one flag, flipping a True default
    assert "--ex-fast" in actions and "--no-ex-fast" not in actions
    assert [g.title for g in parser._action_groups if actions["--n"] in g._group_actions] == ["example"]
    assert "An optional limit. ('off': none)" in _help(parser)
    args = parser.parse_args(["--n", "4", "--no-ex-check", "--extra-arg", "a,b", "--extra-arg=--c"])
    values = flag_values(_Example, args, prefix="ex-")
    assert values["count"] == 4 and values["check"] is False and values["fast"] is False
    assert values["extra"] == ("a,b", "--c")  # one item per flag, as a tuple
    assert "ratio" not in values and flag_values(_Example, args) == {}


def test_a_parse_functions_config_error_is_argparses_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        _parser().parse_args(["--sizes", "4by5"])
    assert exited.value.code == 2
    assert "argument --sizes: expected HxW[,HxW...], got '4by5'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        _parser().parse_args(["--shape", "4,x"])
    assert "argument --shape: invalid comma-separated int value: '4,x'" in capsys.readouterr().err


def test_a_field_without_a_docstring_is_an_error() -> None:
    with pytest.raises(TypeError, match=r"_Undocumented\.bare has no docstring"):
        add_config_flags(argparse.ArgumentParser(), _Undocumented)
    parser = argparse.ArgumentParser()
    add_config_flags(parser, _Undocumented, flags={"bare": Flag(help="given here")})
    assert "given here" in _help(parser)
    with pytest.raises(TypeError, match=r"_Undocumented\.bare has no docstring"):
        add_config_flags(argparse.ArgumentParser(), _Undocumented, flags={"bare": Flag(help="{doc}!")})


def test_what_the_helper_cannot_map_is_an_error() -> None:
    with pytest.raises(TypeError, match=r"_Odd\.table: no flag for a field of type .*Flag\(parse=\.\.\.\)"):
        add_config_flags(argparse.ArgumentParser(), _Odd)
    with pytest.raises(TypeError, match=r"_Example has no field nope"):
        add_config_flags(argparse.ArgumentParser(), _Example, exclude=("nope",))
    with pytest.raises(TypeError, match="tuple"):  # nested tuples need a parse function
        add_config_flags(argparse.ArgumentParser(), _Example)


def test_a_field_without_a_default_is_a_required_flag() -> None:
    parser = argparse.ArgumentParser()
    add_config_flags(parser, _Required)
    assert _actions(parser)["--size"].required
    assert _Required(**flag_values(_Required, parser.parse_args(["--size", "2"]))) == _Required(2)


def test_field_docs_are_read_once_per_class() -> None:
    docs = field_docs(_Example)
    assert docs["count"] == "How many." and docs["name"] == "A name, 100% made up."
    assert field_docs(_Example) is docs
    assert "bare" not in field_docs(_Undocumented)
