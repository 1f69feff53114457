"""The package layout is the architecture: imports point one way (README: How the code is laid out)."""

from __future__ import annotations

import ast

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


def test_no_part_is_wired_by_assigning_callbacks() -> None:
    """Parts get their collaborators (events above all) when they are made, not as
    `x.on_something = ...` afterwards."""
    assigned = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Assign):
                for target in node.targets:
                    if (isinstance(target, ast.Attribute) and target.attr.startswith("on_")
                            and not (isinstance(target.value, ast.Name) and target.value.id == "self")):
                        assigned.append(f"{path.relative_to(ROOT)}:{node.lineno} {target.attr}")
    assert not assigned, assigned
