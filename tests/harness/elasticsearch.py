"""A real Elasticsearch or OpenSearch for tests and the demo: the test distributions, run
locally (tests/harness/distribution.py provisions them).

Each server is started as an unprivileged user (both engines refuse root) on free
loopback ports, one directory per instance (config copy, data, logs, tmp) so instances
never share state. `SearchCluster` runs several nodes of one cluster, each its own
process, discovering each other over the transport ports.

What the test distribution holds (modules/ in 9.5.3 and 8.19.21): apm, transport-netty4,
x-pack-core, x-pack-security. Consequences, checked against both versions:
- works: _index_template, data streams for writing and searching (create into a
  template with `data_stream: {}`), op_type create answering 409, date_nanos, flattened,
  dynamic_templates with path_match lists, data_stream_options.failure_store in a
  template (accepted, but rejected documents are not redirected: the failure store
  itself is not there, so shipper's own dead-letter index is used);
- missing: the root endpoint `GET /` (rest-root module), `_data_stream` APIs (so data
  streams cannot be deleted: tests use unique names), ILM, ingest pipelines,
  match_only_text (mapper-extras).

OpenSearch's test distributions (2.19.6 holds only transport-netty4 in modules/; 3.8.0
ships the common modules) have `GET /`, index templates, data streams, `date_nanos` and
`flat_object`; no security plugin, and no failure store (an Elasticsearch feature).

    python -m tests.harness.elasticsearch provision [--version V]... [--opensearch V]...
    python -m tests.harness.elasticsearch start [--version V | --opensearch V] [--dir D]
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import shutil
import signal
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from tests.harness.distribution import (
    ELASTICSEARCH,
    ENGINES,
    ES_USER,
    ES_VERSIONS,
    OPENSEARCH,
    OS_VERSIONS,
    _es_user,
    ensure_distribution,
    find_java,
    free_port,
    java_range,
    make_traversable,
)

DEFAULT_VERSION = os.environ.get("SHIPPER_ES_VERSION", "9.5.3")
VERSIONS = ES_VERSIONS
__all__ = ["ES_USER", "ElasticsearchServer", "EsTestClient", "SearchCluster", "free_port"]
__all__ += ["ELASTICSEARCH", "OPENSEARCH", "OS_VERSIONS", "_es_user", "make_traversable"]


class ElasticsearchServer:
    """One Elasticsearch or OpenSearch node (single-node unless `peers` are given);
    stop/kill and start again keep its data and port."""

    def __init__(
        self,
        workdir: Path,
        version: str = DEFAULT_VERSION,
        settings: dict[str, Any] | None = None,
        heap: str = "512m",
        engine: str = ELASTICSEARCH,
        name: str = "node-1",
    ) -> None:
        self.workdir = Path(workdir)
        self.version = version
        self.engine = engine
        self.name = name
        self.settings = dict(settings or {})
        self.heap = heap
        self.port = free_port()
        self.transport_port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.home = ensure_distribution(version, engine)
        self.java = find_java(*java_range(engine, version))
        self._proc: subprocess.Popen[bytes] | None = None
        self._prepared = False

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def _prepare(self) -> None:
        if self._prepared:
            return
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "config"
        if not config.exists():
            shutil.copytree(self.home / "config", config)
            # OpenSearch's jvm.options writes GC logs and heap dumps relative to its home,
            # which the unprivileged user cannot write: point them into the instance.
            options = config / "jvm.options"
            text = options.read_text()
            for rel in ("logs/gc.log", "logs/hs_err_pid%p.log"):
                text = text.replace(f"={rel}", f"={self.workdir / rel}")
                text = text.replace(f":{rel}", f":{self.workdir / rel}")
            text = text.replace("HeapDumpPath=data", f"HeapDumpPath={self.workdir / 'data'}")
            options.write_text(text)
        for name in ("data", "logs", "tmp"):
            (self.workdir / name).mkdir(exist_ok=True)
        settings: dict[str, Any] = {
            "cluster.name": "shipper-test",
            "node.name": self.name,
            "discovery.type": "single-node",
            "network.host": "127.0.0.1",
            "http.port": self.port,
            "transport.port": self.transport_port,
            "path.data": str(self.workdir / "data"),
            "path.logs": str(self.workdir / "logs"),
            "cluster.routing.allocation.disk.threshold_enabled": False,
            "action.destructive_requires_name": False,
        }
        if self.engine == ELASTICSEARCH:
            settings["xpack.security.enabled"] = False
        settings.update(self.settings)
        settings = {k: v for k, v in settings.items() if v is not None}
        (config / ENGINES[self.engine].config_file).write_text(
            "".join(f"{k}: {json.dumps(v)}\n" for k, v in settings.items())
        )
        owner = _es_user()
        if owner is not None:
            for directory, _, files in os.walk(self.workdir):
                os.chown(directory, *owner)
                for name in files:
                    os.chown(os.path.join(directory, name), *owner)
            make_traversable(self.workdir)
        self._prepared = True

    def start(self, timeout: float = 180) -> None:
        """Start and wait until the cluster is yellow."""
        self.launch()
        self.wait_ready(timeout)

    def launch(self) -> None:
        """Start the process without waiting (nodes of a cluster start together)."""
        self._prepare()
        prefix = ENGINES[self.engine].env_prefix
        env = {
            **os.environ,
            f"{prefix}_JAVA_HOME": str(self.java),
            f"{prefix}_PATH_CONF": str(self.workdir / "config"),
            f"{prefix}_TMPDIR": str(self.workdir / "tmp"),
            f"{prefix}_JAVA_OPTS": f"-Xms{self.heap} -Xmx{self.heap}",
        }
        env.pop("JAVA_HOME", None)
        owner = _es_user()

        def demote() -> None:
            os.setsid()
            if owner is not None:
                os.setgroups([])
                os.setgid(owner[1])
                os.setuid(owner[0])

        stdout = open(self.workdir / "stdout.log", "ab")  # noqa: SIM115 - the child owns it
        self._proc = subprocess.Popen(
            [str(self.home / ENGINES[self.engine].binary)],
            env=env,
            stdout=stdout,
            stderr=subprocess.STDOUT,
            preexec_fn=demote,
            cwd=self.workdir,
        )
        stdout.close()

    def wait_ready(self, timeout: float = 180) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(
                    f"{self.engine} {self.version} exited with {self._proc.returncode}:\n"
                    + self.log_tail()
                )
            with contextlib.suppress(OSError, ValueError):
                status, _ = EsTestClient(self.url).request(
                    "GET", "/_cluster/health?wait_for_status=yellow&timeout=1s"
                )
                if status == 200:
                    return
            time.sleep(0.2)
        self.kill()
        raise RuntimeError(
            f"{self.engine} {self.version} not ready after {timeout}s:\n" + self.log_tail()
        )

    def stop(self, timeout: float = 60) -> None:
        """SIGTERM and wait (SIGKILL if it will not go)."""
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(60)

    def freeze(self, frozen: bool = True) -> None:
        """SIGSTOP (or SIGCONT) the whole server: connections open, nothing answered, as
        in a long garbage-collection pause or a hung node."""
        assert self._proc is not None
        os.killpg(self._proc.pid, signal.SIGSTOP if frozen else signal.SIGCONT)

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def log_tail(self, n: int = 50) -> str:
        path = self.workdir / "stdout.log"
        if not path.exists():
            return "(no log)"
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])

    def __enter__(self) -> ElasticsearchServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class EsTestClient:
    """A small JSON-over-HTTP client for assertions, independent of shipper's own client."""

    def __init__(self, url: str, auth: tuple[str, str] | None = None, ca: str | None = None):
        self.url = url.rstrip("/")
        self.headers = {"Content-Type": "application/json"}
        if auth is not None:
            token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
            self.headers["Authorization"] = f"Basic {token}"
        self.context = ssl.create_default_context(cafile=ca) if ca else None

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = None
        if body is not None:
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
        request = urllib.request.Request(
            self.url + path, data=data, method=method, headers=self.headers
        )
        try:
            with urllib.request.urlopen(request, timeout=60, context=self.context) as response:
                status, raw = response.status, response.read()
        except urllib.error.HTTPError as exc:
            status, raw = exc.code, exc.read()
        try:
            return status, json.loads(raw) if raw else None
        except ValueError:
            return status, raw.decode(errors="replace")

    def refresh(self, index: str) -> None:
        self.request("POST", f"/{index}/_refresh?ignore_unavailable=true&allow_no_indices=true")

    def count(self, index: str, query: dict[str, Any] | None = None) -> int:
        """Documents in `index` (refreshed first); 0 if it does not exist yet."""
        body = {"query": query} if query else None
        deadline = time.monotonic() + 60
        while True:
            self.refresh(index)
            status, result = self.request(
                "POST", f"/{index}/_count?ignore_unavailable=true&allow_no_indices=true", body
            )
            # A data stream created a moment ago may not have its shard started yet.
            if status != 503 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        if status != 200:
            raise AssertionError(f"count {index}: {status} {result}")
        return int(result["count"])

    def search(self, index: str, body: dict[str, Any]) -> dict[str, Any]:
        self.refresh(index)
        status, result = self.request(
            "POST", f"/{index}/_search?ignore_unavailable=true&allow_no_indices=true", body
        )
        if status != 200:
            raise AssertionError(f"search {index}: {status} {result}")
        return result

    def delete_index(self, pattern: str) -> None:
        self.request("DELETE", f"/{pattern}?ignore_unavailable=true&allow_no_indices=true")


class SearchCluster:
    """`size` nodes of one cluster on loopback, each its own process, discovering each
    other over their transport ports; every node holds data and may be master."""

    def __init__(
        self,
        workdir: Path,
        size: int = 3,
        version: str = DEFAULT_VERSION,
        engine: str = ELASTICSEARCH,
        heap: str = "512m",
    ) -> None:
        names = [f"node-{i + 1}" for i in range(size)]
        self.nodes = [
            ElasticsearchServer(workdir / name, version, heap=heap, engine=engine, name=name)
            for name in names
        ]
        seeds = [f"127.0.0.1:{n.transport_port}" for n in self.nodes]
        masters = "cluster.initial_cluster_manager_nodes" if engine == OPENSEARCH else None
        for node in self.nodes:
            node.settings.update(
                {
                    "discovery.type": None,
                    "discovery.seed_hosts": seeds,
                    masters or "cluster.initial_master_nodes": names,
                }
            )
        self.urls = [n.url for n in self.nodes]

    def start(self, timeout: float = 300) -> None:
        for node in self.nodes:
            node.launch()
        for node in self.nodes:
            node.wait_ready(timeout)
        status, health = EsTestClient(self.urls[0]).request(
            "GET", f"/_cluster/health?wait_for_nodes={len(self.nodes)}&timeout=120s"
        )
        if status != 200:
            raise RuntimeError(f"cluster did not form: {status} {health}")

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.harness.elasticsearch")
    sub = parser.add_subparsers(dest="command", required=True)
    provision = sub.add_parser("provision", help="download and unpack distributions")
    provision.add_argument("--version", action="append", dest="versions")
    provision.add_argument("--opensearch", action="append", dest="os_versions")
    start = sub.add_parser("start", help="run one in the foreground; prints its URL first")
    start.add_argument("--version", default=DEFAULT_VERSION)
    start.add_argument("--opensearch", default=None, help="an OpenSearch version instead")
    start.add_argument("--dir", default=None, help="instance directory (kept between runs)")
    args = parser.parse_args()
    if args.command == "provision":
        wanted = [(ELASTICSEARCH, v) for v in args.versions or []]
        wanted += [(OPENSEARCH, v) for v in args.os_versions or []]
        if not wanted:
            wanted = [(ELASTICSEARCH, v) for v in VERSIONS] + [(OPENSEARCH, v) for v in OS_VERSIONS]
        for engine, version in wanted:
            began = time.monotonic()
            home = ensure_distribution(version, engine)
            java = find_java(*java_range(engine, version))
            print(f"{engine} {version}: {home} ({time.monotonic() - began:.1f}s), Java {java}")
        return
    workdir = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="shipper-es-"))
    if args.opensearch:
        server = ElasticsearchServer(workdir, args.opensearch, heap="1g", engine=OPENSEARCH)
    else:
        server = ElasticsearchServer(workdir, args.version, heap="1g")

    def interrupt(*_: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    server.start()
    print(server.url, flush=True)
    try:
        while server.is_running():
            time.sleep(1)
        raise SystemExit(f"{server.engine} exited:\n{server.log_tail()}")
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


if __name__ == "__main__":
    main()
