"""How a key is declared: a dataclass field whose metadata holds its kind, rules and doc."""

from __future__ import annotations

import dataclasses
from dataclasses import field
from typing import Any


def key(default: Any, doc: str, kind: str = "", **rules: Any) -> Any:
    meta = {"doc": doc, "kind": kind, **rules}
    if isinstance(default, list | dict):
        return field(default_factory=lambda d=default: type(d)(d), metadata=meta)
    return field(default=default, metadata=meta)


def section(cls: type, doc: str) -> Any:
    return field(default_factory=cls, metadata={"doc": doc, "kind": "section", "section": cls})


NESTED = ("section", "sectionlist", "sectionmap")


def default_of(f: dataclasses.Field[Any]) -> Any:
    """A field's default value (a fresh copy for lists and mappings)."""
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return f.default
