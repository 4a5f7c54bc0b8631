"""pytest fixtures for the node tests: one real node and one Elasticsearch it can reach.

Both are session-wide (the node takes a minute to provision and start, the images are
built once); tests share them and keep apart by namespace.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.harness.elasticsearch import DEFAULT_VERSION, ElasticsearchServer


@pytest.fixture(scope="session")
def kube_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    from tests.harness.node.cluster import KubeNode

    node = KubeNode(tmp_path_factory.mktemp("node"))
    node.start()
    try:
        yield node
    finally:
        node.stop()


@pytest.fixture(scope="session")
def node_es(kube_node: object, tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """Elasticsearch with its HTTP port on loopback and on the node's bridge address, the
    one address pods can reach (transport stays on loopback: no production bootstrap
    checks). Private to the node tests: they stop and start it."""
    from tests.harness.node.cluster import NODE_IP

    server = ElasticsearchServer(
        tmp_path_factory.mktemp("node-es"),
        DEFAULT_VERSION,
        {"http.host": ["127.0.0.1", NODE_IP], "transport.host": "127.0.0.1"},
        heap="1g",
    )
    server.start()
    server.pod_url = f"http://{NODE_IP}:{server.port}"  # type: ignore[attr-defined]
    try:
        yield server
    finally:
        server.stop()
