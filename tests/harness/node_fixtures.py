"""pytest fixtures for the node tests: one real node and one Elasticsearch it can reach.

Both are session-wide (the node takes a minute to provision and start, the images are
built once); tests share them and keep apart by namespace.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.harness.elasticsearch import DEFAULT_VERSION, ElasticsearchServer
from tests.harness.tls_proxy import TlsProxy


@pytest.fixture(scope="session")
def kube_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    from tests.harness.node.cluster import KubeNode

    node = KubeNode(tmp_path_factory.mktemp("node"))
    node.start()
    try:
        yield node
    finally:
        node.stop()


@dataclass
class NodeElasticsearch:
    """Elasticsearch on loopback (`url`, for the test's own queries) and, for pods, a TLS
    proxy with basic auth on the node's bridge address (`pod_url`), the one address pods
    reach: shipper runs with the shipped config (TLS verified with the CA from the Secret,
    a password file) as in production."""

    server: ElasticsearchServer
    proxy: TlsProxy
    username: str
    password: str

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def pod_url(self) -> str:
        return self.proxy.url

    @property
    def ca(self) -> str:
        return self.proxy.ca_path.read_text()


@pytest.fixture(scope="session")
def node_es(
    kube_node: object, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[NodeElasticsearch]:
    """Private to the node tests (they stop and start it)."""
    from tests.harness.node.cluster import NODE_IP

    server = ElasticsearchServer(tmp_path_factory.mktemp("node-es"), DEFAULT_VERSION, heap="1g")
    server.start()
    password = secrets.token_hex(16)  # never starts with "-" (openssl passwd takes it)
    try:
        proxy = TlsProxy(
            tmp_path_factory.mktemp("node-es-proxy"), server.url, "shipper", password, NODE_IP
        )
        try:
            yield NodeElasticsearch(server, proxy, "shipper", password)
        finally:
            proxy.stop()
    finally:
        server.stop()
