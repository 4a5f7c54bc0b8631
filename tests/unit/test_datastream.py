"""Data stream naming: every name Elasticsearch accepts, fields that agree with it."""

from __future__ import annotations

import fnmatch

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from shipper.config import parse_config
from shipper.datastream import (
    DataStream,
    Router,
    index_name_problem,
    namespace_part,
    parse_data_stream,
)

BASE = DataStream("logs", "kubernetes", "default")


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("logs-kubernetes-default", None),
        ("logs-%y", None),
        ("", "empty"),
        ("Logs", "not lower case"),
        ("logs kube", "contains ' '"),
        ("logs#1", "contains '#'"),
        ("a:b", "contains ':'"),
        ("-logs", "starts with '-'"),
        ("_logs", "starts with '_'"),
        (".ds-logs", "starts with .ds- (reserved for backing indices)"),
        ("..", "is '..'"),
        ("x" * 256, "256 bytes long"),
        ("é" * 128, "256 bytes long"),
    ],
)
def test_elasticsearch_name_rules(name, problem):
    assert index_name_problem(name) == problem


def test_names_that_fit_the_scheme_split_into_their_parts():
    assert parse_data_stream("logs-kubernetes-default") == BASE
    assert parse_data_stream("logs-nginx.access-prod") == DataStream("logs", "nginx.access", "prod")
    assert parse_data_stream("logs-my-app-prod") is None  # a - inside a part
    assert parse_data_stream("mystream") is None
    assert parse_data_stream("logs--prod") is None
    assert parse_data_stream(f"logs-{'a' * 101}-prod") is None


def test_fields_name_the_stream_they_go_to():
    stream = DataStream("logs", "kubernetes.nginx", "kube_system")
    assert stream.name == "logs-kubernetes.nginx-kube_system"
    assert orjson.loads(b"{" + stream.fields + b"}") == {
        "data_stream": {"type": "logs", "dataset": "kubernetes.nginx", "namespace": "kube_system"},
        "event": {"dataset": "kubernetes.nginx"},
    }


def test_routing_off_writes_to_the_configured_stream_whatever_the_pod():
    router = Router(BASE)
    assert router.target("shop", "nginx") is BASE
    assert router.patterns() == ["logs-kubernetes-default"]


def test_per_namespace_and_by_annotation():
    router = Router(BASE, per_namespace=True, dataset_annotation=True)
    assert router.target("kube-system").name == "logs-kubernetes-kube_system"
    assert router.target("shop", "Nginx-Access").name == "logs-kubernetes.nginx_access-shop"
    assert router.target("shop", "...").name == "logs-kubernetes-shop"  # nothing usable left
    assert router.target("", "").name == "logs-kubernetes-default"
    assert router.target("---").name == "logs-kubernetes-___"
    assert router.target("ü").name == "logs-kubernetes-_"
    assert router.patterns() == ["logs-kubernetes-*", "logs-kubernetes.*-*"]
    only_dataset = Router(BASE, dataset_annotation=True)
    assert only_dataset.target("shop", "nginx").name == "logs-kubernetes.nginx-default"
    assert only_dataset.patterns() == ["logs-kubernetes-default", "logs-kubernetes.*-default"]


def test_the_router_of_a_config():
    cfg = parse_config("routing:\n  per_namespace: true\n", {})
    router = Router.from_config(cfg.elasticsearch.data_stream, cfg.routing)
    assert router is not None and router.target("shop").name == "logs-kubernetes-shop"
    assert Router.from_config("not-a-scheme-name", cfg.routing) is None


# Kubernetes namespace names: DNS labels.
dns_labels = st.from_regex(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", fullmatch=True)
anything = st.text(max_size=300)
# Configured streams: any that the config accepts (validate() checks the scheme's bounds).
bases = st.builds(
    DataStream,
    st.sampled_from(["logs", "metrics", "x" * 60]),
    st.sampled_from(["kubernetes", "generic", "a.b", "d" * 100]),
    st.sampled_from(["default", "prod", "n" * 90]),
).filter(lambda b: index_name_problem(b.name) is None)


@given(base=bases, namespace=anything, dataset=anything, per_ns=st.booleans(), by_ann=st.booleans())
def test_every_target_is_a_name_elasticsearch_accepts(base, namespace, dataset, per_ns, by_ann):
    router = Router(base, per_namespace=per_ns, dataset_annotation=by_ann)
    stream = router.target(namespace, dataset)
    assert index_name_problem(stream.name) is None
    assert len(stream.name.encode()) <= 255
    assert "-" not in stream.dataset and "-" not in stream.namespace
    assert len(stream.dataset.encode()) <= 100 and len(stream.namespace.encode()) <= 100
    assert stream.name == f"{stream.type}-{stream.dataset}-{stream.namespace}"
    assert parse_data_stream(stream.name) == stream
    assert any(fnmatch.fnmatchcase(stream.name, p) for p in router.patterns())
    fields = orjson.loads(b"{" + stream.fields + b"}")
    assert fields["event"]["dataset"] == fields["data_stream"]["dataset"] == stream.dataset


@given(names=st.lists(dns_labels, min_size=2, max_size=20, unique=True))
def test_distinct_namespaces_get_distinct_streams(names):
    router = Router(BASE, per_namespace=True)
    assert len({router.target(n).name for n in names}) == len(names)
    assert all(namespace_part(n) == n.replace("-", "_") for n in names)
