"""One value of each kind of key: coerced from YAML, checked against its bounds.

A mistake is reported with the key path, the bad value (hidden for secrets) and what
would be accepted.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from shipper.config.errors import ConfigError, show
from shipper.datastream import index_name_problem

_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([KMGT]i?B?|B)?", re.IGNORECASE)
_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "m": 1000**2,
    "g": 1000**3,
    "t": 1000**4,
    "ki": 1024,
    "mi": 1024**2,
    "gi": 1024**3,
    "ti": 1024**4,
}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
SIZE_EXPECTED = "a size such as 65536, 512KiB or 5MiB"
DURATION_EXPECTED = "a duration such as 500ms, 5s, 10m or 1h"


def check(key: str, value: Any, meta: Any) -> Any:
    """`value` coerced to the key's kind; ConfigError if it is not accepted."""
    kind = meta.get("kind", "") or "str"
    if value is None and meta.get("optional"):
        return None
    shown = (
        "<hidden>"
        if meta.get("secret") or (kind == "urllist" and "@" in str(value))
        else show(value)
    )
    try:
        value = _COERCE[kind](value, meta)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{key}: {shown} is not accepted; expected {exc}") from None
    low, high = meta.get("min"), meta.get("max")
    if low is not None and value < low:
        raise ConfigError(f"{key}: {shown} is too small; expected at least {low}")
    if high is not None and value > high:
        raise ConfigError(f"{key}: {shown} is too large; expected at most {high}")
    if meta.get("min_len") and not value:
        raise ConfigError(f"{key}: must not be empty")
    return value


def parse_size(value: Any) -> int:
    """Bytes, or a size with a unit: 512KiB, 5MiB, 1GB; ValueError naming the form."""
    if isinstance(value, bool):
        raise TypeError(SIZE_EXPECTED)
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        m = _SIZE.fullmatch(value.strip())
        if m:
            unit = (m.group(2) or "").lower().rstrip("b")
            if unit in _SIZE_UNITS:
                return int(float(m.group(1)) * _SIZE_UNITS[unit])
    raise ValueError(SIZE_EXPECTED)


def parse_duration(value: Any) -> float:
    """Seconds, or a Go-style duration: 500ms, 5s, 10m, 1h30m, 7d."""
    if isinstance(value, bool):
        raise TypeError(DURATION_EXPECTED)
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        text = value.strip()
        if re.fullmatch(r"\d+(?:\.\d+)?", text):
            return float(text)
        parts = _DURATION.findall(text)
        if parts and "".join(n + u for n, u in parts) == text:
            return sum(float(n) * _DURATION_UNITS[u] for n, u in parts)
    raise ValueError(DURATION_EXPECTED)


def _as_str(value: Any, meta: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise TypeError("a string")
    return str(value)


def _as_int(value: Any, meta: Any) -> int:
    if isinstance(value, bool):
        raise TypeError("a whole number")
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    if not isinstance(value, int):
        raise TypeError("a whole number")
    return value


def _as_bool(value: Any, meta: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise TypeError("true or false")


def _as_duration(value: Any, meta: Any) -> float:
    return parse_duration(value)


def _as_size(value: Any, meta: Any) -> int:
    return parse_size(value)


def _as_strlist(value: Any, meta: Any) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise TypeError("a list of non-empty strings")
    if meta.get("nonempty") and not value:
        raise ValueError("at least one entry")
    return list(value)


def _as_urllist(value: Any, meta: Any) -> list[str]:
    hosts = [h for part in _as_strlist(value, meta) for h in part.split(",") if h.strip()]
    for host in hosts:
        if "@" in host.split("/", 3)[2] if host.count("/") >= 2 else False:
            # Never echo the value: it holds a password.
            raise ValueError(
                "URLs without credentials; put them in username and password_file (or api_key_file)"
            )
        if not re.fullmatch(r"https?://[^\s/]+(/[^\s]*)?", host.strip()):
            raise ValueError(f"URLs like https://elasticsearch:9200 (not {host!r})")
        # What the client refuses when it starts: a port out of range, http without one.
        try:
            port = urlsplit(host.strip()).port
            if port == 0:
                raise ValueError("port 0")
        except ValueError:
            raise ValueError(f"URLs with a port from 1 to 65535 (not {host!r})") from None
        if port is None and host.strip().startswith("http:"):
            raise ValueError(f"URLs with a port, like http://elasticsearch:9200 (not {host!r})")
    return [h.strip().rstrip("/") for h in hosts]


def _as_enum(value: Any, meta: Any) -> str:
    choices = meta["choices"]
    if value is None:
        value = ""
    if value not in choices:
        raise ValueError("one of " + ", ".join(repr(c) for c in choices))
    return value


def _as_regex(value: Any, meta: Any) -> str:
    text = _as_str(value if value is not None else "", meta)
    try:
        re.compile(text)
    except re.error as exc:
        raise ValueError(f"a valid regular expression ({exc})") from None
    return text


def _as_listen(value: Any, meta: Any) -> str:
    text = "" if value is None else _as_str(value, meta).strip()
    if text == "":
        return ""
    m = re.fullmatch(r"(\[[0-9a-fA-F:]+\]|[^:\s]*):(\d{1,5})", text)
    if not m or int(m.group(2)) > 65535:
        raise ValueError("host:port such as 0.0.0.0:2020 or 127.0.0.1:0, or empty to disable")
    return text


def _as_target(value: Any, meta: Any) -> str:
    text = _as_str(value if value is not None else "", meta)
    # The longest expansion of each date part, so the length bound holds on every day.
    name = re.sub(r"%[YmdHjyUW]", "0000", text) if meta.get("dated") else text
    if "%" in name:
        raise ValueError("strftime date parts among %Y %m %d %H %j %y %U %W, e.g. logs-%Y.%m.%d")
    if name and index_name_problem(name):
        raise ValueError(f"an Elasticsearch name: {index_name_problem(name)}")
    return text


def _as_float(value: Any, meta: Any) -> float:
    return _as_duration(value, meta)


_COERCE = {
    "str": _as_str,
    "int": _as_int,
    "bool": _as_bool,
    "duration": _as_duration,
    "size": _as_size,
    "strlist": _as_strlist,
    "urllist": _as_urllist,
    "enum": _as_enum,
    "regex": _as_regex,
    "listen": _as_listen,
    "target": _as_target,
    "float": _as_float,
}
