"""Imports point one way: domain <- projections <- adapters <- app."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
THIRD_PARTY_ALLOWED = {"domain": {"eventsourcing"}}
FORBIDDEN = {
    "domain": {"projections", "adapters", "app"},
    "projections": {"adapters", "app", "domain.application"},
    "adapters": {"app"},
}


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_layer_imports_point_inward(layer: str) -> None:
    for path in (ROOT / layer).rglob("*.py"):
        for module in imported_modules(path):
            for banned in FORBIDDEN[layer]:
                inside = module == banned or module.startswith(banned + ".")
                assert not inside, f"{path.relative_to(ROOT)} imports {module}"


def test_domain_uses_only_the_standard_library_and_eventsourcing() -> None:
    for path in (ROOT / "domain").rglob("*.py"):
        for module in imported_modules(path):
            top = module.split(".")[0]
            allowed = top in sys.stdlib_module_names or top in {"domain", "__future__"}
            assert allowed or top in THIRD_PARTY_ALLOWED["domain"], (
                f"{path.relative_to(ROOT)} imports {module}"
            )


def test_nothing_imports_app() -> None:
    for layer in ("domain", "projections", "adapters", "bench"):
        for path in (ROOT / layer).rglob("*.py"):
            assert "app" not in imported_modules(path), path
