"""config.example.yaml: every key with its default and what it does, rendered from the schema."""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from shipper.config.fields import default_of
from shipper.config.schema import Config

HEADER = [
    "# shipper configuration: every key, with its default.",
    "# Values may use ${VAR} or ${VAR:-default} from the environment.",
    "# Durations: 500ms, 5s, 10m, 1h (or seconds); sizes: 65536, 512KiB, 5MiB.",
    "# Validate with: shipper check-config FILE",
]


def render_example() -> str:
    """The text of config.example.yaml (`python -m shipper.config`)."""
    lines = list(HEADER)
    _walk(Config, "", lines)
    return "\n".join(lines) + "\n"


def _walk(cls: type, indent: str, lines: list[str]) -> None:
    after_section = False
    for f in dataclasses.fields(cls):
        doc = f.metadata.get("doc", "")
        kind = f.metadata.get("kind", "")
        if kind == "section":
            lines.append("")
            lines.append(f"{indent}# {doc}")
            lines.append(f"{indent}{f.name}:")
            _walk(f.metadata["section"], indent + "  ", lines)
            after_section = True
            continue
        if after_section:
            lines.append("")
            after_section = False
        lines.append(f"{indent}# {doc}")
        if kind == "sectionlist":
            lines.append(f"{indent}# each entry:")
            _item_keys(f.metadata["section"], f"{indent}#   - ", f"{indent}#     ", lines)
        elif kind == "sectionmap":
            lines.append(f"{indent}# e.g.")
            lines.append(f"{indent}#   {f.metadata.get('example_name', 'name')}:")
            _item_keys(f.metadata["section"], f"{indent}#     ", f"{indent}#     ", lines)
        lines.append(f"{indent}{f.name}: {yaml_value(default_of(f), kind)}")


def _item_keys(cls: type, first: str, rest: str, lines: list[str]) -> None:
    """The keys of one list item or named entry, as comments: `key: <example>  # <doc>`."""
    for i, f in enumerate(dataclasses.fields(cls)):
        kind = f.metadata.get("kind", "")
        example = yaml_value(f.metadata.get("example", default_of(f)), kind)
        lead = first if i == 0 else rest
        lines.append(f"{lead}{f.name}: {example}  # {f.metadata.get('doc', '')}")


def yaml_value(value: Any, kind: str = "") -> str:
    """A default as the example writes it (durations and sizes with units)."""
    if value is None:
        return "null"
    if kind == "duration":
        for unit, seconds in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
            if value >= seconds and value % seconds == 0:
                return f"{int(value // seconds)}{unit}"
        return f"{int(value * 1000)}ms"
    if kind == "size":
        for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
            if value >= size and value % size == 0:
                return f"{value // size}{unit}"
        return str(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return (
            '""'
            if value == ""
            else (f'"{value}"' if re.search(r"[:#{}\[\],&*?|<>=!%@`'\"]|^\s|\s$", value) else value)
        )
    if isinstance(value, list):
        return "[" + ", ".join(yaml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {yaml_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, float) and value == int(value):
        return str(int(value))
    return str(value)
