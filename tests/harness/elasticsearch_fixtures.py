"""pytest fixtures for a real Elasticsearch (ES_URL, testcontainers, or the test distribution),
a real OpenSearch (its test distribution, each version of SHIPPER_OS_VERSIONS in turn), a
real 3-node cluster, and the proxies tests put between shipper and the server."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.harness.elasticsearch import (
    DEFAULT_VERSION,
    OPENSEARCH,
    OS_VERSIONS,
    ElasticsearchServer,
    EsTestClient,
    SearchCluster,
)
from tests.harness.hold_proxy import HoldProxy
from tests.harness.tls_proxy import TlsProxy

OS_UNDER_TEST = [
    v for v in os.environ.get("SHIPPER_OS_VERSIONS", ",".join(OS_VERSIONS)).split(",") if v
]


def _docker_available() -> bool:
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.fixture(scope="session")
def es_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A session-wide Elasticsearch: $ES_URL, else testcontainers, else the test distribution."""
    if os.environ.get("ES_URL"):
        yield os.environ["ES_URL"].rstrip("/")
        return
    if _docker_available():
        from testcontainers.elasticsearch import ElasticSearchContainer

        image = f"docker.elastic.co/elasticsearch/elasticsearch:{DEFAULT_VERSION}"
        with ElasticSearchContainer(image, mem_limit="1g").with_env(
            "xpack.security.enabled", "false"
        ) as container:
            yield container.get_url()
        return
    yield from _serving(ElasticsearchServer(tmp_path_factory.mktemp("es"), DEFAULT_VERSION))


def _serving(server: ElasticsearchServer) -> Iterator[str]:
    """Start `server`, yield its URL, stop it."""
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def es_client(es_url: str) -> EsTestClient:
    return EsTestClient(es_url)


@pytest.fixture
def es_server_factory(
    tmp_path: Path,
) -> Iterator[Callable[..., ElasticsearchServer]]:
    """Private servers for tests that stop, kill or configure Elasticsearch."""
    if os.environ.get("ES_URL"):
        pytest.skip("needs an Elasticsearch it can stop and configure; ES_URL points elsewhere")
    started: list[ElasticsearchServer] = []

    def make(settings: dict | None = None, version: str | None = None) -> ElasticsearchServer:
        server = ElasticsearchServer(
            tmp_path / f"es-{len(started)}", version or DEFAULT_VERSION, settings
        )
        started.append(server)
        server.start()
        return server

    yield make
    for server in started:
        server.stop()


@pytest.fixture
def tls_proxy_factory(tmp_path: Path) -> Iterator[Callable[[str, str, str], TlsProxy]]:
    proxies: list[TlsProxy] = []

    def make(upstream: str, username: str, password: str) -> TlsProxy:
        proxy = TlsProxy(tmp_path / f"proxy-{len(proxies)}", upstream, username, password)
        proxies.append(proxy)
        return proxy

    yield make
    for proxy in proxies:
        proxy.stop()


@pytest.fixture(scope="session", params=OS_UNDER_TEST, ids=lambda v: f"opensearch-{v}")
def os_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A session-wide OpenSearch of each version under test, one after the other."""
    yield from _serving(
        ElasticsearchServer(
            tmp_path_factory.mktemp(f"os-{request.param}"), request.param, engine=OPENSEARCH
        )
    )


@pytest.fixture
def os_client(os_url: str) -> EsTestClient:
    return EsTestClient(os_url)


@pytest.fixture
def cluster_factory(tmp_path: Path) -> Iterator[Callable[..., SearchCluster]]:
    """Private multi-node clusters (each node its own process, on loopback)."""
    if os.environ.get("ES_URL"):
        pytest.skip("needs a cluster it can start and kill; ES_URL points elsewhere")
    started: list[SearchCluster] = []

    def make(size: int = 3, version: str | None = None) -> SearchCluster:
        cluster = SearchCluster(
            tmp_path / f"cluster-{len(started)}", size, version or DEFAULT_VERSION
        )
        started.append(cluster)
        cluster.start()
        return cluster

    yield make
    for cluster in started:
        cluster.stop()


@pytest.fixture
def hold_proxy_factory() -> Iterator[Callable[[str], HoldProxy]]:
    proxies: list[HoldProxy] = []

    def make(upstream: str) -> HoldProxy:
        proxy = HoldProxy(upstream)
        proxies.append(proxy)
        return proxy

    yield make
    for proxy in proxies:
        proxy.stop()
