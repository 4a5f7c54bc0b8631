"""Configuration: one YAML file, `${VAR}` substitution, strict validation.

Every key is a dataclass field below, with its kind, bounds and a one-line description;
that is the single source of truth for validation, defaults and `config.example.yaml`.
A mistake is reported with the key path, the bad value and what would be accepted.
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A configuration mistake; the message names the key."""


def _f(default: Any, doc: str, kind: str = "", **rules: Any) -> Any:
    meta = {"doc": doc, "kind": kind, **rules}
    if isinstance(default, list | dict):
        return field(default_factory=lambda d=default: type(d)(d), metadata=meta)
    return field(default=default, metadata=meta)


def _section(cls: type, doc: str) -> Any:
    return field(default_factory=cls, metadata={"doc": doc, "kind": "section", "section": cls})


@dataclass(slots=True)
class DeletedFiles:
    max_open: int = _f(
        64,
        "deleted files kept open at most (once deleted for rotate_wait), oldest given up first",
        min=0,
    )
    max_seconds: float = _f(
        600.0,
        "how long a deleted, unread file stays open before its rest is given up",
        "duration",
        min=0,
    )


@dataclass(slots=True)
class Inputs:
    paths: list[str] = _f(
        ["/var/log/containers/*.log"], "globs of files to follow", "strlist", nonempty=True
    )
    exclude: list[str] = _f([], "globs (full path or file name) of files to skip", "strlist")
    read_from: str = _f(
        "beginning",
        "where to start a file seen for the first time",
        "enum",
        choices=["beginning", "end"],
    )
    max_open_files: int = _f(
        1024, "open descriptors at most; idle files are closed beyond it", min=1
    )
    chunk_bytes: int = _f(262144, "bytes read from a file at a time", "size", min=4096)
    rotate_wait: float = _f(
        5.0, "a rotated file stays open this long after its last byte", "duration", min=0
    )
    rescan_interval: float = _f(5.0, "how often the globs are matched again", "duration", min=0.1)
    idle_poll: float = _f(
        0.5,
        "longest wait before an idle file is checked for new lines (a busy one: 50ms)",
        "duration",
        min=0.05,
    )
    watch: bool = _f(True, "use inotify to notice new, rotated and deleted files at once", "bool")
    deleted_files: DeletedFiles = _section(DeletedFiles, "bounds on deleted files held open")


@dataclass(slots=True)
class Multiline:
    rule: str = _f(
        "",
        "builtin rule: java, python, go; empty for none (or use continuation)",
        "enum",
        choices=["", "java", "python", "go"],
    )
    continuation: str = _f(
        "", "custom rule: regex of lines that continue the previous one", "regex"
    )
    start: str = _f("", "custom rule: regex of lines that may begin an event (empty: any)", "regex")
    timeout: float = _f(
        1.0, "an event is shipped after this long without a continuation", "duration", min=0
    )


@dataclass(slots=True)
class Parsing:
    max_event_bytes: int = _f(
        1048576, "longest event; the rest is dropped and flagged truncated", "size", min=1024
    )
    partial_timeout: float = _f(
        5.0, "an unfinished partial line is shipped after this long", "duration", min=0
    )
    multiline: Multiline = _section(Multiline, "joining stack traces (opt-in)")


@dataclass(slots=True)
class Checkpoint:
    path: str = _f("/var/lib/shipper", "directory of the checkpoint store", min_len=1)
    interval: float = _f(1.0, "how often committed offsets are written", "duration", min=0.01)
    forget_after: float = _f(
        604800.0, "entries of files gone this long are dropped", "duration", min=60
    )


@dataclass(slots=True)
class Kubernetes:
    enabled: bool = _f(True, "enrich records from the Kubernetes API", "bool")
    node_name: str = _f("${NODE_NAME:-}", "this node (the DaemonSet sets NODE_NAME)")
    kubeconfig: str = _f("", "kubeconfig file; empty: in-cluster service account")
    pods_file: str = _f("", "`kubectl get pods -A -o json` dump used instead of the API")
    annotations: list[str] = _f([], "annotation keys copied into documents (globs)", "strlist")
    wait_for_metadata: float = _f(
        2.0, "lines of an unknown pod wait this long for its watch event", "duration", min=0
    )
    deleted_pod_grace: float = _f(
        300.0, "metadata of a deleted pod is kept this long", "duration", min=0
    )


@dataclass(slots=True)
class Tls:
    verify: bool = _f(True, "verify the server certificate (never turn off in production)", "bool")
    ca_file: str = _f("", "CA bundle that signed the server certificate; empty: system CAs")
    cert_file: str = _f("", "client certificate (mutual TLS)")
    key_file: str = _f("", "client private key (mutual TLS)")


@dataclass(slots=True)
class Bulk:
    max_bytes: int = _f(5242880, "flush a bulk request at this size", "size", min=1024)
    max_docs: int = _f(10000, "flush a bulk request at this many documents", min=1)
    max_delay: float = _f(
        1.0, "flush a bulk request this long after its first document", "duration", min=0.001
    )
    concurrency: int = _f(2, "bulk requests in flight at once", min=1, max=64)
    gzip: bool = _f(False, "compress request bodies", "bool")
    timeout: float = _f(60.0, "timeout of one request", "duration", min=1)


@dataclass(slots=True)
class Retry:
    initial_backoff: float = _f(0.5, "first wait before a retry", "duration", min=0.001)
    max_backoff: float = _f(60.0, "longest wait between retries", "duration", min=0.001)
    max_attempts: int = _f(0, "give a document up after this many attempts (0: never)", min=0)


@dataclass(slots=True)
class Elasticsearch:
    hosts: list[str] = _f([], "URLs; empty writes documents to stdout instead", "urllist")
    data_stream: str = _f(
        "logs-kubernetes-default", "data stream to write (logs-<dataset>-<ns>)", "target"
    )
    index: str = _f(
        "",
        "date-based index pattern instead of a data stream, e.g. logs-%Y.%m.%d",
        "target",
        dated=True,
    )
    username: str = _f("", "basic auth user")
    password: str = _f("", "basic auth password (prefer password_file)", secret=True)
    password_file: str = _f("", "file holding the password (a mounted Secret)")
    api_key: str = _f("", "API key, base64 id:key (prefer api_key_file)", secret=True)
    api_key_file: str = _f("", "file holding the API key")
    tls: Tls = _section(Tls, "TLS to Elasticsearch")
    bulk: Bulk = _section(Bulk, "bulk requests")
    retry: Retry = _section(Retry, "retries of failed requests and documents")
    deterministic_ids: bool = _f(
        True,
        "ids from file and offset: exactly once across crashes, retries and rollovers; false "
        "for targets that refuse client ids (Amazon OpenSearch Serverless): at least once",
        "bool",
    )
    unready_after: float = _f(
        30.0,
        "/readyz fails once the sink has been unreachable or refusing writes this long",
        "duration",
        min=0,
    )
    install_template: bool = _f(True, "install the index template at start", "bool")
    ilm_policy: str = _f(
        "", "ILM policy named in the template (deploy/elasticsearch/ilm-policy.json); empty: none"
    )
    dead_letter_index: str = _f("shipper-dead-letter", "where rejected documents go", "target")


@dataclass(slots=True)
class Buffer:
    max_bytes: int = _f(
        16777216, "documents read but not yet acknowledged, at most", "size", min=65536
    )


@dataclass(slots=True)
class Metrics:
    listen: str = _f(
        "0.0.0.0:2020", "address of /metrics, /healthz, /readyz; empty disables", "listen"
    )


@dataclass(slots=True)
class Logging:
    level: str = _f("info", "log level", "enum", choices=["debug", "info", "warning", "error"])
    format: str = _f("json", "log format", "enum", choices=["json", "text"])


@dataclass(slots=True)
class Shutdown:
    grace: float = _f(
        20.0, "on SIGTERM, time allowed to deliver what is in flight", "duration", min=0
    )


@dataclass(slots=True)
class Config:
    inputs: Inputs = _section(Inputs, "which files to follow")
    parsing: Parsing = _section(Parsing, "turning lines into events")
    checkpoint: Checkpoint = _section(Checkpoint, "durable read positions")
    kubernetes: Kubernetes = _section(Kubernetes, "metadata from the API")
    elasticsearch: Elasticsearch = _section(Elasticsearch, "the sink")
    buffer: Buffer = _section(Buffer, "memory bound")
    metrics: Metrics = _section(Metrics, "self-monitoring endpoint")
    logging: Logging = _section(Logging, "shipper's own log")
    shutdown: Shutdown = _section(Shutdown, "stopping")


# ---- loading ---------------------------------------------------------------------------

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
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


def load_config(path: str | Path, environ: dict[str, str] | None = None) -> Config:
    """Read, substitute and validate a config file."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc.strerror}") from exc
    return parse_config(text, environ, source=str(path))


def parse_config(
    text: str, environ: dict[str, str] | None = None, source: str = "config"
) -> Config:
    """Validate config text; raise ConfigError naming the key on the first mistake."""
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


def _build(cls: type, raw: Any, prefix: str, env: Any) -> Any:
    where = prefix.rstrip(".") or "the top level"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping of keys, got {_show(raw)}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = [k for k in raw if k not in fields]
    if unknown:
        key = f"{prefix}{unknown[0]}"
        raise ConfigError(f"{key}: unknown key; accepted here: {', '.join(fields)}")
    values = {}
    for name, f in fields.items():
        key = f"{prefix}{name}"
        if f.metadata.get("kind") == "section":
            values[name] = _build(f.metadata["section"], raw.get(name) or {}, f"{key}.", env)
            continue
        if name in raw:
            value = raw[name]
        elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            value = f.default_factory()  # type: ignore[misc]
        else:
            value = f.default
        values[name] = _check(key, _substitute(key, value, env), f.metadata)
    return cls(**values)


def _substitute(key: str, value: Any, env: Any) -> Any:
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


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _check(key: str, value: Any, meta: Any) -> Any:
    kind = meta.get("kind", "") or "str"
    shown = (
        "<hidden>"
        if meta.get("secret") or (kind == "urllist" and "@" in str(value))
        else (_show(value))
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
    """Seconds, or a Go-style duration: 500ms, 5s, 10m, 1h30m, 7d."""
    if isinstance(value, bool):
        raise TypeError("a duration such as 500ms, 5s, 10m or 1h")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        text = value.strip()
        if re.fullmatch(r"\d+(?:\.\d+)?", text):
            return float(text)
        parts = _DURATION.findall(text)
        if parts and "".join(n + u for n, u in parts) == text:
            return sum(float(n) * _DURATION_UNITS[u] for n, u in parts)
    raise ValueError("a duration such as 500ms, 5s, 10m or 1h")


def _as_size(value: Any, meta: Any) -> int:
    """Bytes, or a size with a unit: 512KiB, 5MiB, 1GB."""
    if isinstance(value, bool):
        raise TypeError("a size such as 65536, 512KiB or 5MiB")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        m = _SIZE.fullmatch(value.strip())
        if m:
            unit = (m.group(2) or "").lower().rstrip("b")
            if unit in _SIZE_UNITS:
                return int(float(m.group(1)) * _SIZE_UNITS[unit])
    raise ValueError("a size such as 65536, 512KiB or 5MiB")


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
    name = re.sub(r"%[YmdHjyUW]", "x", text) if meta.get("dated") else text
    if "%" in name:
        raise ValueError("strftime date parts among %Y %m %d %H %j %y %U %W, e.g. logs-%Y.%m.%d")
    if name and (
        name != name.lower()
        or name.startswith(("-", "_", "+"))
        or re.search(r'[\\/*?"<>| ,#:]', name)
    ):
        raise ValueError(
            'a lowercase Elasticsearch name without \\ / * ? " < > | space , # : '
            "and not starting with - _ +"
        )
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


def _infer_kinds(cls: type) -> None:
    """Fields declared without a kind take it from their annotation."""
    for f in dataclasses.fields(cls):
        if f.metadata.get("kind") == "section":
            _infer_kinds(f.metadata["section"])
        elif not f.metadata.get("kind"):
            kind = {"int": "int", "str": "str", "float": "float", "bool": "bool"}[str(f.type)]
            f.metadata = type(f.metadata)({**f.metadata, "kind": kind})  # type: ignore[misc]


_infer_kinds(Config)


def iter_keys(cls: type = Config, prefix: str = "") -> list[tuple[str, Any, dict[str, Any]]]:
    """(key path, default, metadata) for every leaf key, in declaration order."""
    out = []
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        if f.metadata.get("kind") == "section":
            out += iter_keys(f.metadata["section"], f"{key}.")
        else:
            default = (
                f.default_factory()  # type: ignore[misc]
                if f.default_factory is not dataclasses.MISSING  # type: ignore[misc]
                else f.default
            )
            out.append((key, default, dict(f.metadata)))
    return out


def multiline_rule(cfg: Multiline) -> Any:
    """The parsers' MultilineRule for this config, or None."""
    from parsers.multiline import BUILTIN, rule

    if cfg.continuation:
        return rule("custom", cfg.continuation, cfg.start or None)
    if cfg.rule:
        return BUILTIN[cfg.rule]
    return None


def secret(value: str, file: str, key: str) -> str:
    """A credential given inline or in a file (trailing newline stripped); never logged."""
    if file:
        try:
            return Path(file).read_text().rstrip("\r\n")
        except OSError as exc:
            raise ConfigError(f"{key}_file: cannot read {file!r}: {exc.strerror}") from exc
    return value


def render_example() -> str:
    """config.example.yaml: every key with its default and what it does."""
    lines = [
        "# shipper configuration: every key, with its default.",
        "# Values may use ${VAR} or ${VAR:-default} from the environment.",
        "# Durations: 500ms, 5s, 10m, 1h (or seconds); sizes: 65536, 512KiB, 5MiB.",
        "# Validate with: shipper check-config FILE",
    ]

    def walk(cls: type, indent: str) -> None:
        for f in dataclasses.fields(cls):
            doc = f.metadata.get("doc", "")
            if f.metadata.get("kind") == "section":
                lines.append("")
                lines.append(f"{indent}# {doc}")
                lines.append(f"{indent}{f.name}:")
                walk(f.metadata["section"], indent + "  ")
                continue
            default = (
                f.default_factory()  # type: ignore[misc]
                if f.default_factory is not dataclasses.MISSING  # type: ignore[misc]
                else f.default
            )
            lines.append(f"{indent}# {doc}")
            lines.append(f"{indent}{f.name}: {_yaml_value(default, f.metadata.get('kind', ''))}")

    walk(Config, "")
    return "\n".join(lines) + "\n"


def _yaml_value(value: Any, kind: str = "") -> str:
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
        return "[" + ", ".join(_yaml_value(v) for v in value) + "]"
    if isinstance(value, float) and value == int(value):
        return str(int(value))
    return str(value)


if __name__ == "__main__":
    print(render_example(), end="")
