"""Every error herald defines derives from `schemas.errors.HeraldError` (one root, one
`retriable` flag): parsed from the source, so a new exception cannot slip past."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.unit.sources import parse

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("schemas", "producers", "processors", "senders", "infra", "herald")
BUILTIN_ROOTS = {"Exception", "ValueError", "RuntimeError", "OSError", "LookupError"}
# The root itself, and control flow that unwinds a task at shutdown (not an error).
NOT_ERRORS = {"senders/outputs.py:Stopping", "schemas/errors.py:HeraldError"}


def test_every_exception_has_the_one_root() -> None:
    strays = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            rel = str(path.relative_to(ROOT))
            if rel.startswith("infra/emulators/"):  # not part of herald; never installed
                continue
            for node in ast.walk(parse(path.read_text(), str(path))):
                if not isinstance(node, ast.ClassDef):
                    continue
                bases = {b.id for b in node.bases if isinstance(b, ast.Name)}
                name = f"{rel}:{node.name}"
                if bases & BUILTIN_ROOTS and "HeraldError" not in bases and name not in NOT_ERRORS:
                    strays.append(name)
    assert not strays, f"exceptions outside schemas.errors.HeraldError: {strays}"
