"""The import rules of docs/design.md ("Shape"): imports go down the module list, never up."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "mmal"


def mmal_imports(path: Path) -> set[str]:
    """Every ``mmal.*`` module that ``path`` imports, at the top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("mmal"):
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("mmal")}
    return found


def modules(folder: str) -> list[Path]:
    return sorted((PACKAGE / folder).glob("*.py")) if folder else [PACKAGE / "errors.py"]


@pytest.mark.parametrize("folder, allowed", [
    ("", ()),  # errors imports nothing of mmal
    ("data", ("mmal.errors", "mmal.seeding", "mmal.data")),  # the data knows nothing of models or metrics
])
def test_a_lower_layer_imports_nothing_above_it(folder, allowed):
    for path in modules(folder):
        above = {m for m in mmal_imports(path) if not any(m == a or m.startswith(a + ".") for a in allowed)}
        assert not above, f"{path.relative_to(PACKAGE.parent)} imports {sorted(above)}"


def test_no_component_imports_the_cross_group_rules():
    users = {path.relative_to(PACKAGE.parent).as_posix() for path in PACKAGE.rglob("*.py")
             if "mmal.config" in mmal_imports(path)}
    assert users <= {"mmal/experiment.py", "mmal/sweep.py"}
