"""The import graph reads schemas → infra → producers / processors / senders → herald.

Every module of the lower packages is parsed (imports inside functions count too): none
imports `herald` (the command line, ops, bench and demo on top), and no stage imports
another; stages meet only through `schemas` (the contract) and `infra`.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.unit.sources import parse

ROOT = Path(__file__).resolve().parents[2]
STAGES = ("producers", "processors", "senders")
# What each package may not import.
FORBIDDEN = {
    "schemas": {"herald", "infra", *STAGES},
    "infra": {"herald", *STAGES},
    **{stage: {"herald", *(s for s in STAGES if s != stage)} for stage in STAGES},
}


def imported_packages(path: Path, package: str) -> set[str]:
    """The top-level packages `path` imports (relative imports resolve to `package`)."""
    tree = parse(path.read_text(), str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            found.add(package if node.level else (node.module or "").split(".")[0])
    return found


def modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_import_runs_up_or_across(package: str) -> None:
    assert modules(package), f"no modules found under {package}/"
    wrong = {
        str(path.relative_to(ROOT)): sorted(bad)
        for path in modules(package)
        if (bad := imported_packages(path, package) & FORBIDDEN[package])
    }
    assert not wrong, f"{package} imports what lies above or beside it: {wrong}"


def test_the_check_sees_function_level_and_relative_imports(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text(
        "from . import x\n\ndef f():\n    import herald.cli\n    from senders import y\n"
    )
    assert imported_packages(module, "producers") == {"producers", "herald", "senders"}
