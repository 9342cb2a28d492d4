"""No package imports a layer above it.

Layers, lowest first: data_tools < pretrain < evaluate < {finetune, retrieval} < clipline.
finetune and retrieval share a layer and must not import each other. Every
import counts: module level, inside a function, and `importlib` string imports
(a string naming one of our modules, e.g. in a table of commands).
benchmarks/ and tests/ sit outside the layers, and so do the packages'
`__main__` modules: `python -m PACKAGE` forwards to the command layer
(clipline.commands), which owns every command line.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYER = {"data_tools": 0, "pretrain": 1, "evaluate": 2, "finetune": 3, "retrieval": 3, "clipline": 4}
# Known today; each turns the test red (strict xfail) once fixed: then remove it from here.
KNOWN_VIOLATIONS: set[str] = set()


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_modules() -> list[Path]:
    """Every module of the layered packages, less the `__main__` forwarders to clipline.commands."""
    return sorted(p for package in LAYER if (ROOT / package).is_dir() for p in (ROOT / package).rglob("*.py")
                  if p.name != "__main__.py")


def is_our_module(dotted: str) -> bool:
    """Whether `dotted` names a module of one of our packages (`retrieval.errors`; not a bare `clipline`)."""
    parts = dotted.split(".")
    if len(parts) < 2 or parts[0] not in LAYER or not all(part.isidentifier() for part in parts):
        return False
    base = ROOT.joinpath(*parts)
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def imported_modules(source: str, module: str, *, is_package: bool = False) -> list[tuple[int, str]]:
    """(line, dotted module) for every import in `source` of `module`, string imports included."""
    package = module.split(".") if is_package else module.split(".")[:-1]
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            found.append((node.lineno, ".".join(base + ([node.module] if node.module else []))))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and is_our_module(node.value):
            found.append((node.lineno, node.value))  # importlib.import_module("...") or a table of them
    return sorted(found)


def layer_violations(source: str, module: str, *, is_package: bool = False) -> list[str]:
    """One line per import of a layer above `module`'s package (or of its sibling layer)."""
    own = module.split(".")[0]
    bad = []
    for line, target in imported_modules(source, module, is_package=is_package):
        top = target.split(".")[0]
        if top in LAYER and top != own and LAYER[top] >= LAYER[own]:
            where = "above" if LAYER[top] > LAYER[own] else "beside"
            bad.append(f"{module} (line {line}) imports {target}: {top} is {where} {own}")
    return bad


def _param(path: Path) -> object:
    name = module_name(path)
    marks = [pytest.mark.xfail(strict=True, reason="known layering violation")] if name in KNOWN_VIOLATIONS else []
    return pytest.param(path, id=name, marks=marks)


@pytest.mark.parametrize("path", [_param(p) for p in package_modules()])
def test_module_imports_only_layers_below(path: Path) -> None:
    bad = layer_violations(path.read_text(encoding="utf-8"), module_name(path), is_package=path.name == "__init__.py")
    assert not bad, "\n".join(bad)


def test_every_known_violation_names_a_module_that_exists() -> None:
    modules = {module_name(p) for p in package_modules()}
    assert KNOWN_VIOLATIONS <= modules, f"moved or removed: drop {sorted(KNOWN_VIOLATIONS - modules)} from KNOWN_VIOLATIONS"


def test_the_check_sees_function_level_relative_and_string_imports() -> None:
    source = (
        "import importlib\n"
        "from . import errors\n"
        "from .models import build\n"
        "def wire():\n"
        "    from retrieval.retriever import Retriever\n"
        "    return importlib.import_module('finetune.methods.run')\n"
        "COMMANDS = {'serve': 'retrieval.errors', 'not a module': 'retrieval.no_such_module'}\n"
    )
    found = sorted(target for _, target in imported_modules(source, "pretrain.wiring"))
    assert found == ["finetune.methods.run", "importlib", "pretrain", "pretrain.models", "retrieval.errors",
                     "retrieval.retriever"]
    bad = layer_violations(source, "pretrain.wiring")
    assert [line.split(" imports ")[1].split(":")[0] for line in bad] == [
        "retrieval.retriever", "finetune.methods.run", "retrieval.errors"]
    assert "line 5" in bad[0]
    assert layer_violations("import retrieval.errors\n", "finetune.x") == [
        "finetune.x (line 1) imports retrieval.errors: retrieval is beside finetune"]
    assert layer_violations("from pretrain import models\n", "retrieval.embed") == []
