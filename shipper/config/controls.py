"""Per-workload controls: which data stream, how many lines a second, which secrets replaced."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from shipper.config.fields import key, section


@dataclass(slots=True)
class Routing:
    per_namespace: bool = key(
        False,
        "one data stream per Kubernetes namespace: the namespace part of "
        "elasticsearch.data_stream becomes the pod's namespace (logs-kubernetes-kube_system; "
        "- becomes _)",
        "bool",
    )
    dataset_annotation: bool = key(
        False,
        "a pod's shipper.io/dataset annotation picks its dataset under the configured one: "
        "shipper.io/dataset: nginx writes to logs-kubernetes.nginx-<namespace>",
        "bool",
    )


def _inherited(name: str, kind: str, example: int) -> Any:
    """A key of a namespace entry: unset keeps limits.<name>."""
    doc = f"as limits.{name}, for this namespace"
    return key(None, doc, kind, min=0, optional=True, example=example)


@dataclass(slots=True)
class NamespaceLimit:
    lines_per_second: int | None = _inherited("lines_per_second", "int", 100)
    bytes_per_second: int | None = _inherited("bytes_per_second", "size", 262144)
    burst_lines: int | None = _inherited("burst_lines", "int", 1000)
    burst_bytes: int | None = _inherited("burst_bytes", "size", 1048576)


@dataclass(slots=True)
class Limits:
    lines_per_second: int = key(
        0,
        "lines a second each container may ship; lines over it are dropped and counted in "
        "shipper_events_throttled_total (0: no limit)",
        min=0,
    )
    bytes_per_second: int = key(
        0, "message bytes a second each container may ship (0: no limit)", "size", min=0
    )
    burst_lines: int = key(
        0, "lines a container may ship at once after a quiet spell (0: one second's worth)", min=0
    )
    burst_bytes: int = key(
        0,
        "bytes a container may ship at once after a quiet spell (0: one second's worth)",
        "size",
        min=0,
    )
    annotations: bool = key(
        True,
        "pods may set their own limits with the annotation shipper.io/rate-limit: "
        '"lines_per_second=500,bytes_per_second=1MiB" (or "off"); false: ignored',
        "bool",
    )
    namespaces: dict[str, NamespaceLimit] = key(
        {},
        "limits for the containers of a namespace (a name or a glob; an exact name wins, "
        "then the first glob); keys not given keep the values above",
        "sectionmap",
        section=NamespaceLimit,
        example_name="batch",
    )


@dataclass(slots=True)
class RedactionBuiltins:
    authorization: bool = key(
        False,
        "credentials in Authorization headers and after Bearer/Basic (the scheme is kept)",
        "bool",
    )
    passwords: bool = key(
        False,
        "values of password, passwd, pwd, secret, token, api_key style keys (key=value, "
        'key: value, "key":"value"; also db_password, access_token) and passwords in URLs',
        "bool",
    )
    credit_cards: bool = key(
        False,
        "runs of 13 to 19 digits (spaces or dashes allowed) that pass the Luhn check",
        "bool",
    )


@dataclass(slots=True)
class RedactionRule:
    name: str = key(
        "", "what the rule finds (named in errors); required", min_len=1, example="session-id"
    )
    pattern: str = key(
        "",
        "regular expression of the text to replace; required",
        "regex",
        min_len=1,
        example="sid=[0-9a-f]{32}",
    )
    replacement: str = key(
        "", "what replaces a match (\\1 refers to a group); empty: redaction.marker"
    )


@dataclass(slots=True)
class Redaction:
    marker: str = key("[REDACTED]", "what replaces a secret", min_len=1)
    builtin: RedactionBuiltins = section(
        RedactionBuiltins, "built-in rules, each switched on by name"
    )
    rules: list[RedactionRule] = key(
        [],
        "custom rules, applied in order after the built-ins to messages and parsed JSON values",
        "sectionlist",
        section=RedactionRule,
    )
