"""The packages' dependency direction, read statically from the source (no imports run).

    pvae core  <-  training  <-  export
    training's flow  <-  its paper study (pvae.training.study): the flow never imports the study
    serving    reads bundles only: no training, export or client imports, and no torch
    clients    speak only the contract: the pvae.v1 / pvae.inference stubs and the core's errors and CLI plumbing
    bench      may import anything; nothing imports bench

Every ``import`` and ``from ... import`` of every module is collected with ``ast``, wherever it
stands (module level, inside a function, under ``TYPE_CHECKING``), relative imports resolved, and
``importlib.import_module("...")`` calls with a literal name counted too.
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: Source folders and the package each maps to (pyproject's package-dir).
PACKAGES = {
    "pvae": ROOT / "pvae",
    "pvae.training": ROOT / "training",
    "pvae.export": ROOT / "export",
    "pvae.serving": ROOT / "serving",
    "pvae.clients": ROOT / "clients",
    "pvae.bench": ROOT / "bench",
    "pvae.v1": ROOT / "protos" / "pvae" / "v1",
    "pvae.inference": ROOT / "protos" / "inference",
}
#: Subpackages; everything else under ``pvae`` is the core (bundle, errors, cli, paths, ...).
SUBPACKAGES = tuple(name for name in PACKAGES if name != "pvae")
CONTRACT = ("pvae.v1", "pvae.inference")
#: The core modules a client may use: the package itself (its version and error names), the error
#: tree and the console-script plumbing. Not the bundle reader: a client knows the wire, not the model.
CLIENT_CORE = ("pvae", "pvae.errors", "pvae.cli")
#: The paper study inside training: it may import the training flow, the flow never imports it.
STUDY = "pvae.training.study"


@dataclass(frozen=True)
class Import:
    module: str
    """The importing module, e.g. ``pvae.serving.source``."""
    target: str
    """The imported module, absolute, e.g. ``pvae.export.exporter`` (for ``from a import b``: ``a``)."""
    names: tuple[str, ...]
    """For ``from a import b, c``: ``("b", "c")``; empty for ``import a``."""
    line: int

    def __str__(self) -> str:
        return f"{self.module}:{self.line} imports {self.target}"


def _module_name(package: str, folder: Path, path: Path) -> str:
    parts = list(path.relative_to(folder).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join([package, *parts])


def _resolve(module: str, is_package: bool, level: int, target: str | None) -> str:
    """The absolute name of ``from <level dots><target> import ...`` written in ``module``."""
    if level == 0:
        return target or ""
    base = module.split(".")
    base = base if is_package else base[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join([*base, *([target] if target else [])])


def parse_imports(code: str, module: str, is_package: bool = False, filename: str = "<string>") -> Iterator[Import]:
    """Every import in ``code``, the source of the module ``module``."""
    for node in ast.walk(ast.parse(code, filename=filename)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(module, alias.name, (), node.lineno)
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(module, is_package, node.level, node.module)
            yield Import(module, target, tuple(alias.name for alias in node.names), node.lineno)
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
              and node.func.attr == "import_module" and node.args
              and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            yield Import(module, node.args[0].value, (), node.lineno)


def source_files() -> Iterator[tuple[str, Path]]:
    """(module name, path) of every module of the source folders."""
    for package, folder in PACKAGES.items():
        for path in sorted(folder.rglob("*.py")):
            if package == "pvae" and path.parent != folder:
                continue  # pvae/models/ holds data; the subpackages have folders of their own
            yield _module_name(package, folder, path), path


MODULES = frozenset(module for module, _ in source_files())


def all_imports() -> list[Import]:
    """Every import of every module of the source folders."""
    found = []
    for module, path in source_files():
        found.extend(parse_imports(path.read_text(encoding="utf-8"), module, path.name == "__init__.py", str(path)))
    return found


def _within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def package_of(module: str) -> str:
    """The subpackage a module belongs to, or ``pvae`` for the core."""
    return next((p for p in SUBPACKAGES if _within(module, p)), "pvae")


def _targets(imp: Import) -> list[str]:
    """The modules an import brings in: ``from pvae import bench`` is pvae.bench too, not only pvae."""
    submodules = [f"{imp.target}.{name}" for name in imp.names]
    return [imp.target, *(name for name in submodules if name in MODULES)]


def _client_may_import(target: str) -> bool:
    return (not _within(target, "pvae") or target in CLIENT_CORE
            or any(_within(target, allowed) for allowed in ("pvae.clients", *CONTRACT)))


def _any_of(*packages: str) -> Callable[[str], bool]:
    return lambda target: any(_within(target, package) for package in packages)


#: Each rule: the packages whose imports it constrains (None: every package but bench), and a
#: predicate on an imported module that breaks it.
RULES: dict[str, tuple[tuple[str, ...] | None, Callable[[str], bool]]] = {
    "nothing imports bench": (None, _any_of("pvae.bench")),
    "clients speak only the contract": (("pvae.clients",), lambda target: not _client_may_import(target)),
    "serving imports neither training nor export (nor clients, nor torch)": (
        ("pvae.serving",), _any_of("pvae.training", "pvae.export", "pvae.clients", "torch")),
    "the core imports no subpackage": (("pvae",), _any_of(*SUBPACKAGES)),
    "training does not import export, serving or clients": (
        ("pvae.training",), _any_of("pvae.export", "pvae.serving", "pvae.clients")),
    "export does not import serving or clients": (("pvae.export",), _any_of("pvae.serving", "pvae.clients")),
    "training's flow does not import its paper study": (("pvae.training",), _any_of(STUDY)),
    "the stubs import nothing of the product": (
        CONTRACT, lambda target: _within(target, "pvae") and not _any_of(*CONTRACT)(target)),
}
#: Parts of a source package that a rule leaves out: the study's own modules import each other.
EXEMPT: dict[str, tuple[str, ...]] = {"training's flow does not import its paper study": (STUDY,)}


def violations(rule: str, imports: list[Import]) -> list[str]:
    """The imports that break ``rule``."""
    sources, breaks = RULES[rule]
    offenders = []
    for imp in imports:
        package = package_of(imp.module)
        if package == "pvae.bench" or (sources is not None and package not in sources):
            continue
        if any(_within(imp.module, part) for part in EXEMPT.get(rule, ())):
            continue
        offenders += [f"{imp} ({target})" for target in _targets(imp) if breaks(target)]
    return offenders


IMPORTS = all_imports()


def test_the_scan_sees_the_code() -> None:
    """A scan that finds nothing proves nothing: known imports must be among the ones found."""
    pairs = {(imp.module, imp.target) for imp in IMPORTS}
    assert ("pvae.serving.server", "pvae.serving.config") in pairs
    assert ("pvae.clients.client", "pvae.clients.channel") in pairs  # a relative import, resolved
    assert ("pvae.export.exporter", "pvae.training.checkpoint") in pairs
    assert ("pvae.training.study.report", "pvae.training.train") in pairs  # the study uses the flow
    assert any(package_of(imp.module) == "pvae.bench" and _within(imp.target, "pvae.serving") for imp in IMPORTS)
    assert {package_of(imp.module) for imp in IMPORTS} == set(PACKAGES)


@pytest.mark.parametrize("rule", list(RULES))
def test_the_tree_keeps_the_rule(rule: str) -> None:
    offenders = violations(rule, IMPORTS)
    assert not offenders, f"{rule}:\n" + "\n".join(offenders)


#: One module breaking each rule (and, after it, code that keeps it).
BREAKS = {
    "nothing imports bench": ("pvae.training.x", "from .. import bench\n", "from pvae import errors\n"),
    "clients speak only the contract": ("pvae.clients.x", "from pvae.bundle import load_bundle\n",
                                        "from pvae.v1 import pvae_pb2\nfrom pvae.errors import ConfigError\n"),
    "serving imports neither training nor export (nor clients, nor torch)": (
        "pvae.serving.x", "def f():\n    from pvae.export.exporter import export_bundle\n",
        "from pvae.bundle import load_bundle\n"),
    "the core imports no subpackage": ("pvae.x", "import importlib\nimportlib.import_module('pvae.serving')\n",
                                       "from pvae.errors import PVAEError\n"),
    "training does not import export, serving or clients": ("pvae.training.x", "import pvae.export.cli\n",
                                                            "from pvae.training import model\n"),
    "export does not import serving or clients": ("pvae.export.x", "from pvae.serving import source\n",
                                                  "from pvae.training.checkpoint import load_checkpoint\n"),
    "training's flow does not import its paper study": (
        "pvae.training.x", "def f():\n    from pvae.training.study.geometry import paired_comparison\n",
        "from pvae.training.evaluate import evaluate_model\n"),
    "the stubs import nothing of the product": ("pvae.v1.x", "from pvae.clients import Client\n",
                                                "from pvae.v1 import pvae_pb2\n"),
}


@pytest.mark.parametrize("rule", list(RULES))
def test_the_rule_bites(rule: str) -> None:
    module, breaking, keeping = BREAKS[rule]
    assert violations(rule, list(parse_imports(breaking, module)))
    assert not violations(rule, list(parse_imports(keeping, module)))


def test_the_study_may_import_the_flow_and_itself() -> None:
    """The study rule is one-way: study modules import the training flow and each other freely."""
    code = "from pvae.training.train import Trainer\nfrom pvae.training.study.verdict import compute_verdicts\n"
    rule = "training's flow does not import its paper study"
    assert not violations(rule, list(parse_imports(code, "pvae.training.study.report")))
    assert violations(rule, list(parse_imports("from pvae.training import study\n", "pvae.training.evaluate")))
