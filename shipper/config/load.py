"""Loading: YAML text, `${VAR}` and `${VAR:-default}` from the environment, the dataclasses.

Each key is coerced to its kind and checked against its bounds here; rules that involve
several keys or the machine (files, the cluster) are `validate()`'s.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from shipper.config.errors import ConfigError, show
from shipper.config.fields import default_of
from shipper.config.kinds import check
from shipper.config.schema import Config

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def load_config(path: str | Path, environ: Mapping[str, str] | None = None) -> Config:
    """Read, substitute and build a config file (then `validate()` it before use)."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc.strerror}") from exc
    return parse_config(text, environ, source=str(path))


def parse_config(
    text: str, environ: Mapping[str, str] | None = None, source: str = "config"
) -> Config:
    """Build config text; raise ConfigError naming the key on the first mistake."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{source}:{where}: not valid YAML: {problem}") from exc
    if raw is None:
        raw = {}
    env = os.environ if environ is None else environ
    return _build(Config, raw, "", env)


def default_config() -> Config:
    return _build(Config, {}, "", os.environ)


def _build(cls: type, raw: Any, prefix: str, env: Mapping[str, str]) -> Any:
    where = prefix.rstrip(".") or "the top level"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping of keys, got {show(raw)}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = [k for k in raw if k not in fields]
    if unknown:
        key = f"{prefix}{unknown[0]}"
        raise ConfigError(f"{key}: unknown key; accepted here: {', '.join(fields)}")
    values = {}
    for name, f in fields.items():
        key = f"{prefix}{name}"
        kind = f.metadata.get("kind")
        if kind == "section":
            # `parsing:` with nothing under it is an empty section; `parsing: false` is not.
            section = {} if raw.get(name) is None else raw[name]
            values[name] = _build(f.metadata["section"], section, key + ".", env)
        elif kind == "sectionlist":
            values[name] = _build_list(f.metadata["section"], raw.get(name), key, env)
        elif kind == "sectionmap":
            values[name] = _build_map(f.metadata["section"], raw.get(name), key, env)
        else:
            value = raw[name] if name in raw else default_of(f)
            values[name] = check(key, _substitute(key, value, env), f.metadata)
    return cls(**values)


def _build_list(cls: type, raw: Any, key: str, env: Mapping[str, str]) -> list[Any]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        names = ", ".join(f.name for f in dataclasses.fields(cls))
        raise ConfigError(f"{key}: expected a list of mappings (keys: {names}), got {show(raw)}")
    return [_build(cls, item, f"{key}[{i}].", env) for i, item in enumerate(raw)]


def _build_map(cls: type, raw: Any, key: str, env: Mapping[str, str]) -> dict[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{key}: expected a mapping of names to mappings, got {show(raw)}")
    out = {}
    for name, item in raw.items():
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{key}: {show(name)} is not accepted as a name; expected a string")
        out[name] = _build(cls, {} if item is None else item, f"{key}.{name}.", env)
    return out


def _substitute(key: str, value: Any, env: Mapping[str, str]) -> Any:
    if isinstance(value, list):
        return [_substitute(f"{key}[{i}]", v, env) for i, v in enumerate(value)]
    if not isinstance(value, str) or "${" not in value:
        return value

    def replace(m: re.Match[str]) -> str:
        name, default = m.group(1), m.group(2)
        if name in env:
            return str(env[name])
        if default is not None:
            return default
        raise ConfigError(
            f"{key}: environment variable {name} is not set (set it, or write ${{{name}:-default}})"
        )

    return _VAR.sub(replace, value)


def secret(value: str, file: str, key: str) -> str:
    """A credential given inline or in a file (trailing newline stripped); never logged."""
    if file:
        try:
            return Path(file).read_text().rstrip("\r\n")
        except OSError as exc:
            raise ConfigError(f"{key}_file: cannot read {file!r}: {exc.strerror}") from exc
    return value
