"""Parsing herald's own source files in tests that check its structure."""

from __future__ import annotations

import ast


def parse(source: str, filename: str = "<unknown>") -> ast.Module:
    """`ast.parse`, again when it fails with "AST constructor recursion depth mismatch":
    CPython 3.11 keeps that depth in state shared by all threads (python/cpython#106905),
    so a parse can fail while another thread of the test session builds an AST. That is the
    interpreter's race, not the source's; a real syntax error raises SyntaxError."""
    for _ in range(3):
        try:
            return ast.parse(source, filename=filename)
        except SystemError:
            continue
    return ast.parse(source, filename=filename)
