"""pytest fixtures for a real kube-apiserver (built from source by tests/harness/kube.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.harness.kube import KubeApiServer, grant_shipper_read


@pytest.fixture(scope="session")
def kube_apiserver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeApiServer]:
    """One apiserver for the session; the `shipper` user may read pods and namespaces."""
    server = KubeApiServer(tmp_path_factory.mktemp("kube"))
    server.start()
    grant_shipper_read(server.api_client())
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def kube_private(tmp_path: Path) -> Iterator[Callable[[], KubeApiServer]]:
    """A private apiserver for tests that stop, restart or compact it."""
    started: list[KubeApiServer] = []

    def make() -> KubeApiServer:
        server = KubeApiServer(tmp_path / f"kube-{len(started)}")
        started.append(server)
        server.start()
        return server

    yield make
    for server in started:
        server.stop()
