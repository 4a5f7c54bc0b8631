"""Shared pytest fixtures: real Elasticsearch and kube-apiserver come from tests/harness."""

pytest_plugins = [
    "tests.harness.elasticsearch_fixtures",
    "tests.harness.kube_fixtures",
]
