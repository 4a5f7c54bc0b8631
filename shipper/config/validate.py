"""`validate()`: every reason `shipper run` would refuse a config, found before it starts.

`shipper check-config` and `shipper run` (and a reload, later) call the same function, so
a config that passes `check-config` on a machine starts there. Two kinds of rules: the
config alone (keys that contradict or need each other) and the machine it runs on
(credential and CA files, the pods file, the kubeconfig or in-cluster account, the
metrics address). Each raises ConfigError naming the key, the bad value and what would be
accepted. Rules about one key alone (kinds, bounds) are checked while loading.
"""

from __future__ import annotations

import fnmatch
import re
import socket
import ssl
from pathlib import Path

from shipper.config.controls import Limits, Redaction
from shipper.config.errors import ConfigError, show
from shipper.config.schema import Config, Elasticsearch, Kubernetes, Multiline
from shipper.datastream import Router, parse_data_stream
from shipper.kube.podsfile import read_pods_file

_NAMESPACE_GLOB = re.compile(r"[a-z0-9*?\[\]!-]{1,63}")


def validate(cfg: Config, *, environment: bool = True) -> None:
    """Raise ConfigError on the first problem; `environment=False` checks the config alone."""
    check_credentials(cfg.elasticsearch)
    check_tls(cfg.elasticsearch)
    check_targets(cfg)
    if cfg.elasticsearch.retry.initial_backoff > cfg.elasticsearch.retry.max_backoff:
        r = cfg.elasticsearch.retry
        raise ConfigError(
            f"elasticsearch.retry.initial_backoff: {r.initial_backoff:g}s is longer than "
            f"elasticsearch.retry.max_backoff ({r.max_backoff:g}s); expected at most that"
        )
    if cfg.workers > 1 and not cfg.elasticsearch.hosts:
        raise ConfigError(
            f"workers: {cfg.workers} needs elasticsearch.hosts (the documents of several "
            "workers on one stdout would interleave); expected 1 without hosts"
        )
    check_multiline(cfg.parsing.multiline)
    check_kubernetes(cfg.kubernetes)
    check_limits(cfg.limits)
    check_redaction(cfg.redaction)
    if environment:
        check_files(cfg)
        check_cluster(cfg.kubernetes)
        check_listen(cfg.metrics.listen)


# ---- the config alone ----------------------------------------------------------------------


def check_credentials(es: Elasticsearch) -> None:
    """One way to authenticate, complete: basic auth needs both halves."""
    for inline, file in (("password", "password_file"), ("api_key", "api_key_file")):
        if getattr(es, inline) and getattr(es, file):
            raise ConfigError(
                f"elasticsearch.{file}: set together with elasticsearch.{inline}; expected one "
                f"of the two ({file} is better)"
            )
    has_password = bool(es.password or es.password_file)
    has_key = bool(es.api_key or es.api_key_file)
    if has_password and has_key:
        raise ConfigError(
            "elasticsearch.api_key: set together with a password; expected one way to "
            "authenticate: api_key_file, or username and password_file"
        )
    if has_password and not es.username:
        raise ConfigError(
            "elasticsearch.username: empty while a password is set; expected the user the "
            "password belongs to (or api_key_file instead of a password)"
        )
    if es.username and not has_password and not has_key:
        raise ConfigError(
            f"elasticsearch.password_file: empty while elasticsearch.username is set "
            f"({es.username!r}); expected the file holding that user's password"
        )


def check_tls(es: Elasticsearch) -> None:
    """TLS files only with https, and a private key only with its certificate."""
    t = es.tls
    if t.key_file and not t.cert_file:
        raise ConfigError(
            f"elasticsearch.tls.key_file: {t.key_file!r} without elasticsearch.tls.cert_file; "
            "expected both (or a cert_file holding the key too)"
        )
    plain = [h for h in es.hosts if h.startswith("http:")]
    for name in ("ca_file", "cert_file"):
        if getattr(t, name) and plain:
            raise ConfigError(
                f"elasticsearch.tls.{name}: set while elasticsearch.hosts has {plain[0]!r}; "
                "expected https:// hosts only (TLS files apply to every host)"
            )


def check_targets(cfg: Config) -> None:
    """Routing needs a data stream named by the scheme; dead letters need their own index."""
    es, routing = cfg.elasticsearch, cfg.routing
    routed = [k for k in ("per_namespace", "dataset_annotation") if getattr(routing, k)]
    if routed and es.index:
        raise ConfigError(
            f"routing.{routed[0]}: true while elasticsearch.index is set ({es.index!r}); "
            "expected elasticsearch.index empty (routing writes data streams)"
        )
    if routed and parse_data_stream(es.data_stream) is None:
        raise ConfigError(
            f"elasticsearch.data_stream: {es.data_stream!r} does not fit "
            f"<type>-<dataset>-<namespace>, which routing.{routed[0]} needs; expected a name "
            "such as logs-kubernetes-default (no - inside the dataset or the namespace)"
        )
    if es.index:
        target, patterns = es.index, [re.sub(r"%[A-Za-z]", "*", es.index)]
    else:
        router = Router.from_config(es.data_stream, routing)
        target = es.data_stream
        patterns = router.patterns() if router else [es.data_stream]
    dead = es.dead_letter_index
    if dead == target or any(fnmatch.fnmatchcase(dead, p) for p in patterns):
        raise ConfigError(
            f"elasticsearch.dead_letter_index: {dead!r} is among the documents' own targets "
            f"({', '.join(patterns)}); expected another name, such as shipper-dead-letter"
        )


def check_multiline(m: Multiline) -> None:
    if m.rule and m.continuation:
        raise ConfigError(
            f"parsing.multiline.continuation: set together with parsing.multiline.rule "
            f"({m.rule!r}); expected one of the two"
        )
    if m.start and not m.continuation:
        raise ConfigError(
            f"parsing.multiline.start: {m.start!r} without parsing.multiline.continuation; "
            "expected a continuation regex too (start only narrows a custom rule)"
        )


def check_kubernetes(k: Kubernetes) -> None:
    """The API watch needs this node's name; a pods file replaces the API."""
    if k.pods_file and k.kubeconfig:
        raise ConfigError(
            f"kubernetes.kubeconfig: set together with kubernetes.pods_file ({k.pods_file!r}); "
            "expected one source of pod metadata"
        )
    if k.enabled and not k.pods_file and not k.node_name:
        raise ConfigError(
            "kubernetes.node_name: empty while kubernetes.enabled is true; expected this node's "
            "name (set NODE_NAME from the downward API, spec.nodeName), or "
            "kubernetes.enabled: false"
        )


def check_limits(limits: Limits) -> None:
    """A burst needs its rate; namespace entries are named like namespaces."""
    entries = [("limits.", limits, limits)]
    for name, entry in limits.namespaces.items():
        if not _NAMESPACE_GLOB.fullmatch(name):
            raise ConfigError(
                f"limits.namespaces.{name}: {name!r} is not accepted as a namespace; expected "
                "a namespace name (lower case letters, digits, -) or a glob of names"
            )
        entries.append((f"limits.namespaces.{name}.", entry, limits))
    for prefix, entry, base in entries:
        for unit in ("lines", "bytes"):
            burst = getattr(entry, f"burst_{unit}")
            rate = getattr(entry, f"{unit}_per_second")
            rate = getattr(base, f"{unit}_per_second") if rate is None else rate
            if burst and not rate:
                raise ConfigError(
                    f"{prefix}burst_{unit}: {burst} without a limit on {unit}; expected "
                    f"{unit}_per_second as well (or burst_{unit}: 0)"
                )


def check_redaction(r: Redaction) -> None:
    """Custom rules: distinct names, a replacement that fits the pattern, no empty matches."""
    seen: set[str] = set()
    for i, rule in enumerate(r.rules):
        key = f"redaction.rules[{i}]"
        if rule.name in seen:
            raise ConfigError(
                f"{key}.name: {rule.name!r} names two rules; expected a name of its own"
            )
        seen.add(rule.name)
        pattern = re.compile(rule.pattern)
        if pattern.search("") is not None:
            raise ConfigError(
                f"{key}.pattern: {rule.pattern!r} matches empty text; expected a pattern that "
                "needs at least one character (the marker would go between every character)"
            )
        try:
            pattern.sub(rule.replacement or r.marker, "")
        except (re.error, IndexError) as exc:
            raise ConfigError(
                f"{key}.replacement: {show(rule.replacement)} is not accepted; expected text "
                f"with \\1-style references to the pattern's groups ({exc})"
            ) from None


# ---- the machine ------------------------------------------------------------------------------


def check_files(cfg: Config) -> None:
    """Credentials, CA and client certificate, the pods file: readable and usable."""
    es = cfg.elasticsearch
    for name in ("password_file", "api_key_file"):
        path = getattr(es, name)
        if path and not _read(f"elasticsearch.{name}", path).strip():
            raise ConfigError(
                f"elasticsearch.{name}: {path!r} is empty; expected the "
                f"{name.removesuffix('_file').replace('_', ' ')} in it"
            )
    t = es.tls
    if t.ca_file:
        _read("elasticsearch.tls.ca_file", t.ca_file)
        try:
            ssl.create_default_context(cafile=t.ca_file)
        except (ssl.SSLError, ValueError) as exc:
            raise ConfigError(
                f"elasticsearch.tls.ca_file: {t.ca_file!r} holds no usable certificate; "
                f"expected PEM certificates ({exc})"
            ) from None
    if t.cert_file:
        _read("elasticsearch.tls.cert_file", t.cert_file)
        if t.key_file:
            _read("elasticsearch.tls.key_file", t.key_file)
        try:
            ssl.create_default_context().load_cert_chain(
                t.cert_file, t.key_file or None, password=lambda: ""
            )
        except (ssl.SSLError, ValueError) as exc:
            raise ConfigError(
                f"elasticsearch.tls.cert_file: {t.cert_file!r} with "
                f"{'key_file ' + repr(t.key_file) if t.key_file else 'no key_file'} is not a "
                f"usable client certificate; expected a PEM certificate and its unencrypted "
                f"private key ({exc})"
            ) from None
    k = cfg.kubernetes
    if k.pods_file:
        try:
            read_pods_file(k.pods_file)
        except (OSError, ValueError) as exc:
            raise ConfigError(
                f"kubernetes.pods_file: cannot read {k.pods_file!r}: {exc}; expected the "
                "output of kubectl get pods -A -o json"
            ) from None


def check_cluster(k: Kubernetes) -> None:
    """The API client the watch would use: from the kubeconfig, or in-cluster."""
    if not k.enabled or k.pods_file:
        return
    from shipper.kube.source import api_client

    api_client(k.kubeconfig).close()


def check_listen(listen: str) -> None:
    """The metrics address must name this machine (whether the port is free shows at start)."""
    if not listen:
        return
    host, _, port = listen.rpartition(":")
    try:
        socket.getaddrinfo(host.strip("[]") or None, int(port), type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise ConfigError(
            f"metrics.listen: {listen!r}: {host!r} does not resolve ({exc}); expected an "
            "address of this machine, such as 0.0.0.0:2020"
        ) from None


def _read(key: str, path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(
            f"{key}: cannot read {path!r}: {exc.strerror}; expected a readable file"
        ) from None
