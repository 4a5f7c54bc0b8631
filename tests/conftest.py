"""Shared pytest fixtures: real Elasticsearch and kube-apiserver come from tests/harness."""

from collections.abc import Iterator

import pytest

from tests.support import ShipperProcess

pytest_plugins = [
    "tests.harness.elasticsearch_fixtures",
    "tests.harness.kube_fixtures",
    "tests.harness.node_fixtures",
]


@pytest.fixture(autouse=True)
def _no_shipper_left_running() -> Iterator[None]:
    yield
    ShipperProcess.kill_leftovers()
