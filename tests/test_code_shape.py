"""The package layout is the architecture: imports point one way (README: How the code is laid out)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import ROOT

PACKAGE = ROOT / "mastosync"
# What each package must never import: nothing below the commands reaches up to them; the
# engine never draws (the display reads its counters); the Mastodon rules and the stores
# know nothing of the engine.
FORBIDDEN = {
    "engine": ("mastosync.commands", "mastosync.display"),
    "mastodon": ("mastosync.commands", "mastosync.engine", "mastosync.display"),
    "storage": ("mastosync.commands", "mastosync.engine", "mastosync.display"),
    "display": ("mastosync.commands",),
}


def imports_of(package: str) -> list[tuple[str, str]]:
    found = []
    for path in sorted((PACKAGE / package).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                found.append((str(path.relative_to(ROOT)), node.module))
            elif isinstance(node, ast.Import):
                found.extend((str(path.relative_to(ROOT)), alias.name) for alias in node.names)
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_imports_point_one_way(package: str) -> None:
    found = imports_of(package)
    assert found, f"no imports read from mastosync/{package}"
    wrong = [(path, module) for path, module in found
             if any(module == f or module.startswith(f + ".") for f in FORBIDDEN[package])]
    assert not wrong, wrong


def callbacks_assigned(package: Path) -> list[str]:
    """`x.on_something = ...` or `x.attr = lambda ...` on another object than self."""
    found = []
    for path in sorted(package.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Assign):
                continue
            targets = [t for target in node.targets
                       for t in (target.elts if isinstance(target, ast.Tuple) else [target])]
            values = node.value.elts if isinstance(node.value, ast.Tuple) else [node.value] * len(targets)
            for target, value in zip(targets, values, strict=False):
                if not isinstance(target, ast.Attribute) or (isinstance(target.value, ast.Name)
                                                             and target.value.id == "self"):
                    continue
                if target.attr.startswith("on_") or isinstance(value, ast.Lambda):
                    found.append(f"{path.relative_to(package.parent)}:{node.lineno} {target.attr}")
    return found


def test_no_part_is_wired_by_assigning_callbacks() -> None:
    """Parts get their collaborators (events above all) when they are made, not as
    callbacks assigned to their attributes afterwards."""
    assert not (assigned := callbacks_assigned(PACKAGE)), assigned
