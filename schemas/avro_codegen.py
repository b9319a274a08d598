"""What the compiled Avro reader and writer share: a walk over a schema that emits the
Python source of one function, and compiling that source."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from schemas.errors import HeraldError


class Unsupported(HeraldError):
    """The schema uses a type that is not compiled (the codec then uses fastavro)."""


def null_index(branches: list[Any]) -> int:
    """Where "null" is in the only union shape herald uses: null and one other branch."""
    if len(branches) != 2 or "null" not in branches:
        raise Unsupported("union other than [null, T] / [T, null]")
    return branches.index("null")


class SourceGen:
    """Emits source lines per value; subclasses say how each kind is read or written."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.n = 0
        self.named: dict[str, Any] = {}
        self.open: set[str] = set()  # records being generated (recursion is not compiled)

    def var(self, prefix: str = "v") -> str:
        self.n += 1
        return f"{prefix}{self.n}"

    def emit(self, depth: int, line: str) -> None:
        self.lines.append("    " * depth + line)

    def value(self, schema: Any, depth: int, v: str) -> None:
        if isinstance(schema, list):
            self.union(schema, depth, v)
            return
        if isinstance(schema, str):
            if schema in self.named:
                schema = self.named[schema]
            else:
                self.primitive(schema, None, depth, v)
                return
        kind = schema["type"]
        if kind == "record":
            fullname = schema["name"]
            if "." not in fullname and schema.get("namespace"):
                fullname = f"{schema['namespace']}.{fullname}"
            if fullname in self.open:
                raise Unsupported(f"recursive record {fullname}")
            self.named[fullname] = self.named[schema["name"]] = schema
            self.open.add(fullname)
            self.record(schema, depth, v)
            self.open.discard(fullname)
        elif kind in ("map", "array"):
            self.blocks(schema, depth, v)
        elif isinstance(kind, str):
            self.primitive(kind, schema.get("logicalType"), depth, v)
        else:
            self.value(kind, depth, v)

    def primitive(self, kind: str, logical: str | None, depth: int, v: str) -> None:
        raise NotImplementedError

    def union(self, branches: list[Any], depth: int, v: str) -> None:
        raise NotImplementedError

    def blocks(self, schema: dict[str, Any], depth: int, v: str) -> None:
        raise NotImplementedError

    def record(self, schema: dict[str, Any], depth: int, v: str) -> None:
        raise NotImplementedError


def build(schema: Any, kind: str, source: list[str], scope: dict[str, Any]) -> Callable[..., Any]:
    """Compile the source of a function named `kind` ("decode", "encode")."""
    name = schema.get("name", "?") if isinstance(schema, dict) else str(schema)
    label = "reader" if kind == "decode" else "writer"
    exec(compile("\n".join(source), f"<avro {label} {name}>", "exec"), scope)  # our schemas
    fn: Callable[..., Any] = scope[kind]
    return fn
