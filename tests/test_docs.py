"""Every command in the docs' shell blocks is checked against the real CLI, so the docs cannot drift.

The README's Deploy example once read ``pvae-client --server X stream video.mp4``, which the CLI rejects.
Now every Markdown file of the repository (README.md, the folders' README.md files, docs/**) is read,
every fenced block tagged bash, sh, shell, console or zsh, or not tagged at all, is scanned, and every
line that runs a console script of this package (``pvae-*``, or ``python -m`` / ``torchrun -m`` with the
module of one) becomes a case, wherever it is: nothing here lists the commands, so the docs may be
rewritten freely.

- A concrete command is parsed by the command's own argparse parser: its ``main`` runs with
  ``ArgumentParser.parse_args`` intercepted right after parsing, so no work is done. A rejected
  command fails with argparse's message.
- A synopsis (a line with ``[optional]`` parts, placeholders such as ``CKPT``) cannot be parsed as
  is: each flag it names must be a flag of that command (or subcommand), each subcommand must exist,
  and ``a|b|c`` values must be among the flag's choices.
- ``make TARGET`` lines: the target must exist in the Makefile.
- Relative links and images must name existing files, and a ``#fragment`` into a Markdown file one
  of its headings (GitHub's anchors).
- The cheap commands run for real: ``pvae-client`` (info, encode, stream) against an in-process
  server of the tiny test model (``$PVAE_SERVER``), and ``pvae-export`` of the tiny checkpoint placed at
  the path the docs name, in a scratch directory holding the files the commands read. Commands that
  need what a test machine lacks (a camera, a browser view, a remote server, TLS files, a GPU) or
  long runs (training, serving, benchmarks, reports) are parsed only.
"""

from __future__ import annotations

import argparse
import importlib
import itertools
import re
import shlex
import shutil
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pvae.bundle import Bundle

ROOT = Path(__file__).resolve().parents[1]
#: Fenced-block tags that hold shell commands ("" : an untagged block).
SHELL_TAGS = frozenset({"", "bash", "sh", "shell", "console", "zsh"})
#: Markdown that is not ours (vendored) or not docs.
SKIP_DIRS = frozenset({".venv", ".git", "runs", "node_modules", "inference"})
FENCE = re.compile(r"^(\s*)(```+|~~~+)\s*([\w+-]*)")
#: Console scripts this distribution installs: name -> "module:function".
SCRIPTS = {ep.name: ep.value for ep in entry_points(group="console_scripts") if ep.value.startswith("pvae.")}
MODULES = {value.split(":")[0]: name for name, value in SCRIPTS.items()}


@dataclass(frozen=True)
class DocCommand:
    """One command line found in a doc."""

    doc: str
    line: int
    script: str
    """Console script name (``make`` for make lines)."""
    argv: tuple[str, ...]
    synopsis: bool
    text: str

    @property
    def id(self) -> str:
        return f"{self.doc}:{self.line}:{self.script}"


def markdown_files() -> list[Path]:
    files = [p for p in ROOT.rglob("*.md") if not SKIP_DIRS & set(p.relative_to(ROOT).parts[:-1])]
    return sorted(files)


def shell_lines(text: str) -> Iterator[tuple[int, str]]:
    """(line number, logical line) of every shell block line; backslash continuations joined."""
    fence: str | None = None
    shell = False
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), 1):
        match = FENCE.match(raw)
        if fence is None:
            if match:
                fence, shell = match.group(2)[:3], match.group(3).lower() in SHELL_TAGS
            continue
        if raw.strip().startswith(fence):
            fence = None
            continue
        if not shell:
            continue
        if not pending:
            start = number
        stripped = raw.rstrip()
        if stripped.endswith("\\"):
            pending.append(stripped[:-1])
            continue
        pending.append(stripped)
        yield start, " ".join(part.strip() for part in pending)
        pending = []


def _strip_comment(line: str) -> str:
    """The line without a trailing ``# comment`` (a ``#`` after whitespace, outside quotes)."""
    quote = None
    for i, ch in enumerate(line):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip()
    return line


def _segments(line: str) -> Iterator[list[str]]:
    """Simple commands of a shell line (split at ``;``, ``&&``, ``||``, ``|`` and ``&``)."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|")
    lexer.whitespace_split = True
    lexer.commenters = ""
    segment: list[str] = []
    for token in lexer:
        if token and set(token) <= set(";&|"):
            if segment:
                yield segment
            segment = []
        else:
            segment.append(token)
    if segment:
        yield segment


def _command(tokens: list[str]) -> tuple[str, list[str]] | None:
    """(script, argv) when ``tokens`` run one of our console scripts (or make); else None."""
    while tokens and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", tokens[0]):  # VAR=value prefixes
        tokens = tokens[1:]
    if tokens and tokens[0] == "$":
        tokens = tokens[1:]
    if not tokens:
        return None
    if tokens[0] in SCRIPTS or tokens[0] == "make":
        return tokens[0], tokens[1:]
    if "-m" in tokens[:-1]:  # python -m MODULE / torchrun ... -m MODULE
        index = tokens.index("-m")
        module = tokens[index + 1]
        if module in MODULES:
            return MODULES[module], tokens[index + 2:]
    return None


def doc_commands() -> list[DocCommand]:
    found = []
    for path in markdown_files():
        doc = str(path.relative_to(ROOT))
        for number, line in shell_lines(path.read_text(encoding="utf-8")):
            body = _strip_comment(line.strip().removeprefix("$ "))
            if not body:
                continue
            if "[" in body:  # a synopsis: optional parts and placeholders, split on whitespace only
                command = _command(body.split())
                if command is not None:
                    found.append(DocCommand(doc, number, command[0], tuple(command[1]), True, body))
                continue
            try:
                segments = list(_segments(body))
            except ValueError:  # unbalanced quotes: not a command line
                continue
            for tokens in segments:
                command = _command(tokens)
                if command is not None:
                    found.append(DocCommand(doc, number, command[0], tuple(command[1]), False, body))
    return found


COMMANDS = doc_commands()
CLI_COMMANDS = [c for c in COMMANDS if c.script != "make"]
MAKE_COMMANDS = [c for c in COMMANDS if c.script == "make"]


# ----------------------------------------------------------------------------- the real parsers


class _Parsed(Exception):  # a control-flow signal, not an error
    def __init__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace | None) -> None:
        super().__init__(parser.prog)
        self.parser = parser
        self.namespace = namespace


def _main(script: str) -> Callable[[Sequence[str] | None], Any]:
    module, function = SCRIPTS[script].split(":")
    return getattr(importlib.import_module(module), function)


def intercept(script: str, argv: Sequence[str], monkeypatch: pytest.MonkeyPatch,
              parse: bool) -> tuple[argparse.ArgumentParser, argparse.Namespace | None]:
    """Run ``script``'s main on ``argv`` until its parser's ``parse_args``: return the parser and, with
    ``parse``, the namespace (argparse's SystemExit(2) on a rejected command), without doing any work."""
    real = argparse.ArgumentParser.parse_args

    def parse_args(self: argparse.ArgumentParser, args: Sequence[str] | None = None,
                   namespace: argparse.Namespace | None = None) -> Any:
        if self.prog.split()[0] != script:  # a helper parser (e.g. pvae-train's preset pre-parser)
            return real(self, args, namespace)
        raise _Parsed(self, real(self, args, namespace) if parse else None)

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_args)
    try:
        _main(script)(list(argv))
    except _Parsed as parsed:
        return parsed.parser, parsed.namespace
    finally:
        monkeypatch.undo()
    raise AssertionError(f"{script} returned without parsing its arguments")


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def synopsis_problems(parser: argparse.ArgumentParser, argv: Sequence[str]) -> list[str]:
    """What in a synopsis line the parser does not know: flags, subcommands, choices."""
    problems = []
    tokens = [t.strip("[]") for t in argv]
    tokens = [t for t in tokens if t and t != "..."]
    commands = _subparsers(parser)
    if commands:
        first = next((t for t in tokens if not t.startswith("-")), None)
        if first not in commands:
            return [f"no subcommand {first!r} (has {', '.join(commands)})"]
        parser = commands[first]
        tokens.remove(first)
    options = {s: a for a in parser._actions for s in a.option_strings}
    for i, token in enumerate(tokens):
        if not token.startswith("-") or re.fullmatch(r"-\d+(\.\d+)?", token):
            continue
        flag = token.split("=")[0]
        action = options.get(flag)
        if action is None:
            problems.append(f"unknown flag {flag}")
            continue
        value = tokens[i + 1] if i + 1 < len(tokens) else ""
        if action.choices is not None and "|" in value:
            problems += [f"{flag}: {v!r} is not one of {list(action.choices)}" for v in value.split("|")
                         if v not in action.choices]
    return problems


# ----------------------------------------------------------------------------- parse every command


def test_the_docs_hold_commands_of_every_main_tool() -> None:
    scripts = {c.script for c in COMMANDS}
    assert {"pvae-train", "pvae-export", "pvae-serve", "pvae-client", "pvae-reliability", "make"} <= scripts, scripts
    assert "README.md" in {c.doc for c in COMMANDS}


@pytest.mark.parametrize("command", CLI_COMMANDS, ids=[c.id for c in CLI_COMMANDS])
def test_every_doc_command_is_accepted_by_its_cli(command: DocCommand, monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    if command.synopsis:
        parser, _ = intercept(command.script, [], monkeypatch, parse=False) if command.script != "pvae-client" \
            else intercept(command.script, ["info"], monkeypatch, parse=False)
        problems = synopsis_problems(parser, command.argv)
        assert not problems, f"{command.id}: {command.text}\n{problems}"
        return
    try:
        intercept(command.script, command.argv, monkeypatch, parse=True)
    except SystemExit as exited:
        pytest.fail(f"{command.id}: the CLI rejects `{command.text}` (exit {exited.code}): "
                    f"{capsys.readouterr().err.strip()}")


@pytest.mark.parametrize("command", MAKE_COMMANDS, ids=[c.id for c in MAKE_COMMANDS])
def test_every_make_target_in_the_docs_exists(command: DocCommand) -> None:
    targets = set(re.findall(r"^([A-Za-z0-9_.-]+)\s*:", (ROOT / "Makefile").read_text(), re.MULTILINE))
    wanted = [t for t in command.argv if not t.startswith("-") and "=" not in t]
    assert set(wanted) <= targets, f"{command.id}: no Makefile target {sorted(set(wanted) - targets)}"


def test_the_checker_rejects_what_the_cli_rejects(monkeypatch: pytest.MonkeyPatch) -> None:
    """The Deploy example that started this (connection flags go after the subcommand), and a made-up flag."""
    with pytest.raises(SystemExit):
        intercept("pvae-client", ["--server", "X", "stream", "video.mp4"], monkeypatch, parse=True)
    with pytest.raises(SystemExit):
        intercept("pvae-serve", ["--no-such-flag"], monkeypatch, parse=True)
    parser, _ = intercept("pvae-export", [], monkeypatch, parse=False)
    assert synopsis_problems(parser, ["CKPT", "[--opset", "N]", "[--no-such-flag]"]) == ["unknown flag --no-such-flag"]
    client, _ = intercept("pvae-client", ["info"], monkeypatch, parse=False)
    assert synopsis_problems(client, ["stream", "[--policy", "auto|block|newest]"]) == [
        "--policy: 'newest' is not one of ['auto', 'block', 'drop_oldest']"]
    lines = list(shell_lines("```bash\npvae-serve --port 1 \\\n   --metrics-port off   # comment\n```\n"
                             "```python\npvae-serve --nope\n```\n"))
    assert lines == [(2, "pvae-serve --port 1 --metrics-port off   # comment")]


# ----------------------------------------------------------------------------- relative links

#: An inline link or image ``[text](target "title")``, and a reference definition ``[label]: target``.
INLINE_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+[\"'][^)]*)?\)")
REFERENCE_LINK = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?([^\s>]+)>?")
CODE_SPAN = re.compile(r"(`+).*?\1")


def heading_anchors(text: str) -> set[str]:
    """The anchors GitHub gives a Markdown file's headings: lower case, punctuation dropped, spaces to
    hyphens, a repeated heading suffixed -1, -2, ..."""
    anchors: set[str] = set()
    seen: dict[str, int] = {}
    fence: str | None = None
    for raw in text.splitlines():
        match = FENCE.match(raw)
        if match and (fence is None or raw.strip().startswith(fence)):
            fence = match.group(2)[:3] if fence is None else None
            continue
        heading = re.match(r"^\s{0,3}#{1,6}\s+(.*?)\s*#*\s*$", raw)
        if fence is None and heading:
            slug = re.sub(r"[^\w\- ]", "", CODE_SPAN.sub(lambda m: m.group(0).strip("`"), heading.group(1)).lower())
            slug = slug.replace(" ", "-")
            anchors.add(f"{slug}-{seen[slug]}" if slug in seen else slug)
            seen[slug] = seen.get(slug, 0) + 1
    return anchors


def relative_links(text: str) -> Iterator[tuple[int, str]]:
    """(line number, target) of every link outside code that is not a URL (``scheme:``) or a mail address."""
    fence: str | None = None
    for number, raw in enumerate(text.splitlines(), 1):
        match = FENCE.match(raw)
        if match and (fence is None or raw.strip().startswith(fence)):
            fence = match.group(2)[:3] if fence is None else None
            continue
        if fence is not None:
            continue
        line = CODE_SPAN.sub("", raw)
        targets = [m.group(1) for m in INLINE_LINK.finditer(line)]
        reference = REFERENCE_LINK.match(line)
        if reference:
            targets.append(reference.group(1))
        for target in targets:
            if not re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:", target):
                yield number, target


def test_every_relative_link_in_the_docs_points_to_an_existing_file() -> None:
    """A moved or renamed doc cannot leave a dead link behind: every relative link (and image) of every
    Markdown file names an existing path, and a ``#fragment`` into a Markdown file names one of its headings."""
    problems = []
    checked = 0
    for path in markdown_files():
        doc = path.relative_to(ROOT)
        for number, target in relative_links(path.read_text(encoding="utf-8")):
            checked += 1
            file, _, fragment = target.partition("#")
            resolved = (path.parent / file).resolve() if file else path
            if not resolved.exists():
                problems.append(f"{doc}:{number}: {target}: no such file")
            elif fragment and resolved.suffix == ".md" \
                    and fragment not in heading_anchors(resolved.read_text(encoding="utf-8")):
                problems.append(f"{doc}:{number}: {target}: no heading with that anchor")
    assert checked > 0
    assert not problems, "\n".join(problems)


def test_the_link_checker_finds_links_and_anchors() -> None:
    text = ("# Top `pvae-eval` (here)\n## Top `pvae-eval` (here)\n[a](docs/x.md#y) ![b](img.png) [c](https://e.org)\n"
            "`[d](code.md)`\n```\n[e](fenced.md)\n```\n[f]: ref.md\n")
    assert list(relative_links(text)) == [(3, "docs/x.md#y"), (3, "img.png"), (8, "ref.md")]
    assert heading_anchors(text) == {"top-pvae-eval-here", "top-pvae-eval-here-1"}


# ----------------------------------------------------------------------------- run the cheap ones


def _runnable(command: DocCommand) -> bool:
    """A concrete command this test machine can run in seconds against the tiny model."""
    argv = command.argv
    if command.synopsis or any(a.startswith("/") for a in argv):  # absolute paths: outside the scratch directory
        return False
    if command.script == "pvae-client":
        needs = ("--server", "--tls", "--tls-ca", "--ca-cert", "--tls-cert", "--token", "--token-file", "--view")
        camera = any(a == "--source" and (b.isdigit() or b.startswith(("/dev/", "rtsp:", "http")))
                     for a, b in itertools.pairwise(argv))
        return not any(flag in argv for flag in needs) and not camera
    if command.script == "pvae-export":  # the plain form, and unverified ones (a verified export takes ~10 s)
        return len(argv) == 1 or "--no-verify" in argv
    return False


def _unique(commands: Sequence[DocCommand]) -> list[DocCommand]:
    """The first of each (script, argv): a command quoted in two docs runs once."""
    seen: set[tuple[str, tuple[str, ...]]] = set()
    unique = []
    for command in commands:
        if (command.script, command.argv) not in seen:
            seen.add((command.script, command.argv))
            unique.append(command)
    return unique


RUNNABLE = _unique([c for c in CLI_COMMANDS if _runnable(c)])
#: Files a runnable command may read, made in the scratch directory (by name as the docs spell them).
PHOTO = ("photo.jpg", "frame.jpg", "image.png")
VIDEO = ("video.mp4",)


@pytest.fixture(scope="module")
def docs_server(tiny_bundle: Bundle) -> Iterator[str]:
    from pvae.serving.config import ServeConfig
    from pvae.serving.inprocess import InProcessServer

    config = ServeConfig(port=0, metrics_port=None, device="cpu", warmup_sizes=(), max_batch_delay_s=0.001)
    with InProcessServer(config, bundle=tiny_bundle, auth_tokens=()) as server:
        yield server.address


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory, tiny_checkpoint: Path) -> Path:
    """A directory holding what the docs' commands read: the tiny checkpoint wherever a doc puts a
    checkpoint, a photograph, a short video."""
    import cv2
    from skimage import data

    root = tmp_path_factory.mktemp("docs")
    checkpoints = {a for c in RUNNABLE for a in c.argv if a.endswith(".pt")}
    for name in checkpoints:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(tiny_checkpoint, root / name)
    photo = data.camera()[:160, :224]
    for name in PHOTO:
        cv2.imwrite(str(root / name), photo)
    for name in VIDEO:
        writer = cv2.VideoWriter(str(root / name), cv2.VideoWriter.fourcc(*"mp4v"), 10.0, (64, 48))
        for i in range(6):
            writer.write(cv2.cvtColor(np.roll(photo[:48, :64], 4 * i, axis=1), cv2.COLOR_GRAY2BGR))
        writer.release()
    return root


def test_some_doc_commands_run() -> None:
    assert {c.script for c in RUNNABLE} >= {"pvae-client", "pvae-export"}, [c.id for c in RUNNABLE]


@pytest.mark.parametrize("command", RUNNABLE, ids=[c.id for c in RUNNABLE])
def test_cheap_doc_commands_run_against_the_tiny_model(command: DocCommand, docs_server: str, scratch: Path,
                                                       monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(scratch)
    monkeypatch.setenv("PVAE_SERVER", docs_server)
    for output in ("-o", "--out"):  # a re-run (the same command in two docs) replaces, never collides
        if command.script == "pvae-export" and output in command.argv:
            shutil.rmtree(scratch / command.argv[command.argv.index(output) + 1], ignore_errors=True)
    code = _main(command.script)(list(command.argv))
    captured = capsys.readouterr()
    assert code in (0, None), f"{command.id}: `{command.text}` exited {code}: {captured.err.strip()[-800:]}"
