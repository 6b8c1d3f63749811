"""The house's size rules, kept by a test: small modules with one job, no class that does four, and a request
path that never asks which predictor it holds (every predictor implements `service.core.predictor.Predictor`)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parents[2] / "service" / "core"
MAX_MODULE_LINES = 350
MAX_CLASS_LINES = 200
PREDICTORS = {"DirectPredictor", "MicroBatcher", "RemoteModel"}


def modules() -> list[Path]:
    return sorted(CORE.rglob("*.py"))


@pytest.mark.parametrize("module", modules(), ids=lambda p: str(p.relative_to(CORE)))
def test_no_core_module_is_over_its_size(module: Path) -> None:
    lines = len(module.read_text().splitlines())
    assert lines <= MAX_MODULE_LINES, f"{module} has {lines} lines: split it by job"


@pytest.mark.parametrize("module", modules(), ids=lambda p: str(p.relative_to(CORE)))
def test_no_core_class_is_over_its_size(module: Path) -> None:
    for node in ast.walk(ast.parse(module.read_text())):
        if isinstance(node, ast.ClassDef):
            lines = node.end_lineno - node.lineno + 1  # type: ignore[operator]
            assert lines <= MAX_CLASS_LINES, f"{module}: class {node.name} has {lines} lines"


@pytest.mark.parametrize("module", modules(), ids=lambda p: str(p.relative_to(CORE)))
def test_nothing_asks_which_predictor_it_holds(module: Path) -> None:
    for node in ast.walk(ast.parse(module.read_text())):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "isinstance":
            named = {n.id for n in ast.walk(node.args[1]) if isinstance(n, ast.Name)}
            assert not named & PREDICTORS, f"{module}:{node.lineno} isinstance on a predictor type"
