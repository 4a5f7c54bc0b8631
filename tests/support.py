"""Test helpers: driving the real pipeline by hand over real files, and writing kubelet trees."""

from __future__ import annotations

import contextlib
import gzip
import itertools
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import orjson
import yaml

from parsers.decoder import DecoderOptions
from shipper.checkpoint import CheckpointStore
from shipper.controls import Controls
from shipper.document import DocumentEncoder
from shipper.kube.fragment import FileNameMetadata
from shipper.observe import Metrics, scrape
from shipper.pipeline import Pipeline, PipelineOptions
from shipper.sinks.base import Batch
from shipper.tail.fs import FileSystem
from shipper.tail.options import TailOptions
from tests.harness.elasticsearch import EsTestClient

CONTAINER_ID = "c0ffee" + "0" * 58


def wait_for(predicate: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> Any:
    """Poll until `predicate()` is truthy; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    delay = 0.01
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(delay)
        delay = min(delay * 1.5, 0.2)


def cri(seq: int, stream: str = "stdout", tag: str = "F", text: str | None = None) -> bytes:
    """One CRI line carrying a sequence number (nanosecond time derived from it)."""
    body = text if text is not None else f"line {seq}"
    stamp = f"2024-03-01T10:00:{seq // 1_000_000 % 60:02d}.{seq % 1_000_000:06d}000Z"
    return f"{stamp} {stream} {tag} {body}\n".encode()


class CollectSink:
    """A sink that keeps what it is sent; batches are acknowledged by the test."""

    def __init__(self, ack: Callable[[Batch], None]) -> None:
        self.ack = ack
        self.sent: list[Batch] = []

    def encoder(self, path: str, metadata: bytes, id_prefix: bytes) -> DocumentEncoder:
        return DocumentEncoder(path=path, metadata=metadata, actions=True, id_prefix=id_prefix)

    async def start(self) -> None:
        return None

    async def send(self, batch: Batch) -> None:
        self.sent.append(batch)
        self.ack(batch)

    async def drain(self, timeout: float | None = None) -> bool:
        return True

    async def close(self) -> None:
        return None

    def ready(self) -> bool:
        return True

    def fatal(self) -> BaseException | None:
        return None


def documents(batch: Batch) -> list[tuple[str, dict[str, Any]]]:
    """(_id, document) for every entry of a batch written with bulk actions."""
    out = []
    for entry in batch.entries:
        action, doc = entry.split(b"\n", 2)[:2]
        out.append((orjson.loads(action)["create"]["_id"], orjson.loads(doc)))
    return out


@dataclass
class Driver:
    """Runs the real pipeline pass by pass, with a fake clock and no inotify thread.

    Every `step` rescans the globs, reads until there is nothing left (or `max_passes`),
    and acknowledges (or holds) the resulting batches. Restarts rebuild everything from the
    checkpoint directory, as a new process would.
    """

    paths: list[str]
    checkpoint_dir: Path | None = None
    tail: dict[str, Any] = field(default_factory=dict)
    decoder: DecoderOptions = field(default_factory=DecoderOptions)
    read_bytes: int = 1 << 20
    buffer_max_bytes: int = 64 << 20
    now: float = 1000.0
    delivered: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    actions: list[dict[str, Any]] = field(default_factory=list)  # of `delivered`, in order
    held: list[Batch] = field(default_factory=list)
    pipeline: Pipeline | None = None
    fs: FileSystem = field(default_factory=FileSystem)
    controls: Controls | None = None
    metadata: Any = None  # a MetadataSource; None: file names only
    metrics: Metrics = field(default_factory=Metrics)

    def __post_init__(self) -> None:
        self.start()

    def start(self) -> None:
        store = CheckpointStore.open(self.checkpoint_dir)
        options = PipelineOptions(
            tail=TailOptions(
                paths=tuple(self.paths),
                **{
                    "watch": False,
                    "rescan_interval": 0.0,
                    "rotate_wait": 0.0,
                    "idle_poll_max": 0.0,
                    **self.tail,
                },
            ),
            decoder=self.decoder,
            read_bytes=self.read_bytes,
            buffer_max_bytes=self.buffer_max_bytes,
            batch_max_delay=0.0,
            controls=self.controls,
        )
        self.pipeline = Pipeline(
            options,
            CollectSink,
            store,
            self.metadata or FileNameMetadata("node-1"),
            self.metrics,
            clock=lambda: self.now,
            fs=self.fs,
        )
        self.pipeline.tailer.rescan(self.now)

    @property
    def tailer(self):  # type: ignore[no-untyped-def]
        assert self.pipeline is not None
        return self.pipeline.tailer

    @property
    def store(self) -> CheckpointStore:
        assert self.pipeline is not None
        return self.pipeline.store

    def step(self, ack: bool = True, max_passes: int = 10_000) -> int:
        """One round: read what is there (bounded by the buffer), deliver; return docs."""
        p = self.pipeline
        assert p is not None
        before = len(self.delivered)
        for _ in range(max_passes):
            self.now += 0.01
            read = p.poll(self.now)
            p.tick(self.now)
            while (batch := p.take_batch()).parts:
                self.delivered.extend(documents(batch))
                self.actions.extend(
                    orjson.loads(e[: e.index(b"\n")])["create"] for e in batch.entries
                )
                if ack:
                    p.acknowledge(batch)
                else:
                    self.held.append(batch)
            if read == 0 and (not p.tailer.has_ready() or p.room() <= 0):  # idle, or paused
                break
        return len(self.delivered) - before

    def ack_held(self) -> None:
        assert self.pipeline is not None
        for batch in self.held:
            self.pipeline.acknowledge(batch)
        self.held = []

    def save(self) -> None:
        assert self.pipeline is not None
        self.pipeline.store.save()

    def stop(self, clean: bool = True) -> None:
        """Clean: acknowledge, commit and save. Not clean: drop everything unsaved (kill -9)."""
        assert self.pipeline is not None
        if clean:
            self.ack_held()
            if self.checkpoint_dir is not None:
                self.save()
        self.held = []
        self.pipeline.tailer.stop()
        self.pipeline.store.close()
        self.pipeline = None

    def restart(self, clean: bool = True) -> None:
        self.stop(clean)
        self.start()

    def messages(self) -> list[str]:
        return [doc["message"] for _, doc in self.delivered]


ROTATION_NAMES = {
    "kubelet": lambda n: f"0.log.20240301-{n:06d}",  # kubelet and containerd
    "numeric": lambda n: f"0.log.{n:06d}",  # logrotate-style counters
}


class KubeletDir:
    """One container's log directory, rotated the way kubelet and containerd do it (or,
    with `naming="numeric"`, under numbered names as logrotate-style schemes do)."""

    def __init__(
        self,
        root: Path,
        namespace: str = "ns",
        pod: str = "pod",
        container: str = "app",
        container_id: str = CONTAINER_ID,
        uid: str | None = None,
        naming: str = "kubelet",
    ) -> None:
        self.rotation_name = ROTATION_NAMES[naming]
        self.directory = root / "pods" / f"{namespace}_{pod}_{uid or 'uid-' + pod}" / container
        self.directory.mkdir(parents=True, exist_ok=True)
        self.links = root / "containers"
        self.links.mkdir(parents=True, exist_ok=True)
        self.live = self.directory / "0.log"
        self.live.touch()
        self.link = self.links / f"{pod}_{namespace}_{container}-{container_id}.log"
        os.symlink(self.live, self.link)
        self.rotations = 0
        self._plain: list[Path] = []  # rotations not compressed yet, oldest first

    def write(self, data: bytes) -> None:
        with open(self.live, "ab") as fh:
            fh.write(data)

    def rotate(self, compress_older: bool = True) -> Path:
        """0.log -> 0.log.<stamp>, new empty 0.log; gzip older rotations (delete the plain)."""
        self.rotations += 1
        rotated = self.directory / self.rotation_name(self.rotations)
        os.rename(self.live, rotated)
        self.live.touch()
        self._plain.append(rotated)
        if compress_older:
            # Remembered rather than globbed: a directory of thousands of old rotations
            # (the storm keeps them all) must not slow the writer down.
            for old in self._plain[:-1]:
                gzip_file(old)
            del self._plain[:-1]
        return rotated

    def remove(self) -> None:
        """The container is gone: its link and files are deleted."""
        self.link.unlink()
        shutil.rmtree(self.directory)


def gzip_file(path: Path) -> Path:
    """Compress a rotation as the kubelet does: into `<name>.tmp`, renamed to `<name>.gz`
    once complete, then the plain file removed."""
    target = path.with_name(path.name + ".gz")
    tmp = path.with_name(path.name + ".tmp")
    with open(path, "rb") as src, gzip.open(tmp, "wb") as dst:
        shutil.copyfileobj(src, dst)
    os.rename(tmp, target)
    path.unlink()
    return target


SHIPPER = [sys.executable, "-m", "shipper"]


class ShipperProcess:
    """`shipper run` as a real process: config written to a file, logs captured, /metrics."""

    def __init__(
        self,
        tmp: Path,
        config: dict[str, Any],
        once: bool = False,
        env: dict[str, str] | None = None,
    ) -> None:
        self.tmp = tmp
        self.config = config
        self.config_path = tmp / f"shipper-{id(self)}.yaml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.log_path = tmp / f"shipper-{id(self)}.log"
        self.out_path = tmp / f"shipper-{id(self)}.out"
        self.once = once
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None
        self.peak_rss_kib = 0

    live: ClassVar[list[ShipperProcess]] = []  # killed by conftest after each test

    def start(self) -> ShipperProcess:
        ShipperProcess.live.append(self)
        args = [*SHIPPER, "run", "--config", str(self.config_path)]
        if self.once:
            args.append("--once")
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the process
        self._out = open(self.out_path, "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(args, stdout=self._out, stderr=self._log, env=self.env)
        return self

    def wait(self, timeout: float = 300) -> int:
        assert self.proc is not None
        try:
            code = self.proc.wait(timeout=timeout)
        finally:
            self._log.close()
            self._out.close()
        return code

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 120) -> int:
        assert self.proc is not None
        self.sample_rss()
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.wait(timeout)
        except subprocess.TimeoutExpired:
            # Stuck: have it print every thread's stack (SIGUSR1), then fail with that.
            self.proc.send_signal(signal.SIGUSR1)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(2)
            raise AssertionError(
                f"shipper did not exit {timeout}s after signal {sig}; its stacks and log:\n"
                + self.logs()[-6000:]
            ) from None

    def kill(self) -> int:
        return self.stop(signal.SIGKILL)

    @classmethod
    def kill_leftovers(cls) -> None:
        """Kill processes a failed test left running (they would skew later tests)."""
        for proc in cls.live:
            if proc.running():
                proc.kill()
        cls.live.clear()

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_records(self) -> list[dict[str, Any]]:
        out = []
        for line in self.logs().splitlines():
            try:
                out.append(orjson.loads(line))
            except orjson.JSONDecodeError:
                continue
        return out

    def summary(self) -> dict[str, Any]:
        """The counters of the run's last log line ("shipper stopped")."""
        for record in reversed(self.log_records()):
            if record.get("message") == "shipper stopped":
                return record
        raise AssertionError(f"no summary line in the log:\n{self.logs()[-2000:]}")

    def sample_rss(self) -> int:
        """Peak resident memory so far (VmHWM), in KiB."""
        if self.proc is None or self.proc.poll() is not None:
            return self.peak_rss_kib
        try:
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    self.peak_rss_kib = max(self.peak_rss_kib, int(line.split()[1]))
        except OSError:
            pass
        return self.peak_rss_kib

    def metrics_port(self) -> int:
        def port() -> int | None:
            for record in self.log_records():
                if record.get("message") == "monitoring endpoint listening" and not record.get(
                    "worker"
                ):  # the one endpoint (with workers: the supervisor's)
                    return int(str(record["address"]).rsplit(":", 1)[1])
            return None

        return wait_for(port, 60, "the metrics endpoint")

    def metrics(self) -> dict[str, float]:
        """Scrape /metrics: {'name{labels}': value}."""
        return scrape(f"127.0.0.1:{self.metrics_port()}")


def shipper_config(
    paths: list[str], checkpoint: Path, es_url: str | None = None, **sections: dict[str, Any]
) -> dict[str, Any]:
    """A config for tests: no Kubernetes API, metrics on a free port, fast retries."""
    config: dict[str, Any] = {
        "inputs": {"paths": paths, "rescan_interval": "1s"},
        "checkpoint": {"path": str(checkpoint), "interval": "200ms"},
        "kubernetes": {"enabled": False},
        "metrics": {"listen": "127.0.0.1:0"},
        "logging": {"level": os.environ.get("SHIPPER_TEST_LOG_LEVEL", "info"), "format": "json"},
    }
    if es_url is not None:
        config["elasticsearch"] = {
            "hosts": [es_url],
            "retry": {"initial_backoff": "100ms", "max_backoff": "2s"},
            "bulk": {"max_delay": "200ms"},
        }
    for name, values in sections.items():
        config.setdefault(name, {}).update(values)
    return config


def es_config(tmp: Path, url: str, ds: str, **sections: dict[str, Any]) -> dict[str, Any]:
    """`shipper_config` for the files of KubeletDirs under `tmp`, into data stream `ds`."""
    config = shipper_config([str(tmp / "containers/*.log")], tmp / "cp", url, **sections)
    config["elasticsearch"]["data_stream"] = ds
    return config


def pod_object(
    namespace: str,
    name: str,
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
    owner: tuple[str, str] | None = None,
) -> dict[str, Any]:
    """A Pod as the API returns it, for the container `app` of a KubeletDir(namespace, name)."""
    meta: dict[str, Any] = {
        "namespace": namespace,
        "name": name,
        "uid": f"uid-{name}",
        "labels": labels or {},
        "annotations": annotations or {},
    }
    if owner:
        meta["ownerReferences"] = [{"kind": owner[0], "name": owner[1], "controller": True}]
    return {
        "metadata": meta,
        "spec": {"nodeName": "node-1", "containers": [{"name": "app", "image": "img:1"}]},
        "status": {
            "containerStatuses": [
                {"name": "app", "image": "img:1", "containerID": f"containerd://{CONTAINER_ID}"}
            ]
        },
    }


def write_pods_file(path: Path, pods: list[dict[str, Any]]) -> str:
    """A `kubectl get pods -A -o json` dump of `pods` (kubernetes.pods_file)."""
    path.write_bytes(orjson.dumps({"apiVersion": "v1", "kind": "List", "items": pods}))
    return str(path)


# ---- Elasticsearch checks ---------------------------------------------------------------

_names = itertools.count()


def stream_name() -> str:
    """A fresh data stream name per test, so tests sharing one Elasticsearch never mix."""
    return f"logs-t{uuid.uuid4().hex[:8]}{next(_names)}-default"


def write_lines(k: KubeletDir, start: int, count: int, text: str = "seq") -> None:
    k.write(b"".join(cri(i, text=f"{text} {i}") for i in range(start, start + count)))


def seqs(client: EsTestClient, index: str, field: str = "message") -> list[int]:
    """Every document's sequence number (the last word of `field`), duplicates included.

    Pages through a point in time sorted by `_shard_doc`, so documents with equal file and
    offset (rotations, copy-truncate) are neither skipped nor seen twice.
    """
    client.refresh(index)
    status, pit = client.request("POST", f"/{index}/_pit?keep_alive=2m")
    if status in (400, 404, 405):  # OpenSearch: its PIT API differs; a scroll does the same
        return _scroll_seqs(client, index, field)
    assert status == 200, pit
    pit_id = pit["id"]
    out: list[int] = []
    after = None
    try:
        while True:
            body: dict[str, Any] = {
                "size": 10_000,
                "pit": {"id": pit_id, "keep_alive": "2m"},
                "sort": [{"_shard_doc": "asc"}],
                "_source": [field],
                "track_total_hits": False,
            }
            if after is not None:
                body["search_after"] = after
            status, result = client.request("POST", "/_search", body)
            assert status == 200, result
            hits = result["hits"]["hits"]
            if not hits:
                return out
            pit_id = result.get("pit_id", pit_id)
            out += [_value(hit["_source"], field) for hit in hits]
            after = hits[-1]["sort"]
    finally:
        client.request("DELETE", "/_pit", {"id": pit_id})


def _value(source: dict[str, Any], field: str) -> int:
    value: Any = source
    for part in field.split("."):
        value = value[part]
    return int(str(value).split()[-1])


def _scroll_seqs(client: EsTestClient, index: str, field: str) -> list[int]:
    body = {"size": 10_000, "sort": ["_doc"], "_source": [field]}
    status, result = client.request("POST", f"/{index}/_search?scroll=2m", body)
    assert status == 200, result
    out: list[int] = []
    scroll_id = result.get("_scroll_id")
    try:
        while result["hits"]["hits"]:
            out += [_value(hit["_source"], field) for hit in result["hits"]["hits"]]
            status, result = client.request(
                "POST", "/_search/scroll", {"scroll": "2m", "scroll_id": scroll_id}
            )
            assert status == 200, result
            scroll_id = result.get("_scroll_id", scroll_id)
        return out
    finally:
        client.request("DELETE", "/_search/scroll", {"scroll_id": scroll_id})


def assert_exactly_once(got: list[int], expected: list[int] | range) -> None:
    """Every expected sequence number exactly once; the differences named if not."""
    want = sorted(expected)
    if sorted(got) == want:
        return
    from collections import Counter

    seen = Counter(got)
    missing = [s for s in want if s not in seen]
    extra = sorted(s for s, n in seen.items() if n > 1)
    raise AssertionError(
        f"{len(got)} documents for {len(want)} lines: {len(missing)} missing "
        f"(first {missing[:10]}), {len(extra)} duplicated (first {extra[:10]})"
    )


def wait_for_all(
    client: EsTestClient, index: str, expected: list[int] | range, timeout: float
) -> None:
    """Wait until `index` holds as many documents as `expected`; if it never does, fail
    naming the sequence numbers missing or doubled (not only that time ran out)."""
    try:
        wait_for(lambda: client.count(index) >= len(expected), timeout, "every line indexed")
    except AssertionError:
        assert_exactly_once(seqs(client, index), expected)
        raise
