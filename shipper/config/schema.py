"""Every configuration key: a dataclass field with its kind, bounds and a one-line description.

This is the single source of truth for loading (kinds and bounds), defaults and
`config.example.yaml`. Kinds: str, int, bool, duration, size, enum, regex, strlist,
urllist, listen, target; `section` (a nested mapping), `sectionlist` (a list of
mappings of one shape), `sectionmap` (a mapping of names to mappings of one shape).
Cross-key rules live in `validate.py`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from shipper.config.controls import Limits, Redaction, Routing
from shipper.config.fields import NESTED, default_of, key, section


@dataclass(slots=True)
class DeletedFiles:
    max_open: int = key(
        64,
        "deleted files kept open at most (once deleted for rotate_wait), oldest given up first",
        min=0,
    )
    max_seconds: float = key(
        600.0,
        "how long a deleted, unread file stays open before its rest is given up",
        "duration",
        min=0,
    )


@dataclass(slots=True)
class Inputs:
    paths: list[str] = key(
        ["/var/log/containers/*.log"], "globs of files to follow", "strlist", nonempty=True
    )
    exclude: list[str] = key([], "globs (full path or file name) of files to skip", "strlist")
    read_from: str = key(
        "beginning",
        "where to start a file seen for the first time",
        "enum",
        choices=["beginning", "end"],
    )
    max_open_files: int = key(
        1024, "open descriptors at most; idle files are closed beyond it", min=1
    )
    chunk_bytes: int = key(262144, "bytes read from a file at a time", "size", min=4096)
    rotate_wait: float = key(
        5.0, "a rotated file stays open this long after its last byte", "duration", min=0
    )
    rescan_interval: float = key(5.0, "how often the globs are matched again", "duration", min=0.1)
    idle_poll: float = key(
        0.5,
        "longest wait before an idle file is checked for new lines (a busy one: 50ms)",
        "duration",
        min=0.05,
    )
    watch: bool = key(True, "use inotify to notice new, rotated and deleted files at once", "bool")
    deleted_files: DeletedFiles = section(DeletedFiles, "bounds on deleted files held open")


@dataclass(slots=True)
class Multiline:
    rule: str = key(
        "",
        "builtin rule: java, python, go; empty for none (or use continuation)",
        "enum",
        choices=["", "java", "python", "go"],
    )
    continuation: str = key(
        "", "custom rule: regex of lines that continue the previous one", "regex"
    )
    start: str = key(
        "", "custom rule: regex of lines that may begin an event (empty: any)", "regex"
    )
    timeout: float = key(
        1.0, "an event is shipped after this long without a continuation", "duration", min=0
    )


@dataclass(slots=True)
class Parsing:
    max_event_bytes: int = key(
        1048576, "longest event; the rest is dropped and flagged truncated", "size", min=1024
    )
    partial_timeout: float = key(
        5.0, "an unfinished partial line is shipped after this long", "duration", min=0
    )
    level: bool = key(
        True,
        "set log.level (trace, debug, info, warn, error, fatal) from JSON, logfmt, klog and "
        "a leading level word; never from a word inside the message",
        "bool",
    )
    multiline: Multiline = section(Multiline, "joining stack traces (opt-in)")


@dataclass(slots=True)
class Checkpoint:
    path: str = key("/var/lib/shipper", "directory of the checkpoint store", min_len=1)
    interval: float = key(1.0, "how often committed offsets are written", "duration", min=0.01)
    forget_after: float = key(
        604800.0, "entries of files gone this long are dropped", "duration", min=60
    )


@dataclass(slots=True)
class Kubernetes:
    enabled: bool = key(True, "enrich records from the Kubernetes API", "bool")
    node_name: str = key("${NODE_NAME:-}", "this node (the DaemonSet sets NODE_NAME)")
    kubeconfig: str = key("", "kubeconfig file; empty: in-cluster service account")
    pods_file: str = key("", "`kubectl get pods -A -o json` dump used instead of the API")
    annotations: list[str] = key([], "annotation keys copied into documents (globs)", "strlist")
    wait_for_metadata: float = key(
        2.0,
        "lines of an unknown pod wait this long for its watch event (before the first pod "
        "list, up to 30s)",
        "duration",
        min=0,
    )
    deleted_pod_grace: float = key(
        300.0, "metadata of a deleted pod is kept this long", "duration", min=0
    )


@dataclass(slots=True)
class Tls:
    verify: bool = key(True, "verify the server certificate (never turn off in production)", "bool")
    ca_file: str = key("", "CA bundle that signed the server certificate; empty: system CAs")
    cert_file: str = key("", "client certificate (mutual TLS)")
    key_file: str = key("", "client private key (mutual TLS)")


@dataclass(slots=True)
class Bulk:
    max_bytes: int = key(5242880, "flush a bulk request at this size", "size", min=1024)
    max_docs: int = key(10000, "flush a bulk request at this many documents", min=1)
    max_delay: float = key(
        1.0, "flush a bulk request this long after its first document", "duration", min=0.001
    )
    concurrency: int = key(2, "bulk requests in flight at once", min=1, max=64)
    gzip: bool = key(False, "compress request bodies", "bool")
    timeout: float = key(60.0, "timeout of one request", "duration", min=1)


@dataclass(slots=True)
class Retry:
    initial_backoff: float = key(0.5, "first wait before a retry", "duration", min=0.001)
    max_backoff: float = key(60.0, "longest wait between retries", "duration", min=0.001)
    max_attempts: int = key(0, "give a document up after this many attempts (0: never)", min=0)


@dataclass(slots=True)
class Elasticsearch:
    hosts: list[str] = key([], "URLs; empty writes documents to stdout instead", "urllist")
    data_stream: str = key(
        "logs-kubernetes-default", "data stream to write (logs-<dataset>-<ns>)", "target"
    )
    index: str = key(
        "",
        "date-based index pattern instead of a data stream, e.g. logs-%Y.%m.%d",
        "target",
        dated=True,
    )
    username: str = key("", "basic auth user")
    password: str = key("", "basic auth password (prefer password_file)", secret=True)
    password_file: str = key("", "file holding the password (a mounted Secret)")
    api_key: str = key("", "API key, base64 id:key (prefer api_key_file)", secret=True)
    api_key_file: str = key("", "file holding the API key")
    tls: Tls = section(Tls, "TLS to Elasticsearch")
    bulk: Bulk = section(Bulk, "bulk requests")
    retry: Retry = section(Retry, "retries of failed requests and documents")
    deterministic_ids: bool = key(
        True,
        "ids from file and offset: exactly once across crashes, retries and rollovers; false "
        "for targets that refuse client ids (Amazon OpenSearch Serverless): at least once",
        "bool",
    )
    unready_after: float = key(
        30.0,
        "/readyz fails once the sink has been unreachable or refusing writes this long",
        "duration",
        min=0,
    )
    install_template: bool = key(True, "install the index template at start", "bool")
    ilm_policy: str = key(
        "", "ILM policy named in the template (deploy/elasticsearch/ilm-policy.json); empty: none"
    )
    dead_letter_index: str = key("shipper-dead-letter", "where rejected documents go", "target")


@dataclass(slots=True)
class Buffer:
    max_bytes: int = key(
        16777216, "documents read but not yet acknowledged, at most", "size", min=65536
    )


@dataclass(slots=True)
class Metrics:
    listen: str = key(
        "0.0.0.0:2020", "address of /metrics, /healthz, /readyz; empty disables", "listen"
    )


@dataclass(slots=True)
class Logging:
    level: str = key("info", "log level", "enum", choices=["debug", "info", "warning", "error"])
    format: str = key("json", "log format", "enum", choices=["json", "text"])


@dataclass(slots=True)
class Shutdown:
    grace: float = key(
        20.0, "on SIGTERM, time allowed to deliver what is in flight", "duration", min=0
    )


@dataclass(slots=True)
class Config:
    inputs: Inputs = section(Inputs, "which files to follow")
    parsing: Parsing = section(Parsing, "turning lines into events")
    checkpoint: Checkpoint = section(Checkpoint, "durable read positions")
    kubernetes: Kubernetes = section(Kubernetes, "metadata from the API")
    elasticsearch: Elasticsearch = section(Elasticsearch, "the sink")
    routing: Routing = section(Routing, "which data stream each container's documents go to")
    limits: Limits = section(Limits, "per-container rate limits (token buckets; off by default)")
    redaction: Redaction = section(Redaction, "secrets replaced in messages before shipping")
    buffer: Buffer = section(Buffer, "memory bound")
    metrics: Metrics = section(Metrics, "self-monitoring endpoint")
    logging: Logging = section(Logging, "shipper's own log")
    shutdown: Shutdown = section(Shutdown, "stopping")
    workers: int = key(
        1,
        "worker processes, each following its own share of the directories (more cores)",
        min=1,
        max=64,
    )


def _infer_kinds(cls: type) -> None:
    """Fields declared without a kind take it from their annotation."""
    for f in dataclasses.fields(cls):
        if f.metadata.get("kind") in NESTED:
            _infer_kinds(f.metadata["section"])
        elif not f.metadata.get("kind"):
            kind = {"int": "int", "str": "str", "float": "float", "bool": "bool"}[str(f.type)]
            f.metadata = type(f.metadata)({**f.metadata, "kind": kind})  # type: ignore[misc]


_infer_kinds(Config)


def iter_keys(cls: type = Config, prefix: str = "") -> list[tuple[str, Any, dict[str, Any]]]:
    """(key path, default, metadata) for every key, in declaration order.

    Keys inside list items are written `rules[].name`, inside named entries
    `namespaces.<name>.lines_per_second`; the list or mapping itself is listed too.
    """
    out: list[tuple[str, Any, dict[str, Any]]] = []
    for f in dataclasses.fields(cls):
        path = f"{prefix}{f.name}"
        kind = f.metadata.get("kind")
        if kind == "section":
            out += iter_keys(f.metadata["section"], f"{path}.")
            continue
        out.append((path, default_of(f), dict(f.metadata)))
        if kind == "sectionlist":
            out += iter_keys(f.metadata["section"], f"{path}[].")
        elif kind == "sectionmap":
            out += iter_keys(f.metadata["section"], f"{path}.<name>.")
    return out


def multiline_rule(cfg: Multiline) -> Any:
    """The parsers' MultilineRule for this config, or None."""
    from parsers.multiline import BUILTIN, rule

    if cfg.continuation:
        return rule("custom", cfg.continuation, cfg.start or None)
    if cfg.rule:
        return BUILTIN[cfg.rule]
    return None
